"""Negative-phase samplers for the RBM prior, behind one small interface.

`sample(prior, n)` returns n binary states (n, num_visible + num_hidden) drawn (approximately)
from p(z) = exp(-E(z)) / Z. The expectation of dE/dtheta under these samples is the gradient of
log Z, so a sampler that is not at temperature 1 (an optimiser) biases training; PCD is the
default for that reason. Samplers keep their random state in a torch.Generator on the prior's
device and expose state_dict / load_state_dict so a checkpoint resumes them exactly.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from qvae.priors.rbm import RBM


@runtime_checkable
class Sampler(Protocol):
    def sample(self, prior: RBM, n: int) -> Tensor: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def bernoulli(logits: Tensor, generator: torch.Generator | None) -> Tensor:
    """Binary sample with P(1) = sigmoid(logits)."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    return (u < torch.sigmoid(logits)).to(logits.dtype)


def random_visible(prior: RBM, n: int, generator: torch.Generator | None) -> Tensor:
    """n uniformly random visible states on the prior's device and dtype (a chain's start)."""
    w = prior.weight
    return torch.randint(0, 2, (n, prior.num_visible), generator=generator, device=w.device).to(w.dtype)


@torch.no_grad()
def gibbs_sweeps(prior: RBM, v: Tensor, sweeps: int, generator: torch.Generator | None,
                 beta: float = 1.0) -> tuple[Tensor, Tensor]:
    """`sweeps` block-Gibbs sweeps at inverse temperature beta; returns (v, h ~ p(h|v))."""
    for _ in range(sweeps):
        h = bernoulli(prior.hidden_logits(v, beta), generator)
        v = bernoulli(prior.visible_logits(h, beta), generator)
    h = bernoulli(prior.hidden_logits(v, beta), generator)
    return v, h


class GeneratorState:
    """Owns a seeded torch.Generator that follows the prior to its device."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.generator: torch.Generator | None = None

    def generator_for(self, device: torch.device) -> torch.Generator:
        if self.generator is None or self.generator.device != device:
            state = None if self.generator is None else self.generator.get_state()
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(self.seed)
            if state is not None and device.type == "cpu":
                self.generator.set_state(state)
        return self.generator

    def state(self) -> dict[str, Any]:
        if self.generator is None:
            return {"seed": self.seed}
        return {"seed": self.seed, "device": str(self.generator.device), "rng": self.generator.get_state()}

    def load(self, state: dict[str, Any]) -> None:
        """Restore `state`; a generator already on the saved device is set in place (a captured CUDA
        graph keeps reading the same generator)."""
        self.seed = state["seed"]
        if "rng" not in state:
            self.generator = None
        elif self.generator is not None and self.generator.device == torch.device(state["device"]):
            self.generator.set_state(state["rng"])
        else:
            self.generator = torch.Generator(device=state["device"])
            self.generator.set_state(state["rng"])


def restore_in_place(current: Tensor | None, saved: Tensor | None) -> Tensor | None:
    """`saved` copied into `current` when the shapes and dtypes agree (the tensor a captured CUDA graph
    reads stays the same object), else a copy of `saved`."""
    if saved is None:
        return None
    if current is not None and current.shape == saved.shape and current.dtype == saved.dtype:
        return current.copy_(saved)
    return saved.detach().clone()


class PCDSampler:
    """Persistent contrastive divergence: `num_chains` block-Gibbs chains kept between calls.

    Each call advances every chain by `sweeps` sweeps under the current parameters and returns
    the chains' states. Asking for a different n re-initialises the chains uniformly at random.
    """

    def __init__(self, num_chains: int = 256, sweeps: int = 4, seed: int = 0) -> None:
        if num_chains < 1 or sweeps < 1:
            raise ValueError(f"num_chains and sweeps must be >= 1, got {num_chains}, {sweeps}")
        self.num_chains = num_chains
        self.sweeps = sweeps
        self.chains: Tensor | None = None
        self._rng = GeneratorState(seed)

    @torch.no_grad()
    def sample(self, prior: RBM, n: int | None = None) -> Tensor:
        n = self.num_chains if n is None else n
        gen = self._rng.generator_for(prior.weight.device)
        if self.chains is None or self.chains.shape != (n, prior.num_visible):
            self.num_chains = n
            self.chains = random_visible(prior, n, gen)
        self.chains = self.chains.to(prior.weight)
        v, h = gibbs_sweeps(prior, self.chains, self.sweeps, gen)
        self.chains.copy_(v)  # in place: the chains stay one tensor (what a captured training step reads)
        return torch.cat([v, h], dim=1)

    def graph_inputs(self) -> tuple[Any, ...] | None:
        """The state a captured training step reads and updates in place (train_step.py)."""
        return None if self.chains is None else (self.chains, self._rng.generator)

    def state_dict(self) -> dict[str, Any]:
        return {"num_chains": self.num_chains, "sweeps": self.sweeps,
                "chains": None if self.chains is None else self.chains.detach().to("cpu", copy=True),
                "rng": self._rng.state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_chains, self.sweeps = state["num_chains"], state["sweeps"]
        self.chains = restore_in_place(self.chains, state["chains"])
        self._rng.load(state["rng"])


def geometric_temperatures(initial: float, final: float, steps: int) -> list[float]:
    """`steps` temperatures from `initial` to `final`, evenly spaced in log T."""
    if steps == 1:
        return [final]
    ratio = (final / initial) ** (1.0 / (steps - 1))
    return [initial * ratio**k for k in range(steps)]


def kaiwu_temperatures(initial: float = 100.0, alpha: float = 0.95, cutoff: float = 0.001,
                       sweeps_per_temperature: int = 10) -> list[float]:
    """The schedule of kaiwu's SimulatedAnnealingOptimizer: T <- alpha T until T < cutoff."""
    count = math.ceil(math.log(cutoff / initial) / math.log(alpha))
    return [initial * alpha**k for k in range(count) for _ in range(sweeps_per_temperature)]


class AnnealingSampler:
    """Simulated annealing with block-Gibbs moves, every chain independent and fresh.

    With the final temperature 1 (the default) it is an annealed sampler of p(z); annealing
    towards T -> 0 turns it into an optimiser like kaiwu's SimulatedAnnealingOptimizer, whose
    low-energy states bias the log Z gradient (kept to reproduce that behaviour).
    """

    def __init__(self, num_chains: int = 256, sweeps: int = 100, initial_temperature: float = 100.0,
                 final_temperature: float = 1.0, seed: int = 0,
                 temperatures: list[float] | None = None) -> None:
        if num_chains < 1 or sweeps < 1:
            raise ValueError(f"num_chains and sweeps must be >= 1, got {num_chains}, {sweeps}")
        if not 0 < final_temperature <= initial_temperature:
            raise ValueError("temperatures must satisfy 0 < final_temperature <= initial_temperature")
        self.num_chains = num_chains
        self.temperatures = temperatures or geometric_temperatures(initial_temperature, final_temperature, sweeps)
        self._rng = GeneratorState(seed)

    @torch.no_grad()
    def sample(self, prior: RBM, n: int | None = None) -> Tensor:
        n = self.num_chains if n is None else n
        gen = self._rng.generator_for(prior.weight.device)
        v = random_visible(prior, n, gen)
        h = bernoulli(prior.hidden_logits(v, 1.0 / self.temperatures[0]), gen)
        for temperature in self.temperatures:
            beta = 1.0 / temperature
            v = bernoulli(prior.visible_logits(h, beta), gen)
            h = bernoulli(prior.hidden_logits(v, beta), gen)
        return torch.cat([v, h], dim=1)

    def state_dict(self) -> dict[str, Any]:
        return {"temperatures": list(self.temperatures), "num_chains": self.num_chains, "rng": self._rng.state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.temperatures, self.num_chains = list(state["temperatures"]), state["num_chains"]
        self._rng.load(state["rng"])
