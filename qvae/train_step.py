"""One training step (encoder, smoothing, decoder, negative phase, Adam), replayed as a CUDA graph.

A step of the default model is ~150 small kernels whose arithmetic takes ~40 us on an H100;
launched one by one from Python the GPU mostly waits for the host. On CUDA the step is therefore
captured once (after a few eager warm-up steps, which are real training steps) and replayed:
one launch per step. The captured step reads its batch from a fixed input buffer, keeps the
epoch's sums of the named terms and the divergence flag on the device (no host sync inside a
step), and updates the sampler's persistent chains and every random stream in place, so a
replayed step is the same computation as the eager one and the generators' states (which
checkpoints save) advance the same way.

Everything else runs the same step eagerly: CPUs and MPS (a graph would not help there), the
last, smaller batch of an epoch, and samplers whose state is not fixed in place (`graph_inputs`
returns None: SA, kaiwu, annealed PIMC). A capture that fails stops the run with its reason and the
cure (cuda_graphs=false): the generators it registered cannot be used eagerly afterwards.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from torch import Tensor

from qvae.data.mnist import binarize_batch

log = logging.getLogger(__name__)
DIVERGED_LOSS = 1e8  # nats per image; MNIST losses are ~1e2 (a random decoder ~5e2): beyond it the run diverged
WARMUP_STEPS = 3  # eager steps on a side stream before capture (lazy initialisation, Adam's state)


def graphs_available(device: torch.device, enabled: bool = True) -> bool:
    """Whether steps on `device` are captured: CUDA only, and only when `enabled`."""
    return enabled and device.type == "cuda"


def on_side_stream(device: torch.device, step: Callable[[], Any]) -> Any:
    """`step()` eagerly on a side stream ordered with the current one: the warm-up a CUDA graph capture
    needs before it (lazy initialisation, the optimiser's state); the training step and the probe use it."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        result = step()
    torch.cuda.current_stream(device).wait_stream(side)
    return result


class TrainStep:
    """Runs training steps on one device and keeps the epoch's batch-weighted term sums there.

    `step(x)` trains on batch `x` (the model's input form; dynamic binarisation happens inside)
    and returns nothing: the terms stay on the device. `start_epoch()` clears the sums,
    `epoch_terms(n)` reads them once per epoch, `healthy()` is the on-device flag "every loss so
    far finite and below DIVERGED_LOSS" (the training loop reads it every few steps: with the
    read-out, its only host syncs)."""

    def __init__(self, model: Any, optimizer: torch.optim.Optimizer, sampler: Any, noise_rng: torch.Generator,
                 *, dynamic: bool, batch_size: int, use_graph: bool) -> None:
        self.model, self.optimizer, self.sampler, self.noise_rng = model, optimizer, sampler, noise_rng
        self.dynamic, self.batch_size = dynamic, batch_size
        self.device = model.train_bias.device
        self.use_graph = graphs_available(self.device, use_graph)
        self.names: list[str] | None = None
        self.sums: Tensor | None = None
        self.flag = torch.ones((), dtype=torch.bool, device=self.device)
        self.last: dict[str, Tensor] = {}  # the last step's terms (read only in error messages)
        self._graph_terms: dict[str, Tensor] = {}  # the captured step's outputs, rewritten by each replay
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_inputs: tuple[int, ...] | None = None  # ids of the sampler state the graph reads
        self._static_x: Tensor | None = None
        self._eager_full_steps = 0

    # ------------------------------------------------------------ per epoch
    def start_epoch(self) -> None:
        if self.sums is not None:
            self.sums.zero_()
        self.flag.fill_(True)

    def healthy(self) -> Tensor:
        return self.flag

    def epoch_terms(self, count: int) -> dict[str, float]:
        """The epoch's average of every term over `count` images (one device-to-host copy)."""
        if self.sums is None or self.names is None:
            return {}
        return dict(zip(self.names, (self.sums / count).tolist()))

    # ------------------------------------------------------------ one step
    def step(self, x: Tensor) -> None:
        if not self._graphable(x):
            self._eager(x)
            return
        if self._graph is None or self._graph_inputs != self._sampler_ids():
            if self._eager_full_steps < WARMUP_STEPS:  # real training steps
                on_side_stream(self.device, lambda: self._eager(x))
                return
            self._capture()
        assert self._static_x is not None and self._graph is not None
        self._static_x.copy_(x)
        self._graph.replay()
        self.last = self._graph_terms

    def _graphable(self, x: Tensor) -> bool:
        return self.use_graph and len(x) == self.batch_size and self._sampler_ids() is not None

    def _sampler_ids(self) -> tuple[int, ...] | None:
        """Identities of what a captured step reads besides the batch: the sampler's persistent state
        and generator. A sampler without `graph_inputs` (or returning None) is never captured; when the
        objects change (e.g. a sampler reloaded on another device), the step is captured again."""
        if self.sampler is None:
            return ()
        inputs = getattr(self.sampler, "graph_inputs", lambda: None)()
        return None if inputs is None else tuple(id(obj) for obj in inputs)

    def _terms(self, x: Tensor) -> dict[str, Tensor]:
        """Forward, backward and Adam on `x`; accumulates the terms into the on-device sums."""
        if self.dynamic:
            x = binarize_batch(x, self.noise_rng)
        terms = self.model.training_step(x, self.sampler, self.noise_rng)
        terms["loss"].backward()
        self.optimizer.step()
        if self.names is None:
            self.names = list(terms)
        values = torch.stack([terms[name].detach() for name in self.names])
        if self.sums is None:
            self.sums = torch.zeros_like(values)
        self.sums.add_(values * len(x))
        self.flag.logical_and_(values[self.names.index("loss")].abs() < DIVERGED_LOSS)  # NaN compares False
        # detached: a kept loss would keep its autograd graph, and with it the parameters' gradient-accumulation
        # nodes of this step's stream, alive into the capture (which then fails)
        return {name: value.detach() for name, value in terms.items()}

    def _eager(self, x: Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.last = self._terms(x)
        if len(x) == self.batch_size:
            self._eager_full_steps += 1

    def _capture(self) -> None:
        """Record one step into a CUDA graph (an error naming the cure, cuda_graphs=false, when it cannot be)."""
        generators = [self.noise_rng] + ([g for g in self.sampler.graph_inputs() if isinstance(g, torch.Generator)]
                                         if self.sampler is not None else [])
        graph = torch.cuda.CUDAGraph()
        pool = self._graph.pool() if self._graph is not None else None
        try:
            for generator in generators:
                graph.register_generator_state(generator)
            self._static_x = torch.empty((self.batch_size, self.model.config.input_dim), device=self.device,
                                         dtype=self.model.train_bias.dtype)
            self.optimizer.zero_grad(set_to_none=True)  # the captured backward allocates the gradients
            with torch.cuda.graph(graph, pool=pool):
                captured = self._terms(self._static_x)
        except RuntimeError as err:  # e.g. an op that syncs with the host; the registered generators stay unusable
            raise RuntimeError(f"the training step could not be captured as a CUDA graph ({str(err).splitlines()[0]}); "
                               f"run with cuda_graphs=false (--cuda-graphs false) to train with eager steps") from err
        self._graph, self._graph_inputs, self._graph_terms = graph, self._sampler_ids(), captured
