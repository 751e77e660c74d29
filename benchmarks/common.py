"""Helpers shared by the benchmark scripts (run them as `python benchmarks/NAME.py`)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from qvae.config import Config
from qvae.models.build import build_model
from qvae.priors.rbm import RBM
from qvae.train import load_checkpoint


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (platform's answer elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: str | torch.device) -> str:
    """The device as the benchmarks' headers name it: the GPU's name, or the CPU, cores and torch threads."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def as_stored(config: Config) -> dict[str, Any]:
    """`config` as a results.json holds it (tuples as lists), to compare with a stored one."""
    return json.loads(json.dumps(config.to_dict()))


def write_report(directory: Path, report: dict[str, Any]) -> None:
    """DIRECTORY/results.json, replaced whole: a benchmark killed while writing it leaves the previous one."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "results.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, directory / "results.json")


def load_chosen_model(path: str | os.PathLike[str], device: torch.device,
                      data_dir: str) -> tuple[torch.nn.Module, Config, dict]:
    """The best-on-validation model of a training checkpoint (compare.py's DIR/<model>/last.pt) on `device`,
    with its config (data read from `data_dir`, here) and the checkpoint itself."""
    state = load_checkpoint(path, map_location=device)
    config = Config.from_dict({**state["config"], "device": str(device), "data_dir": data_dir})
    model = build_model(config).to(device)
    model.load_state_dict(state.get("best_model") or state["model"])
    return model, config, state


def random_rbm(nv: int, nh: int, scale: float, device: str, seed: int = 0) -> RBM:
    """An RBM with N(0, scale^2) weights and biases, reproducible by seed."""
    gen = torch.Generator().manual_seed(seed)
    rbm = RBM(nv, nh)
    with torch.no_grad():
        rbm.weight.copy_(torch.randn(nv, nh, generator=gen) * scale)
        rbm.visible_bias.copy_(torch.randn(nv, generator=gen) * scale)
        rbm.hidden_bias.copy_(torch.randn(nh, generator=gen) * scale)
    return rbm.to(device)


def seconds_per_call(fn: Callable[[], object], repeats: int, device: str) -> float:
    """Median wall time of `repeats` calls after one warm-up, synchronising CUDA around each."""
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
