"""The transverse field Γ as a setting (`Config.gamma`): one value for every latent unit, or one per unit.

H = E(z) - sum_l Γ_l σ^x_l. A float is the same Γ for every unit; a tuple holds Γ_l for each of the
latent_dim units in the order of z (visible units first), from `--gamma 0.5,1.0,...` or `--gamma
@file` (`qvae.settings.parse_floats`). Γ is fixed during training. The priors turn either form into
what they compute with (`qvae.priors.qbm_exact.check_gamma`); this module is what needs no torch:
the largest Γ_l (the prior is quantum iff it is > 0), Γ in messages, and Γ as a run param.

Run param: a float as always; a tuple as its values ("0.5,1.0,...", which `--gamma` reads back)
while they fit in an MLflow param, else as their digest. The main job logs the values themselves
as the artifact `gamma.json` either way (`--gamma @gamma.json` reads it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from qvae.settings import parse_floats

MAX_PARAM_CHARS = 6000  # MLflow's limit on the length of a param value
ARTIFACT = "gamma.json"  # the per-unit values of a run, as a JSON list


def largest(gamma: float | Sequence[float]) -> float:
    """max_l Γ_l (Γ itself for one value): the prior is a QBM iff this is > 0."""
    return max(gamma) if isinstance(gamma, tuple | list) else gamma


def describe(gamma: float | Sequence[float]) -> str:
    """Γ for a message or a report: "0.5", or "per unit (256 values in 0..1.5)"."""
    if not isinstance(gamma, tuple | list):
        return f"{gamma:g}"
    return f"per unit ({len(gamma)} values in {min(gamma):g}..{max(gamma):g})"


def values_text(gamma: tuple[float, ...]) -> str:
    """The values, comma-separated, each the shortest text that reads back as the same float."""
    return ",".join(repr(float(g)) for g in gamma)


def as_param(value: Any) -> Any:
    """A config value as a run param: per-unit Γ (the config's only tuple) as its values while they fit
    in MLflow's MAX_PARAM_CHARS, else "<n> per-unit values, sha256 <16 hex digits of values_text>";
    every other value unchanged (so a scalar Γ's param is what it always was)."""
    if not isinstance(value, tuple):
        return value
    text = values_text(value)
    if len(text) <= MAX_PARAM_CHARS:
        return text
    return f"{len(value)} per-unit values, sha256 {hashlib.sha256(text.encode()).hexdigest()[:16]}"


def matches_param(logged: str, gamma: tuple[float, ...]) -> bool:
    """Whether a run's logged `gamma` param records these per-unit values: our own param (`as_param`),
    or the text `mlflow run -P gamma=...` logged as given (values, or @file read again now)."""
    if logged == as_param(gamma):
        return True
    try:
        values = parse_floats(logged)
    except ValueError:
        return False
    return isinstance(values, tuple) and values == gamma
