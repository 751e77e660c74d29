"""Will this configuration fit? A conservative estimate of a run's peak memory, checked up front.

A model too large for the machine is otherwise accepted: training starts, the machine swaps, and
minutes later the kernel kills the process (exit 137) with its MLflow run left RUNNING. Before
anything runs, `check_memory` adds up what a run holds at its peak and refuses, naming the
settings that drive it, when that exceeds the memory available on the device.

The parts (float32 everywhere):
- the process itself: Python with torch and its libraries, and MNIST as read (`RUNTIME_BYTES`);
- parameters with their gradients and Adam's two moments (16 bytes per parameter);
- the data splits on the device;
- a training and an evaluation batch's activations (each layer's output kept for backward);
- the sampler's persistent chains, times the Trotter slices of a path-integral prior, and AIS;
- the final scores: the Inception network and its batch (FID, growing with `fid_batch_size`), the
  importance samples (NLL).
`tests/test_memory.py` checks the estimate against measured peaks (it must not be below them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from qvae.config import Config, ConfigError, ScoreSettings

FLOAT = 4
GIB = 2**30
RUNTIME_BYTES = int(1.25 * GIB)  # measured peak RSS of a tiny CPU run: about 1.0 GiB (docs/results.md)
MLFLOW_BYTES = int(0.5 * GIB)  # mlflow, pandas and sklearn imported by the main job
# FID: the Inception network, then per image of a batch its 299 x 299 input and the activations alive
# at once. Measured (docs/results.md, "Memory"): 14.6 MiB per image on this project's AMD EPYC (AVX2)
# and about 24 MiB on CI's machine, where a run with a 100-image batch peaked 0.85 GiB higher; the
# figure below covers both with a margin for other CPUs' convolution kernels and for the allocator.
INCEPTION_BYTES = int(0.25 * GIB)
INCEPTION_BYTES_PER_IMAGE = 32 * 2**20
MNIST_IMAGES = 70_000


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes at the peak, by part, on the training device and on the host."""

    parts: dict[str, int]
    device_parts: tuple[str, ...]  # the parts that live on the training device

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def on_device(self) -> int:
        return sum(v for k, v in self.parts.items() if k in self.device_parts)

    def describe(self) -> str:
        shown = sorted(self.parts.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{name} {value / GIB:.2f} GiB" for name, value in shown)


def parameter_count(config: Config) -> int:
    """Weights and biases of the encoder, decoder and prior, from the layer sizes."""
    c = config
    encoder_out = 2 * c.latent_dim if c.prior == "gaussian" else c.latent_dim
    between = [(c.hidden_dim, c.hidden_dim)] * (c.hidden_layers - 1)
    layers = [(c.input_dim, c.hidden_dim), *between, (c.hidden_dim, encoder_out),
              (c.latent_dim, c.hidden_dim), *between, (c.hidden_dim, c.input_dim)]
    mlp = sum(fan_in * fan_out + fan_out for fan_in, fan_out in layers)
    prior = c.num_visible * c.num_hidden + c.latent_dim if c.prior != "gaussian" else 0
    return mlp + prior


def fid_bytes(batch_size: int) -> int:
    """The Inception network with one batch of `batch_size` images going through it."""
    return INCEPTION_BYTES + batch_size * INCEPTION_BYTES_PER_IMAGE


def estimate_peak(config: Config, scores: ScoreSettings | None = None, *, tracked: bool = False) -> MemoryEstimate:
    """A run of `config` (training, and the final `scores` if given; `tracked`: under MLflow)."""
    c = config
    slices = c.trotter_slices if c.sampler == "pimc" else 1
    # both files are read whole (the splits are views of them), plus the validation images in the
    # model's input form, and a static model's binarised training images
    n_train = c.train_size or 60_000 - c.validation_size
    images = 70_000 + c.validation_size + (n_train if c.binarize == "static" else 0)
    # a sample's activations through the model
    width = 2 * c.input_dim + 2 * c.hidden_layers * c.hidden_dim + 4 * c.latent_dim
    parts = {
        "runtime": RUNTIME_BYTES + (MLFLOW_BYTES if tracked else 0),
        "parameters and Adam state": 4 * FLOAT * parameter_count(c),
        "data on the device": images * (c.input_dim + 2) * FLOAT,
        "batch activations": 2 * 2 * c.batch_size * width * FLOAT,  # a training and an evaluation batch
        "sampler chains": 4 * FLOAT * c.latent_dim * slices * (c.sampler_chains + c.log_z_chains),
    }
    if scores is not None and scores.fid_samples:
        parts["FID"] = fid_bytes(scores.fid_batch_size) + 2 * scores.fid_samples * c.input_dim * FLOAT
    if scores is not None and scores.nll_samples:
        parts["NLL importance samples"] = 4 * FLOAT * min(scores.nll_samples * 100, 10**6) * width
    # the final scores run where the model is: Inception and the importance samples too
    device = ("parameters and Adam state", "data on the device", "batch activations", "sampler chains", "FID",
              "NLL importance samples")
    return MemoryEstimate(parts, device)


def available_host_bytes() -> int | None:
    """MemAvailable (Linux), else the free physical pages; None when the system does not say."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config: Config, device_type: str, scores: ScoreSettings | None = None, *,
                 tracked: bool = False, available: int | None = None) -> MemoryEstimate:
    """Refuse (ConfigError) a run whose estimated peak exceeds the free memory of its device."""
    estimate = estimate_peak(config, scores, tracked=tracked)
    if device_type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        need, where = estimate.on_device, "GPU memory free"
    else:
        free = available_host_bytes() if available is None else available
        need, where = estimate.total, "memory available"
    if free is not None and need > free:
        fid_batch = f", fid_batch_size {scores.fid_batch_size}" if scores is not None and scores.fid_samples else ""
        raise ConfigError(
            f"this configuration needs about {need / GIB:.1f} GiB at its peak but the machine has "
            f"{free / GIB:.1f} GiB of {where} ({estimate.describe()}); the sizes that drive it: hidden_dim "
            f"{config.hidden_dim}, latent_dim {config.latent_dim}, batch_size {config.batch_size}, sampler_chains "
            f"{config.sampler_chains} x trotter_slices, train_size/test_size{fid_batch}: lower them")
    return estimate
