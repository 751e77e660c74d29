"""Latent probe: how linearly-ish separable the digits are in the encoder's features.

As the kaiwu QVAE example does: an MLP classifier trained on `model.latent_features` of the
training images (Adam, lr 1e-3, batch 64, 100 epochs), scored by its accuracy on the test
images -> `latent_accuracy` (the example's own figure is in docs/results.md). The encoder is
frozen; only the probe learns. Deterministic given `seed` on one device. On a CPU the probe runs
on one thread: its batches (64 x 256) are too small for more threads to pay, and on a shared
machine they only add contention (docs/results.md has the measurement). On CUDA each step is
replayed as a captured CUDA graph (the same arithmetic, one launch per step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from qvae.train_step import graphs_available, on_side_stream

DEFAULT_EPOCHS, DEFAULT_LR, DEFAULT_BATCH_SIZE, DEFAULT_HIDDEN = 100, 1e-3, 64, 256
FEATURE_BATCH = 1024


@dataclass(frozen=True)
class ProbeResult:
    accuracy: float  # fraction of test images classified correctly
    train_accuracy: float
    epochs: int
    feature_dim: int


@torch.no_grad()
def latent_features(model: Any, x: Tensor) -> Tensor:
    """`model.latent_features` of `x`, in batches on the model's device."""
    device = model.train_bias.device
    was_training = model.training
    model.eval()
    out = torch.cat([model.latent_features(x[i:i + FEATURE_BATCH].to(device)) for i in range(0, len(x), FEATURE_BATCH)])
    model.train(was_training)
    return out


def train_probe(train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor, *,
                epochs: int = DEFAULT_EPOCHS, lr: float = DEFAULT_LR, batch_size: int = DEFAULT_BATCH_SIZE,
                hidden: int = DEFAULT_HIDDEN, seed: int = 0, progress: bool = False,
                cuda_graphs: bool = True) -> ProbeResult:
    """Fit an MLP (features -> hidden ReLU -> classes) on the training features; test accuracy.
    On CUDA (unless `cuda_graphs` is false) each full-size step is a replayed CUDA graph."""
    if epochs < 1 or batch_size < 1 or hidden < 1 or not lr > 0:
        raise ValueError(f"epochs, batch_size and hidden must be >= 1 and lr > 0, got {epochs}, {batch_size}, "
                         f"{hidden}, {lr}")
    device = train_features.device
    classes = int(max(train_labels.max(), test_labels.max()).item()) + 1
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # nn.Linear's initialisation draws from the global generator
        torch.manual_seed(seed)
        probe = nn.Sequential(nn.Linear(train_features.shape[1], hidden), nn.ReLU(),
                              nn.Linear(hidden, classes)).to(device)
    graphed = graphs_available(device, cuda_graphs) and len(train_features) >= batch_size
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr, capturable=device.type == "cuda")  # same on both paths
    x, y = train_features.float(), train_labels.long().to(device)
    threads = torch.get_num_threads()
    if device.type == "cpu":  # small batches: extra threads only add contention (see the module docstring)
        torch.set_num_threads(1)
    try:
        _fit(probe, optimizer, x, y, epochs, batch_size, gen, progress, graphed)
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        train_acc = (probe(x).argmax(1) == y).float().mean().item()
        test_acc = (probe(test_features.float()).argmax(1) == test_labels.long().to(device)).float().mean().item()
    return ProbeResult(accuracy=test_acc, train_accuracy=train_acc, epochs=epochs, feature_dim=x.shape[1])


def _fit(probe: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, epochs: int, batch_size: int,
         gen: torch.Generator, progress: bool, graphed: bool = False) -> None:
    """Adam on shuffled batches (one CPU-drawn permutation per epoch, so every device sees the same
    order). On CUDA the full-size step is one captured graph reading its batch's indices from a fixed
    buffer: ~100 000 steps of a tiny MLP are otherwise bound by kernel launches."""
    step = _GraphedStep(probe, optimizer, x, y, batch_size) if graphed else None
    for _ in tqdm(range(epochs), desc="latent probe", disable=not progress, leave=False):
        order = torch.randperm(len(x), generator=gen).to(x.device)
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            if step is not None and len(idx) == batch_size:
                step(idx)
                continue
            _eager_step(probe, optimizer, x[idx], y[idx])


def _eager_step(probe: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor) -> None:
    loss = F.cross_entropy(probe(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


class _GraphedStep:
    """The probe's training step as a CUDA graph: eager warm-up steps (real ones) on a side stream, then
    capture once and replay with the batch's indices copied into the captured index buffer."""

    WARMUP = 3

    def __init__(self, probe: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor,
                 batch_size: int) -> None:
        self.probe, self.optimizer, self.x, self.y = probe, optimizer, x, y
        self.idx = torch.zeros(batch_size, dtype=torch.long, device=x.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warm = 0

    def __call__(self, idx: Tensor) -> None:
        if self.graph is None and self.warm < self.WARMUP:
            on_side_stream(self.x.device, lambda: _eager_step(self.probe, self.optimizer, self.x[idx], self.y[idx]))
            self.warm += 1
            return
        if self.graph is None:
            self.graph = torch.cuda.CUDAGraph()
            self.optimizer.zero_grad(set_to_none=True)
            with torch.cuda.graph(self.graph):
                loss = F.cross_entropy(self.probe(self.x[self.idx]), self.y[self.idx])
                loss.backward()
                self.optimizer.step()
        self.idx.copy_(idx)
        self.graph.replay()


def latent_probe(model: Any, train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *,
                 epochs: int = DEFAULT_EPOCHS, lr: float = DEFAULT_LR, batch_size: int = DEFAULT_BATCH_SIZE,
                 hidden: int = DEFAULT_HIDDEN, seed: int = 0, progress: bool = False) -> ProbeResult:
    """The probe on `model`'s latent features of MNIST (train split in, test accuracy out)."""
    return train_probe(latent_features(model, train_x), train_y, latent_features(model, test_x), test_y,
                       epochs=epochs, lr=lr, batch_size=batch_size, hidden=hidden, seed=seed, progress=progress)
