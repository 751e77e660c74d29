"""Where a run's time goes: wall-clock seconds per phase (data, train, fid, nll, probe, ...).

A `PhaseTimer` charges each phase the time from its start to its end with the device drained at
both ends, so work a GPU queued asynchronously counts in the phase that queued it. Work done
beside the main thread (t-SNE frames on a CPU worker while the GPU trains) is recorded with
`add(..., beside=True)`: its seconds overlap the others and are not part of the total.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

import torch

from qvae.stopping import raise_if_interrupted


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the device's queued work (a no-op on CPUs)."""
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


class PhaseTimer:
    """Seconds per named phase, in the order the phases first ran."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self.beside: set[str] = set()
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        raise_if_interrupted()  # phases are safe points to stop at
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
            raise_if_interrupted()
        finally:
            synchronize(self.device)
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float, beside: bool = False) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        if beside:
            self.beside.add(name)

    def total(self) -> float:
        return time.perf_counter() - self.started

    def metrics(self) -> dict[str, float]:
        """`time_<phase>` for every phase, and `time_total` (wall clock since the timer started)."""
        phases = {f"time_{name}": round(s, 3) for name, s in self.seconds.items()}
        return {**phases, "time_total": round(self.total(), 3)}

    def table(self, title: str = "where the time went") -> str:
        """One table: phase, seconds, share of the total wall clock (work beside the main thread marked)."""
        total = self.total()
        lines = [f"{title} ({total:.1f} s wall clock)", f"  {'phase':28s} {'seconds':>8s} {'share':>6s}"]
        for name, seconds in self.seconds.items():
            label = f"{name} (overlapped)" if name in self.beside else name
            lines.append(f"  {label:28s} {seconds:8.1f} {seconds / total:6.0%}")
        inside = sum(s for n, s in self.seconds.items() if n not in self.beside)
        lines.append(f"  {'other (start-up, logging)':28s} {max(total - inside, 0.0):8.1f} "
                     f"{max(total - inside, 0.0) / total:6.0%}")
        return "\n".join(lines)


def is_wall_clock(name: str) -> bool:
    """Whether metric `name` measures time (epoch seconds, phases, utilisation, MLflow's system
    metrics): identical runs differ in these, so they are never compared as results."""
    return name in ("epoch_seconds", "flops_utilisation") or name.startswith(("time_", "system/"))
