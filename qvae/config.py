"""One flat, validated dataclass of hyperparameters.

Flat on purpose: every field is a plain value, so the whole config becomes the MLflow params of a
run, a row of CLI flags and a JSON file without any mapping layer. Defaults are the seed's
(kaiwu-pytorch-plugin's QVAE MNIST example).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

SAMPLERS = ("pcd", "sa", "kaiwu", "pimc")
PRIORS = ("boltzmann", "gaussian")
ACTIVATIONS = ("tanh", "relu", "elu", "gelu")
BINARIZE_MODES = ("none", "dynamic", "static")
DEVICES = ("auto", "cpu", "cuda", "mps")


class ConfigError(ValueError):
    """A config field holds a value outside its accepted range."""


@dataclass
class Config:
    """Hyperparameters of one QVAE training run (the seed's defaults)."""

    # architecture
    input_dim: int = 784
    hidden_dim: int = 512
    latent_dim: int = 256
    num_visible: int = 128  # RBM visible units: the first part of the latent split
    num_hidden: int = 128  # RBM hidden units: the rest of the latent vector
    activation: str = "tanh"
    prior: str = "boltzmann"  # boltzmann: RBM (gamma = 0) or QBM (gamma > 0); gaussian: the N(0, I) VAE baseline
    gamma: float = 0.0  # transverse field of the QBM prior (0 = the classical RBM); needs sampler=pimc
    trotter_slices: int = 16  # imaginary-time slices P of path-integral Monte Carlo (sampler=pimc)
    # objective
    dist_beta: float = 10.0  # sharpness of the spike-and-exponential smoothing
    kl_beta: float = 1e-6  # weight of the KL term in the optimised loss
    weight_decay: float = 0.01  # L2 on the RBM parameters, added to the loss as the seed does
    # optimisation
    batch_size: int = 256
    epochs: int = 20
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    # negative phase sampler
    sampler: str = "pcd"  # pcd | sa | kaiwu (any kaiwu IsingSolver, e.g. the licensed SA/CIM) | pimc (QBM)
    sampler_chains: int = 256  # negative samples per step (persistent chains for pcd)
    sampler_sweeps: int = 4  # Gibbs sweeps per step (pcd) or annealing sweeps (sa)
    sa_initial_temperature: float = 100.0
    sa_final_temperature: float = 1.0  # 1 samples the model; 0.001 reproduces kaiwu's optimiser
    kaiwu_solver: str = "kaiwu.classical.SimulatedAnnealingOptimizer"
    # generation
    generate_sweeps: int = 200  # Gibbs burn-in sweeps from a random state when generating
    # log Z of the prior, estimated after each epoch to report the true KL and ELBO
    log_z_chains: int = 256  # AIS chains (exact enumeration replaces AIS for small RBMs)
    log_z_betas: int = 300  # AIS inverse temperatures; 0 skips log Z (kl/elbo then not logged)
    # data
    data_dir: str = "data"
    train_size: int = 0  # 0 = all 60 000 training images
    test_size: int = 0  # 0 = all 10 000 test images
    binarize: str = "none"

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ConfigError naming the first field outside its accepted range."""
        for name in ("input_dim", "hidden_dim", "latent_dim", "num_visible", "num_hidden",
                     "batch_size", "epochs", "sampler_chains", "sampler_sweeps", "generate_sweeps"):
            _require_int(self, name, low=1)
        _require_int(self, "seed", low=0)
        _require_int(self, "trotter_slices", low=2)
        _require_int(self, "log_z_chains", low=2)
        if self.log_z_betas != 0:
            _require_int(self, "log_z_betas", low=2, note="0 skips the log Z estimate")
        if self.num_visible + self.num_hidden != self.latent_dim:
            raise ConfigError(
                f"num_visible + num_hidden must equal latent_dim: {self.num_visible} + "
                f"{self.num_hidden} != {self.latent_dim} (choose num_visible in 1..{self.latent_dim - 1} "
                f"and num_hidden = latent_dim - num_visible)"
            )
        _require_float(self, "dist_beta", low=0.0, low_open=True)
        _require_float(self, "kl_beta", low=0.0)
        _require_float(self, "weight_decay", low=0.0)
        _require_float(self, "lr", low=0.0, low_open=True)
        _require_float(self, "gamma", low=0.0)
        _require_float(self, "sa_initial_temperature", low=0.0, low_open=True)
        _require_float(self, "sa_final_temperature", low=0.0, low_open=True)
        if self.sa_final_temperature > self.sa_initial_temperature:
            raise ConfigError(
                f"sa_final_temperature must be <= sa_initial_temperature "
                f"({self.sa_final_temperature} > {self.sa_initial_temperature})"
            )
        _require_choice(self, "activation", ACTIVATIONS)
        _require_choice(self, "sampler", SAMPLERS)
        _require_choice(self, "prior", PRIORS)
        if self.gamma > 0 and self.prior != "boltzmann":
            raise ConfigError(f"gamma must be 0 with prior={self.prior} (a transverse field only applies to "
                              f"prior=boltzmann), got {self.gamma}")
        if self.gamma > 0 and self.sampler != "pimc":
            raise ConfigError(f"gamma > 0 (a quantum Boltzmann prior) needs sampler=pimc; sampler={self.sampler} "
                              f"samples the classical RBM (gamma = 0), got gamma={self.gamma}")
        _require_choice(self, "binarize", BINARIZE_MODES)
        _require_choice(self, "device", DEVICES, prefix_ok=("cuda:",))
        _require_int(self, "train_size", low=0, high=60_000, note="0 means all")
        _require_int(self, "test_size", low=0, high=10_000, note="0 means all")
        if not isinstance(self.data_dir, str) or not self.data_dir:
            raise ConfigError("data_dir must be a non-empty path")
        n_train = self.train_size or 60_000
        if self.batch_size > n_train:
            raise ConfigError(
                f"batch_size must be <= the number of training images: {self.batch_size} > "
                f"{'train_size ' if self.train_size else 'all '}{n_train} (accepted: 1..{n_train})"
            )

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Config":
        """Build from a mapping, rejecting unknown keys (a typo must not silently be ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**values)

    def replace(self, **changes: Any) -> "Config":
        return self.from_dict({**self.to_dict(), **changes})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _require_int(cfg: Config, name: str, low: int, high: int | None = None, note: str = "") -> None:
    value = getattr(cfg, name)
    bad_type = isinstance(value, bool) or not isinstance(value, int)
    if bad_type or value < low or (high is not None and value > high):
        upper = "" if high is None else str(high)
        extra = f"; {note}" if note else ""
        raise ConfigError(f"{name} must be an integer in {low}..{upper or 'inf'}{extra}, got {value!r}")


def _require_float(cfg: Config, name: str, low: float, low_open: bool = False) -> None:
    value = getattr(cfg, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low)
    if not ok:
        bound = f"> {low}" if low_open else f">= {low}"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")
    setattr(cfg, name, float(value))


def _require_choice(cfg: Config, name: str, choices: tuple[str, ...],
                    prefix_ok: tuple[str, ...] = ()) -> None:
    value = getattr(cfg, name)
    if value in choices or (isinstance(value, str) and value.startswith(prefix_ok) and prefix_ok):
        return
    accepted = ", ".join(choices + tuple(p + "N" for p in prefix_ok))
    raise ConfigError(f"{name} must be one of {accepted}; got {value!r}")


@dataclass
class JobOptions:
    """Settings of the main job that are not model hyperparameters."""

    fid_samples: int = 10_000  # generated and real images compared by FID/KID (0 skips FID)
    fid_batch_size: int = 100
    tsne_interval: int = 1  # a t-SNE frame every N epochs (0: none)
    tsne_points: int = 2000  # test images in each frame
    tsne_final_points: int = 10_000  # test images in the final high-quality t-SNE (0: none)
    # test NLL and latent probe: off unless asked for (the MLproject's main entry point asks: 1000 and 100),
    # so library callers such as tuning trials do not pay for them
    nll_samples: int = 0  # importance samples K per image of the test NLL (0 skips it; DVAE# uses 4000)
    nll_images: int = 0  # test images the NLL averages over (0: all of them)
    nll_ais_chains: int = 1000  # AIS chains of the NLL's log Z (RBMs too large to enumerate)
    nll_ais_betas: int = 1000  # AIS inverse temperatures of the NLL's log Z (DVAE#: 1000)
    probe_epochs: int = 0  # epochs of the latent-probe MLP (0 skips latent_accuracy; the seed used 100)
    experiment_name: str = ""  # "" = the active/default experiment (mlflow run picks it)
    run_name: str = ""
    register_model: str = ""  # a registered model name, e.g. qvae-mnist ("" = do not register)
    resume: str = ""  # an MLflow run id: continue that (killed) run from its last logged checkpoint
    output_dir: str = ""  # local copies of everything logged ("" = a temporary directory)
    progress: bool = True
    extra_tags: dict[str, str] = field(default_factory=dict)

    def validate(self, config: Config) -> None:
        test_size = config.test_size or 10_000
        if self.fid_samples != 0 and not 2 <= self.fid_samples <= test_size:
            raise ConfigError(f"fid_samples must be 0 (skip) or in 2..{test_size} (the test images available), "
                              f"got {self.fid_samples}")
        if self.tsne_interval < 0:
            raise ConfigError(f"tsne_interval must be >= 0 (0: no frames), got {self.tsne_interval}")
        if not 10 <= self.tsne_points <= 10_000:
            raise ConfigError(f"tsne_points must be in 10..10000, got {self.tsne_points}")
        if self.tsne_final_points != 0 and not 10 <= self.tsne_final_points <= 10_000:
            raise ConfigError(f"tsne_final_points must be 0 (none) or in 10..10000, got {self.tsne_final_points}")
        if self.fid_batch_size < 1:
            raise ConfigError(f"fid_batch_size must be >= 1, got {self.fid_batch_size}")
        self.validate_scores(test_size)

    def validate_scores(self, test_size: int) -> None:
        """The test-NLL and latent-probe settings (shared by the main job, `qvae evaluate`, benchmarks)."""
        checks = (("nll_samples", 0, 1_000_000, "0 skips the test NLL"),
                  ("nll_ais_chains", 2, 1_000_000, ""), ("nll_ais_betas", 2, 1_000_000, ""),
                  ("probe_epochs", 0, 10_000, "0 skips the latent probe"))
        for name, low, high, note in checks:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"{name} must be an integer in {low}..{high}{'; ' + note if note else ''}, "
                                  f"got {value!r}")
        n = self.nll_images
        if isinstance(n, bool) or not isinstance(n, int) or not (n == 0 or 2 <= n <= test_size):
            raise ConfigError(f"nll_images must be 0 (all) or in 2..{test_size} (the test images available), got {n!r}")
