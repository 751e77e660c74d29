"""Every setting of a run, declared once: the model and training `Config`, the `ScoreSettings` of
the final evaluation, and the main job's `JobOptions` (which include the score settings).

Each field is a `qvae.settings.setting`: its type, default, accepted range and help text. The CLI
flags (`qvae`, `python -m tuning`), the validation below and tests/test_mlproject.py (which checks
the MLproject's parameters against these declarations) all read them, so nothing repeats them.

Config is flat on purpose: every field is a plain value, so the whole config becomes the MLflow
params of a run, a row of CLI flags and a JSON file without any mapping layer. Defaults are the
seed's (kaiwu-pytorch-plugin's QVAE MNIST example).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from qvae.gamma import as_param, describe, largest, matches_param
from qvae.models.importance import MEAN_FIELD_ITERATIONS
from qvae.models.smoothing import SMOOTHINGS
from qvae.schedule import LR_SCHEDULES
from qvae.settings import ConfigError, check_field, check_fields, setting

SAMPLERS = ("pcd", "sa", "kaiwu", "pimc")
PRIORS = ("boltzmann", "gaussian")
ACTIVATIONS = ("tanh", "relu", "elu", "gelu")
BINARIZE_MODES = ("none", "static", "dynamic")  # pixels as read, Bernoulli once (static) or per batch (dynamic)
DEVICES = ("auto", "cpu", "cuda", "mps")
N_TRAIN, N_TEST = 60_000, 10_000  # MNIST's file sizes (train file = training + validation splits)
VALIDATION_SIZE = 10_000  # the DVAE/IWAE validation split: the training file's last 10 000 images
# What may change when a killed run is resumed: more epochs, and the device (the numbers then
# continue on another machine, equal in distribution but not bit for bit). Anything else would
# continue a different experiment in the same run.
RESUME_MAY_DIFFER = ("epochs", "device", "cuda_graphs")
# What only a Boltzmann prior reads: a Gaussian-prior run neither logs nor compares these
BOLTZMANN_ONLY = ("num_visible", "num_hidden", "smoothing", "dist_beta", "mean_field_iterations", "gamma",
                  "trotter_slices", "sampler", "sampler_chains", "sampler_sweeps", "sa_initial_temperature",
                  "sa_final_temperature", "kaiwu_solver", "generate_sweeps", "log_z_chains", "log_z_betas",
                  "weight_decay")

# Shipped configurations: values that replace the declared defaults; explicit values win over them.
PRESETS: dict[str, dict[str, Any]] = {
    # kaiwu-pytorch-plugin's QVAE MNIST example, reproduced: kl_beta 1e-6 against weight_decay 0.01 holds the
    # RBM near zero, so its prior stays almost uniform (prior_kl_uniform says so): an autoencoder, in effect
    "seed": {},
    # the likelihood itself on binarised digits: the KL at full weight, so the prior learns, and a likelihood
    # comparable with the DVAE literature's; trained on the importance-weighted bound (k = 5) with a cosine-decayed
    # learning rate, 10 Gibbs sweeps per step and DVAE#'s power-function relaxation: the changes
    # benchmarks/ablate.py kept on validation (docs/results.md)
    "likelihood": {"kl_beta": 1.0, "binarize": "dynamic", "iw_samples": 5, "lr": 6e-3, "lr_schedule": "cosine",
                   "sampler_sweeps": 10, "smoothing": "power", "dist_beta": 30.0},
}
PRESET_FIELDS = tuple(sorted({name for values in PRESETS.values() for name in values}))
# How `mlflow run` logs a preset field left to the preset: the MLproject's "" default, quoted for the shell
NOT_GIVEN = ("", "''")

__all__ = ["ACTIVATIONS", "BINARIZE_MODES", "DEVICES", "PRESETS", "PRIORS", "RESUME_MAY_DIFFER", "SAMPLERS", "Config",
           "ConfigError", "JobOptions", "ScoreSettings"]


@dataclass
class Config:
    """Hyperparameters of one QVAE training run (the seed's defaults)."""

    # architecture
    input_dim: int = setting(784, "pixels per image (MNIST: 28 x 28)", low=1)
    hidden_dim: int = setting(512, "width of the encoder's and decoder's hidden layers", low=1)
    hidden_layers: int = setting(1, "hidden layers of width hidden_dim in the encoder and in the decoder", low=1,
                                 high=8)
    latent_dim: int = setting(256, "binary latent units (= num_visible + num_hidden)", low=1)
    num_visible: int = setting(128, "RBM visible units: the first part of the latent split", low=1)
    num_hidden: int = setting(128, "RBM hidden units: the rest of the latent vector", low=1)
    activation: str = setting("tanh", "hidden-layer activation", choices=ACTIVATIONS)
    prior: str = setting("boltzmann", "boltzmann: RBM (gamma = 0) or QBM (gamma > 0); gaussian: the N(0, I) VAE "
                         "baseline", choices=PRIORS)
    gamma: float | tuple[float, ...] = setting(0.0, "transverse field of the QBM prior, fixed during training (0 = the "
                                               "classical RBM; > 0 needs sampler=pimc)", low=0.0, kind="floats",
                                               note="a list: one value per latent unit, visible units first")
    trotter_slices: int = setting(16, "imaginary-time slices P of path-integral Monte Carlo (sampler=pimc)", low=2)
    # objective
    smoothing: str = setting("exponential", "the relaxation of the binary latents: exponential (DVAE++) or power "
                             "(DVAE#'s power function; sharper at the same dist_beta, DVAE# uses 30-40)",
                             choices=SMOOTHINGS)
    dist_beta: float = setting(10.0, "sharpness beta of the smoothing (exponential: its rate; power: the exponent "
                               "1/beta)", low=0.0, low_open=True)
    kl_beta: float = setting(1e-6, "weight of the KL term in the optimised loss", low=0.0)
    kl_warmup_epochs: int = setting(0, "epochs over which the KL's weight rises linearly from 0 to kl_beta "
                                    "(step by step)", low=0, zero="no warm-up")
    iw_samples: int = setting(0, "importance samples per image of the training objective: k >= 1 trains on the "
                              "importance-weighted bound (IWAE; the QVAE with DVAE#'s mean-field relaxed prior)",
                              low=0, high=1000, zero="the ELBO with its exact KL")
    mean_field_iterations: int = setting(MEAN_FIELD_ITERATIONS, "alternating mean-field updates of the relaxed prior "
                                         "p(zeta) that the QVAE's importance-weighted bound uses (iw_samples >= 1): a "
                                         "lower bound at any count, tighter with more", low=1, high=100)
    weight_decay: float = setting(0.01, "L2 on the RBM parameters, added to the loss as the seed does", low=0.0)
    # optimisation
    batch_size: int = setting(256, "images per Adam step (at most the training images)", low=1)
    epochs: int = setting(20, "passes over the training images", low=1)
    lr: float = setting(1e-3, "Adam learning rate", low=0.0, low_open=True)
    lr_schedule: str = setting("constant", "the learning rate over the run: constant, or cosine (a half cosine "
                               "from lr at the first step towards 0 at the last of `epochs`)", choices=LR_SCHEDULES)
    weight_average: float = setting(0.0, "decay d of an exponential moving average of the weights, updated after "
                                    "each step; validation, the best checkpoint, the scores and generation use the "
                                    "average (0.999 averages over about the last 1 000 steps)", low=0.0,
                                    low_open=True, high=0.99999, zero="off: the weights as trained")
    seed: int = setting(0, "seed of every random stream (data order, noise, sampler chains)", low=0)
    device: str = setting("auto", "auto picks CUDA, then MPS, then CPU", choices=DEVICES, prefixes=("cuda:",))
    cuda_graphs: bool = setting(True, "on CUDA, replay each training step as a captured CUDA graph (false: eager "
                                "steps, e.g. to debug; the numbers are the same)")
    # negative phase sampler
    sampler: str = setting("pcd", "pcd | sa | kaiwu (any kaiwu IsingSolver, e.g. the licensed SA/CIM) | pimc (QBM)",
                           choices=SAMPLERS)
    sampler_chains: int = setting(256, "negative samples per step (persistent chains for pcd)", low=1)
    sampler_sweeps: int = setting(4, "Gibbs sweeps per step (pcd) or annealing sweeps (sa)", low=1)
    sa_initial_temperature: float = setting(100.0, "simulated annealing's first temperature", low=0.0,
                                            low_open=True)
    sa_final_temperature: float = setting(1.0, "simulated annealing's last temperature (1 samples the model; "
                                          "0.001 reproduces kaiwu's optimiser)", low=0.0, low_open=True)
    kaiwu_solver: str = setting("kaiwu.classical.SimulatedAnnealingOptimizer", "the kaiwu solver class "
                                "(sampler=kaiwu)")
    # generation
    generate_sweeps: int = setting(200, "Gibbs burn-in sweeps from a random state when generating", low=1)
    # log Z of the prior, estimated after each epoch to report the true KL and ELBO
    log_z_chains: int = setting(256, "AIS chains of log Z (exact enumeration replaces AIS for small RBMs)", low=2)
    log_z_betas: int = setting(300, "AIS inverse temperatures of log Z (kl/elbo are then logged)", low=2,
                               zero="skip log Z")
    # data
    data_dir: str = setting("data", "where MNIST is (fetched if missing)", non_empty=True)
    train_size: int = setting(0, "training images: the first of the training file's first 60000 - validation_size",
                              low=0, high=N_TRAIN - 1, note="0 means all")
    validation_size: int = setting(VALIDATION_SIZE, "the training file's last images, held out: the per-epoch val_*, "
                                   "the best checkpoint, pruning, tuning objectives and pictures use only these",
                                   low=1, high=N_TRAIN - 1)
    test_size: int = setting(0, "test images, read once by the final scores", low=0, high=N_TEST, note="0 means all")
    binarize: str = setting("none", "none: grey levels; dynamic: resampled each batch; static: once",
                            choices=BINARIZE_MODES)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ConfigError naming the first field outside its accepted range (each field's declared
        range, in declaration order), then the rules between fields."""
        check_fields(self)
        if self.num_visible + self.num_hidden != self.latent_dim:
            raise ConfigError(
                f"num_visible + num_hidden must equal latent_dim: {self.num_visible} + "
                f"{self.num_hidden} != {self.latent_dim} (choose num_visible in 1..{self.latent_dim - 1} "
                f"and num_hidden = latent_dim - num_visible)"
            )
        if self.sa_final_temperature > self.sa_initial_temperature:
            raise ConfigError(
                f"sa_final_temperature must be <= sa_initial_temperature "
                f"({self.sa_final_temperature} > {self.sa_initial_temperature})"
            )
        if isinstance(self.gamma, tuple) and len(self.gamma) != self.latent_dim:
            raise ConfigError(f"gamma must be one value or one per latent unit (latent_dim = {self.latent_dim}, "
                              f"visible units first), got {len(self.gamma)} values")
        if largest(self.gamma) > 0 and self.prior != "boltzmann":
            raise ConfigError(f"gamma must be 0 with prior={self.prior} (a transverse field only applies to "
                              f"prior=boltzmann), got {describe(self.gamma)}")
        if largest(self.gamma) > 0 and self.sampler != "pimc":
            raise ConfigError(f"gamma > 0 (a quantum Boltzmann prior) needs sampler=pimc; sampler={self.sampler} "
                              f"samples the classical RBM (gamma = 0), got gamma={describe(self.gamma)}")
        if self.kl_warmup_epochs > self.epochs:
            raise ConfigError(f"kl_warmup_epochs must be <= epochs ({self.epochs}: a warm-up longer than the run "
                              f"never reaches kl_beta), got {self.kl_warmup_epochs}")
        if self.train_size > N_TRAIN - self.validation_size:
            raise ConfigError(f"train_size must be <= 60000 - validation_size = {N_TRAIN - self.validation_size} "
                              f"(0: all of them), got {self.train_size}")
        n_train = self.train_size or N_TRAIN - self.validation_size
        if self.batch_size > n_train:
            raise ConfigError(
                f"batch_size must be <= the number of training images: {self.batch_size} > "
                f"{'train_size ' if self.train_size else 'all '}{n_train} (accepted: 1..{n_train})"
            )

    # ------------------------------------------------------------------ resuming
    def relevant(self) -> dict[str, Any]:
        """The fields this config's model reads (a Gaussian prior ignores BOLTZMANN_ONLY): its run params."""
        skip = BOLTZMANN_ONLY if self.prior == "gaussian" else ()
        return {k: v for k, v in self.to_dict().items() if k not in skip}

    def resume_mismatches(self, saved: Mapping[str, Any]) -> list[str]:
        """The fields (sorted) in which this config differs from `saved`, the config a run was started
        with (a checkpoint's dict, or a run's logged params as strings), ignoring RESUME_MAY_DIFFER.
        A field `saved` lacks predates it and counts as its declared default."""
        mine = self.relevant()
        return sorted(f.name for f in fields(self) if f.name in mine and f.name not in RESUME_MAY_DIFFER
                      and _as_type(saved.get(f.name, f.default), mine[f.name]) != mine[f.name])

    def check_resumable(self, saved: Mapping[str, Any], epoch: int, source: str) -> None:
        """The one resume rule: the config equals `saved` but for RESUME_MAY_DIFFER, and `epochs` goes
        beyond `epoch`, the last one `source` (e.g. "run <id>") completed; else a ConfigError."""
        differ = self.resume_mismatches(saved)
        if differ:
            detail = ", ".join(f"{k}: saved {saved.get(k)}, given {getattr(self, k)}" for k in differ)
            raise ConfigError(f"resume: the config must equal {source}'s except {', '.join(RESUME_MAY_DIFFER)}; "
                              f"{detail}")
        saved_epochs = int(saved.get("epochs", self.epochs))
        if self.lr_schedule != "constant" and saved_epochs != self.epochs:
            raise ConfigError(f"resume: lr_schedule={self.lr_schedule} decays over the run's epochs, so epochs must "
                              f"stay {saved_epochs} (as {source} started), got {self.epochs}")
        if epoch >= self.epochs:
            raise ConfigError(f"resume: {source} is at epoch {epoch}; epochs must be > {epoch} to continue it, "
                              f"got {self.epochs}")

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

    @classmethod
    def from_preset(cls, preset: str = "seed", **values: Any) -> "Config":
        """The shipped configuration `preset` (see PRESETS), with `values` winning over it."""
        if preset not in PRESETS:
            raise ConfigError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        return cls.from_dict({**PRESETS[preset], **values})

    def replace(self, **changes: Any) -> "Config":
        return self.from_dict({**self.to_dict(), **changes})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        return cls.from_dict(json.loads(Path(path).read_text()))


def params_with_preset(params: Mapping[str, str]) -> dict[str, str]:
    """A run's logged params as its config held them: each preset field that `mlflow run` logged as not given
    (NOT_GIVEN) becomes the value the run's preset (its `preset` param; seed when absent or unknown) gave it."""
    name = params.get("preset", "seed")
    resolved = Config.from_preset(name if name in PRESETS else "seed")
    return {**params, **{field: str(as_param(getattr(resolved, field))) for field in PRESET_FIELDS
                         if params.get(field) in NOT_GIVEN}}


def _as_type(value: Any, current: Any) -> Any:
    """`value` (a logged param is a string) as the type of `current`."""
    if isinstance(current, tuple):  # per-unit gamma: a checkpoint's values, or a run param (qvae.gamma.as_param)
        if isinstance(value, list | tuple):
            return tuple(value)
        return current if isinstance(value, str) and matches_param(value, current) else value
    if not isinstance(value, str) or isinstance(current, str):
        return value
    if isinstance(current, bool):
        return value.lower() == "true"
    try:
        return float(value) if isinstance(current, float) else int(float(value))
    except ValueError:
        return value


@dataclass
class ScoreSettings:
    """How much of the final evaluation to do (0 skips a score): the main job, `qvae evaluate` and
    benchmarks/compare.py all score with these. The test NLL and the latent probe cost minutes to
    hours, so they are off unless asked for (the MLproject's main and evaluate entry points ask for
    the seed's protocol: nll_samples 1000, probe_epochs 100)."""

    fid_samples: int = setting(10_000, "generated and real images compared by FID/KID", low=2, high=N_TEST,
                               zero="skip")
    fid_batch_size: int = setting(100, "images per Inception forward pass", low=1)
    nll_samples: int = setting(0, "importance samples K per image of the test NLL (DVAE# uses 4000)", low=0,
                               high=1_000_000, note="0 skips the test NLL")
    nll_images: int = setting(0, "test images the NLL averages over", low=2, high=N_TEST, zero="all")
    nll_ais_chains: int = setting(1000, "AIS chains of the NLL's log Z (RBMs too large to enumerate)", low=2,
                                  high=1_000_000)
    nll_ais_betas: int = setting(1000, "AIS inverse temperatures of the NLL's log Z (DVAE#: 1000)", low=2,
                                 high=1_000_000)
    probe_epochs: int = setting(0, "epochs of the latent-probe MLP (the seed used 100)", low=0, high=10_000,
                                note="0 skips the latent probe")
    nll_clamped_chains: int = setting(0, "a QBM prior's own test NLL beside its bound: AIS chains per importance "
                                      "sample of the path integral clamped at z", low=0, high=10_000,
                                      note="0: only the bound test_nll_bound")
    nll_clamped_betas: int = setting(50, "AIS inverse temperatures per importance sample of that NLL", low=2,
                                     high=100_000)

    def validate_scores(self, images: int = N_TEST, split: str = "test") -> None:
        """The declared ranges, FID and NLL images narrowed to the `images` of `split` available."""
        for f in fields(ScoreSettings):
            limited = f.name in ("fid_samples", "nll_images")
            check_field(self, f.name, high=images if limited else None,
                        why=f"the {split} images available" if limited else "")

    def score_settings(self) -> ScoreSettings:
        """Only the score settings (e.g. of a JobOptions)."""
        return ScoreSettings(**{f.name: getattr(self, f.name) for f in fields(ScoreSettings)})


@dataclass
class JobOptions(ScoreSettings):
    """Settings of the main job that are not model hyperparameters: the score settings, pictures, naming."""

    tsne_interval: int = setting(1, "a t-SNE frame every N epochs", low=0, note="0: no frames")
    tsne_points: int = setting(2000, "test images in each t-SNE frame", low=10, high=N_TEST)
    tsne_final_points: int = setting(10_000, "test images in the final high-quality t-SNE", low=10, high=N_TEST,
                                     zero="none")
    experiment_name: str = setting("", "MLflow experiment (\"\": the active/default one; mlflow run picks it)")
    run_name: str = setting("", "MLflow run name")
    register_model: str = setting("", "register the model under this name, e.g. qvae-mnist (\"\": do not)")
    resume: str = setting("", "an MLflow run id: continue that (killed) run from its last logged checkpoint")
    output_dir: str = setting("", "local copies of everything logged (\"\": a temporary directory)")
    progress: bool = setting(True, "show progress bars")
    extra_tags: dict[str, str] = setting({}, "MLflow tags added to the run")

    def validate(self, config: Config, split: str = "test") -> None:
        """Every declared range; FID and NLL images at most the config's images of the scored `split`
        (test for the main job, validation for a tuning trial)."""
        self.validate_scores(config.validation_size if split == "validation" else config.test_size or N_TEST, split)
        for f in fields(self):
            if f.name not in {g.name for g in fields(ScoreSettings)}:
                check_field(self, f.name)
