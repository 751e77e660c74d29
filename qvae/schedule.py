"""Per-step multipliers of the training: the learning rate's decay and the KL's warm-up.

Both are pure functions of the step's place in the run, so a resumed run continues them exactly
(no scheduler state in checkpoints), and a captured CUDA-graph step reads them from device
tensors the training loop fills before each step.
"""

from __future__ import annotations

import math

LR_SCHEDULES = ("constant", "cosine")


def lr_factor(schedule: str, step: int, total: int) -> float:
    """The learning rate's multiplier at `step` (1-based) of `total`: 1 throughout (constant), or a half
    cosine from 1 at the first step towards 0 after the last (cosine; SGDR without restarts)."""
    if not 1 <= step <= total:
        raise ValueError(f"step must be in 1..{total}, got {step}")
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (step - 1) / total))
    raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")


def kl_factor(warmup_steps: int, step: int) -> float:
    """The KL weight's multiplier at `step` (1-based): rising linearly to 1 at `warmup_steps`, then 1."""
    return min(1.0, step / warmup_steps)
