"""The search space: which hyperparameters a trial draws, and from which ranges.

Defaults follow the user's question: how to split a fixed latent vector between RBM visible and
hidden units, and how sharp (`dist_beta`) and how heavily weighted (`kl_beta`) the prior term
should be. Every range is overridable by flags or a JSON file with the same field names.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import optuna

from qvae.config import Config, ConfigError
from qvae.gamma import describe
from qvae.settings import check_fields, setting


def check_base_config(config: Config) -> None:
    """The base config of a study takes one gamma for every unit: the study searches the latent split
    (and perhaps its total), which moves the units a per-unit gamma names."""
    if isinstance(config.gamma, tuple):
        raise ConfigError(f"gamma must be one value for a study (it searches the latent split, which moves the "
                          f"units a per-unit gamma names; gamma_min/max search one value), got "
                          f"{describe(config.gamma)}")


@dataclass
class SearchSpace:
    """What a trial draws: the latent split, dist_beta and kl_beta (log scales), optionally lr, gamma and the
    training objective's importance samples."""

    latent_total: int = setting(256, "fixed total of RBM units (default: the config's latent_dim) unless "
                                "latent_choices", low=2)
    latent_choices: tuple[int, ...] = setting((), "optionally search the total too, e.g. 128 256")
    visible_min: int = setting(16, "num_visible is drawn from visible_min..total - visible_min", low=1,
                               note="at most total / 2")
    visible_step: int = setting(16, "step of num_visible", low=1)
    dist_beta_min: float = setting(2.0, "lower end of dist_beta (log scale)", low=0.0, low_open=True)
    dist_beta_max: float = setting(30.0, "upper end of dist_beta (log scale)", low=0.0, low_open=True)
    kl_beta_min: float = setting(1e-6, "lower end of kl_beta (log scale over several decades)", low=0.0,
                                 low_open=True)
    kl_beta_max: float = setting(1.0, "upper end of kl_beta", low=0.0, low_open=True)
    lr_min: float = setting(0.0, "lower end of lr (log scale)", low=0.0, note="lr_min = lr_max = 0: not searched")
    lr_max: float = setting(0.0, "upper end of lr", low=0.0, note="0: lr not searched (the base config's)")
    gamma_min: float = setting(0.0, "lower end of the QBM's transverse field (uniform)", low=0.0)
    gamma_max: float = setting(0.0, "upper end of gamma; > 0: trials use sampler=pimc", low=0.0,
                               note="0: not searched (the base config's gamma)")
    iw_samples_max: int = setting(0, "largest importance samples k of the training objective; > 0: k is drawn "
                                  "from 1..iw_samples_max (log scale)", low=0, high=1000,
                                  note="0: not searched (the base config's iw_samples)")

    def __post_init__(self) -> None:
        self.latent_choices = tuple(int(c) for c in self.latent_choices)
        self.validate()

    def validate(self) -> None:
        """The rules between fields, then every declared range."""
        totals = self.latent_choices or (self.latent_total,)
        for total in totals:
            if total < 2:
                raise ConfigError(f"latent totals must be >= 2, got {total}")
            if not 1 <= self.visible_min <= total // 2:
                raise ConfigError(f"visible_min must be in 1..{total // 2} for a latent total of {total}, "
                                  f"got {self.visible_min}")
        if self.visible_step < 1:
            raise ConfigError(f"visible_step must be >= 1, got {self.visible_step}")
        for name in ("dist_beta", "kl_beta"):
            low, high = getattr(self, f"{name}_min"), getattr(self, f"{name}_max")
            if not 0 < low <= high:
                raise ConfigError(f"{name}_min and {name}_max must satisfy 0 < min <= max, got {low}, {high}")
        if (self.lr_min, self.lr_max) != (0.0, 0.0) and not 0 < self.lr_min <= self.lr_max:
            raise ConfigError(f"lr_min and lr_max must both be 0 (lr not searched) or 0 < min <= max, "
                              f"got {self.lr_min}, {self.lr_max}")
        if not 0 <= self.gamma_min <= self.gamma_max:
            raise ConfigError(f"gamma_min and gamma_max must satisfy 0 <= gamma_min <= gamma_max (gamma_max = 0: "
                              f"gamma not searched), got {self.gamma_min}, {self.gamma_max}")
        check_fields(self)  # the declared ranges (the rules above name both ends of a pair first)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Config changes for one trial: the latent split, dist_beta, kl_beta (and lr, gamma, iw_samples)."""
        total = (trial.suggest_categorical("latent_dim", list(self.latent_choices)) if self.latent_choices
                 else self.latent_total)
        high = total - self.visible_min
        step = self.visible_step if (high - self.visible_min) % self.visible_step == 0 else 1
        visible = trial.suggest_int("num_visible", self.visible_min, high, step=step)
        changes: dict[str, Any] = {
            "latent_dim": total, "num_visible": visible, "num_hidden": total - visible,
            "dist_beta": trial.suggest_float("dist_beta", self.dist_beta_min, self.dist_beta_max, log=True),
            "kl_beta": trial.suggest_float("kl_beta", self.kl_beta_min, self.kl_beta_max, log=True),
        }
        if self.lr_max > 0:
            changes["lr"] = trial.suggest_float("lr", self.lr_min, self.lr_max, log=True)
        if self.gamma_max > 0:  # PIMC samples the RBM exactly at gamma = 0, so one sampler serves the range
            changes["gamma"] = trial.suggest_float("gamma", self.gamma_min, self.gamma_max)
            changes["sampler"] = "pimc"
        if self.iw_samples_max > 0:
            changes["iw_samples"] = trial.suggest_int("iw_samples", 1, self.iw_samples_max, log=True)
        return changes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def resolve(cls, path: str | Path | None, overrides: dict[str, Any], latent_total: int) -> "SearchSpace":
        """Fields from the JSON file at `path` (if any), then `overrides`; the total defaults to
        `latent_total` (the base config's latent_dim) unless either of them sets it."""
        values = json.loads(Path(path).read_text()) if path else {}
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown search-space field(s) in {path}: {', '.join(unknown)}")
        return cls(**{"latent_total": latent_total, **values, **overrides})
