"""How much of the device's arithmetic an epoch used (nanoGPT's `mfu`, for this model).

`flops_utilisation` = the model's FLOPs per epoch / (epoch seconds x the device's peak FLOP/s). The
FLOPs are counted once from the layer sizes, matrix products only (everything else is a rounding
error at these widths): 2 per multiply-add; a training image costs 3 forward passes (forward,
and twice that for backward; the importance-weighted bound decodes iw_samples proposals); each
negative-phase sweep is two (chains x slices) x nv x nh products; the validation pass is one
forward per image; log Z's AIS is one sweep per chain per inverse temperature. A figure near 1
means compute-bound; a small one, a device waiting on kernel launches or the host.

Peaks assumed (FP32, the precision these runs use: PyTorch keeps TF32 off for matmuls by default):
NVIDIA cards from their datasheets (`GPU_FP32_PEAK`, dense, boost clock); CPUs as threads x clock x
FP32 FLOPs per cycle per core (64 with AVX-512: two FMA units of 16 lanes; 32 with AVX2 + FMA; 8
otherwise). `QVAE_PEAK_FLOPS` (FLOP/s) overrides either.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from qvae.gamma import largest

PEAK_ENV = "QVAE_PEAK_FLOPS"
# FP32 (non-tensor-core) peak FLOP/s, matched against torch.cuda.get_device_name() in this order
GPU_FP32_PEAK: tuple[tuple[str, float], ...] = (
    ("H200", 66.9e12), ("H100 PCIe", 51.2e12), ("H100 NVL", 60.0e12), ("H100", 66.9e12), ("GH200", 66.9e12),
    ("B200", 80.0e12), ("A100", 19.5e12), ("A10", 31.2e12), ("L40S", 91.6e12), ("L4", 30.3e12),
    ("RTX 4090", 82.6e12), ("V100", 15.7e12), ("T4", 8.1e12),
)


def linear_macs(model: nn.Module) -> int:
    """Multiply-adds of one image through every linear layer of the encoder and decoder."""
    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))


def epoch_flops(model: Any, train_images: int, val_images: int) -> float:
    """FLOPs of one epoch of `train`: training steps, negative phase, validation pass and log Z."""
    c = model.config
    macs = linear_macs(model)
    proposals = max(1, c.iw_samples)  # the importance-weighted bound decodes k proposals per image
    train_macs = macs + (proposals - 1) * linear_macs(model.decoder)
    flops = 6.0 * train_macs * train_images + 2.0 * macs * val_images
    if c.prior == "gaussian":
        return flops
    slices = c.trotter_slices if c.sampler == "pimc" and largest(c.gamma) > 0 else 1
    pair = 2.0 * c.num_visible * c.num_hidden  # one (chain x slice) product v W h
    steps = -(-train_images // c.batch_size)
    sweeps = c.sampler_sweeps + 1 if c.sampler in ("pcd", "pimc") else c.sampler_sweeps
    flops += steps * 2 * sweeps * c.sampler_chains * slices * pair  # two products per sweep
    flops += 3.0 * pair * train_images  # E_q[E(z)] forward and backward
    if c.iw_samples:  # the relaxed prior's mean field (two products per iteration) and its energy, per proposal
        flops += (2 * c.mean_field_iterations + 1 + 3) * pair * proposals * train_images
    flops += c.log_z_betas * c.log_z_chains * slices * 3 * pair  # AIS: a sweep and an energy per beta
    return flops


def cpu_peak_flops(threads: int | None = None) -> float:
    """threads x clock x FP32 FLOPs per cycle (from the CPU's flags), the CPU's peak as stated above."""
    threads = threads or torch.get_num_threads()
    mhz, flags = 2000.0, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "cpu MHz":
                    mhz = float(value)
                elif key.strip() == "flags":
                    flags = set(value.split())
                if flags and key.strip() == "":
                    break
    except OSError:
        pass
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8
    return threads * mhz * 1e6 * per_cycle


def peak_flops(device: torch.device) -> float | None:
    """The assumed peak FP32 FLOP/s of `device` (None for an accelerator this table does not know)."""
    if os.environ.get(PEAK_ENV):
        return float(os.environ[PEAK_ENV])
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((peak for key, peak in GPU_FP32_PEAK if key in name), None)
    if device.type == "cpu":
        return cpu_peak_flops()
    return None


def utilisation(flops: float, seconds: float, peak: float | None) -> float | None:
    """The fraction of the peak an epoch achieved (None without a known peak)."""
    if peak is None or seconds <= 0:
        return None
    return flops / (seconds * peak)
