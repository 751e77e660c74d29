"""An exponential moving average of a model's weights (Polyak averaging), the weights a run reports.

Adam at a large learning rate, and the persistent-chain gradient of the Boltzmann prior, leave the
weights jittering around where the loss settles; their running average sits nearer the middle. With
`weight_average = d > 0` every training step moves the average a fraction 1 - d_t of the way to the
current weights, d_t = min(d, (1 + t) / (10 + t)) after t updates, so the first steps are not
dominated by the random initial weights. Training itself never reads the average: validation, the
best checkpoint, the final scores and generation do (`swapped_in`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn


def decay_at(decay: float, updates: int) -> float:
    """The decay of update number `updates` (1, 2, ...): the declared one, smaller while few updates were made."""
    return min(decay, (1 + updates) / (10 + updates))


class WeightAverage:
    """The running average of `model`'s parameters (buffers are not averaged: they are no weights)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"weight_average decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.names = [name for name, _ in model.named_parameters()]
        self.params = [p for _, p in model.named_parameters()]
        self.average = [p.detach().clone() for p in self.params]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the current weights (after each optimiser step)."""
        self.updates += 1
        weight = 1.0 - decay_at(self.decay, self.updates)
        for average, param in zip(self.average, self.params):
            average.lerp_(param, weight)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block and its own ones again after it (exactly)."""
        with torch.no_grad():
            own = [p.detach().clone() for p in self.params]
            for param, average in zip(self.params, self.average):
                param.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, saved in zip(self.params, own):
                    param.copy_(saved)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "average": dict(zip(self.names, self.average))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = sorted(set(self.names) - set(state["average"]))
        if missing:
            raise ValueError(f"the saved weight average lacks {', '.join(missing)}")
        with torch.no_grad():
            for mine, name in zip(self.average, self.names):
                mine.copy_(state["average"][name])
        self.updates = int(state["updates"])
