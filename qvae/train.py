"""The training loop: epochs of Adam steps, a validation pass, log Z, checkpoints, callbacks.

Everything that chooses reads the validation split only: the per-epoch `val_*` terms and the best
checkpoint (highest validation ELBO), whose weights `TrainResult.best_state` keeps for the final
scores. The validation pass leaves the training sampler's chains and random state untouched. With
`weight_average` > 0 what is judged (validation, best checkpoint, callbacks) is the weights' moving average.

One readable loop (nanoGPT style). Everything that makes a run resumable bit-for-bit on the
same device lives in the checkpoint: model, optimiser, sampler chains and every random state.
Callbacks (MLflow tracking, Optuna pruning) receive an `EpochReport` after each epoch and may
raise `StopTraining` to end the run early but cleanly.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

import torch
from tqdm.auto import tqdm

from qvae.averaging import WeightAverage
from qvae.config import Config, ConfigError
from qvae.data.mnist import MnistData, batches, model_inputs, num_batches, train_mean
from qvae.flops import epoch_flops, peak_flops, utilisation
from qvae.models.build import Model, build_model
from qvae.priors.samplers import Sampler
from qvae.schedule import kl_factor, lr_factor
from qvae.stopping import raise_if_interrupted
from qvae.train_step import DIVERGED_LOSS, TrainStep, graphs_available

CHECKPOINT_VERSION = 1
LAST_CHECKPOINT = "last.pt"
PREVIOUS_CHECKPOINT = "previous.pt"  # the epoch before last.pt's: what resume falls back to if last.pt is damaged
DIVERGENCE_CHECK_STEPS = 20  # on accelerators: read the on-device health flag every N steps
BEST_CHECKPOINT = "best.pt"
PRIOR_LEARNING_NATS = 1.0  # prior_kl_uniform below this at the end: the prior has not learned (a warning)
log = logging.getLogger(__name__)


class StopTraining(Exception):
    """Raised by a callback to end training after the current epoch."""


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite: the run stops instead of recording garbage."""


@dataclass
class EpochReport:
    epoch: int
    metrics: dict[str, float]  # train terms plain, validation terms prefixed `val_`
    model: Model
    checkpoint: Path | None
    is_best: bool


def chosen_metrics(history: list[dict[str, float]], best_epoch: int | None) -> dict[str, float]:
    """A copy of the metrics of the epoch validation chose (the last epoch's when none was chosen; {} when
    no epoch ran): what a run reports as its own."""
    return dict(history[(best_epoch or len(history)) - 1]) if history else {}


class Callback(Protocol):
    def on_epoch_end(self, report: EpochReport) -> None: ...


@dataclass
class TrainResult:
    model: Model
    sampler: Sampler | None  # None for prior=gaussian (no negative phase)
    history: list[dict[str, float]] = field(default_factory=list)
    device: str = "cpu"
    stopped_early: bool = False
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None  # the model's weights at best_epoch

    def chosen_metrics(self) -> dict[str, float]:
        """The metrics of the epoch whose weights `best_model` returns."""
        return chosen_metrics(self.history, self.best_epoch)

    def best_model(self) -> Model:
        """The model with the best-on-validation weights (the last epoch's when none was recorded)."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return self.model


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device must be auto, cpu or a CUDA device this machine has; {name!r} requested "
                          f"but CUDA is not available (use device=auto or cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device must be auto, cpu or cuda:0..cuda:{torch.cuda.device_count() - 1} on this "
                          f"machine; got {name!r}")
    return device


@torch.no_grad()
def evaluate(model: Model, sampler: Sampler | None, x: torch.Tensor, batch_size: int,
             generator: torch.Generator) -> dict[str, float]:
    """Batch-weighted averages of the model's terms over `x`, already in the model's input form
    (no parameter updates). With a sampler, its negative samples give the loss terms too; the
    sampler's chains and random state are restored afterwards, so evaluating never changes training."""
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    negative = None
    if sampler is not None:
        saved = copy.deepcopy(sampler.state_dict())
        negative = sampler.sample(model.prior, model.config.sampler_chains)
        sampler.load_state_dict(saved)
    for xb, _ in batches(x, x[:, 0], batch_size, shuffle=False, generator=None):
        terms = model(xb, negative, generator)
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + value.detach() * len(xb)
    model.train()
    return {name: (total / len(x)).item() for name, total in sums.items()}


def elbo_key(metrics: dict[str, float], prefix: str = "") -> str:
    """The name of the best available ELBO in `metrics`: elbo, else q_elbo, else elbo_unnormalized."""
    for name in ("elbo", "q_elbo", "elbo_unnormalized"):
        if prefix + name in metrics:
            return prefix + name
    raise KeyError(f"no {prefix}elbo, {prefix}q_elbo or {prefix}elbo_unnormalized in the metrics")


def train(config: Config, data: MnistData, *, checkpoint_dir: str | os.PathLike[str] | None = None,
          callbacks: Iterable[Callback] = (), resume_from: str | os.PathLike[str] | None = None,
          progress: bool = True) -> TrainResult:
    """Train a QVAE on `data`; returns the model, sampler and per-epoch metric history."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    # a static model learns from one Bernoulli sample of the grey images (its seed's); dynamic resamples per batch
    train_x = data.train_x if config.binarize != "static" else model_inputs(data.train_x, "static", config.seed)
    model = build_model(config, data_mean=train_mean(train_x)).to(device)
    prior = model.latent_prior
    sampler = prior.make_sampler()  # None for the Gaussian prior: no negative phase
    # the fused kernel does Adam's elementwise update in one pass (measurably faster on CPU too)
    use_graph = graphs_available(device, config.cuda_graphs)
    # capturable on every CUDA run (graph or not): its on-device bias correction makes both paths one computation
    # a scheduled lr is a device tensor filled before each step, which a captured step reads; the fused kernel
    # takes one (the foreach one, on MPS, does not: there the group's float is set instead); a constant lr a float
    fused = device.type in ("cpu", "cuda")
    scheduled = config.lr_schedule != "constant"
    lr_now = torch.tensor(config.lr, device=device) if scheduled and fused else None
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr if lr_now is None else lr_now, fused=fused,
                                 capturable=device.type == "cuda")
    # validation, the best checkpoint and everything after training judge the weights' moving average, if kept
    average = WeightAverage(model, config.weight_average) if config.weight_average else None
    judged = average.swapped_in if average is not None else nullcontext
    shuffle_rng = torch.Generator(device=device).manual_seed(config.seed)
    noise_rng = torch.Generator(device=device).manual_seed(config.seed + 1)
    eval_rng = torch.Generator(device=device).manual_seed(config.seed + 2)
    train_x, train_y = train_x.to(device), data.train_y.to(device)
    val_x = model_inputs(data.val_x.to(device), config.binarize)  # one fixed form, the same every epoch
    dynamic = config.binarize == "dynamic"
    history: list[dict[str, float]] = []
    best_elbo, best_epoch, best_state, start_epoch = -math.inf, None, None, 1
    callbacks = list(callbacks)

    if resume_from is not None:
        state, _ = load_resumable(resume_from)  # on the CPU: generator states must be CPU byte tensors
        _check_resumable(state, config)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if lr_now is not None:  # the loaded group holds a copy; the steps must read the tensor filled below
            optimizer.param_groups[0]["lr"] = lr_now
        if sampler is not None:
            sampler.load_state_dict(state["sampler"])
        if average is not None:
            average.load_state_dict(state["weight_average"])
        for rng, key in ((shuffle_rng, "shuffle_rng"), (noise_rng, "noise_rng"), (eval_rng, "eval_rng")):
            rng.set_state(state[key])
        history, best_elbo, best_epoch = state["history"], state["best_elbo"], state["best_epoch"]
        best_state = state.get("best_model")  # absent from checkpoints written before it was kept
        start_epoch = state["epoch"] + 1

    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt_dir is not None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    steps = num_batches(len(train_x), config.batch_size)
    check_every = 1 if device.type == "cpu" else DIVERGENCE_CHECK_STEPS  # on a GPU, sync only now and then
    result = TrainResult(model, sampler, history, str(device), best_epoch=best_epoch, best_state=best_state)

    step = TrainStep(model, optimizer, sampler, noise_rng, dynamic=dynamic, batch_size=config.batch_size,
                     use_graph=use_graph)
    flops, peak = epoch_flops(model, len(train_x), len(val_x)), peak_flops(device)
    for epoch in range(start_epoch, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        step.start_epoch()
        bar = tqdm(batches(train_x, train_y, config.batch_size, shuffle=True, generator=shuffle_rng),
                   total=steps, desc=f"epoch {epoch}/{config.epochs}", disable=not progress, leave=False)
        for index, (xb, _) in enumerate(bar, start=1):
            at = (epoch - 1) * steps + index  # the step's place in the whole run
            if config.kl_warmup_epochs:  # the KL's weight rises step by step, reaching kl_beta at the warm-up's end
                model.kl_scale.fill_(kl_factor(config.kl_warmup_epochs * steps, at))
            if scheduled:
                lr = config.lr * lr_factor(config.lr_schedule, at, config.epochs * steps)
                if lr_now is not None:
                    lr_now.fill_(lr)
                else:
                    optimizer.param_groups[0]["lr"] = lr
            raise_if_interrupted()  # a Ctrl-C or SIGTERM Python swallowed stops the run here
            step.step(xb)
            if average is not None:
                average.update()
            if index % check_every == 0 or index == steps:
                _check_healthy(step.healthy(), epoch, index, step.last, config)
        train_terms = step.epoch_terms(len(train_x))
        if not all(math.isfinite(v) for v in train_terms.values()):
            raise DivergenceError(f"epoch {epoch}: non-finite training terms {train_terms}")

        metrics: dict[str, float] = {}
        log_z = None
        with judged():
            val_terms = evaluate(model, sampler, val_x, config.batch_size, eval_rng)
            if config.log_z_betas and prior.needs_log_z:  # a Gaussian KL is already exact
                log_z, log_z_err, _ = prior.log_z(config.log_z_chains, config.log_z_betas, eval_rng)
                val_terms = prior.complete_with_log_z(val_terms, log_z)  # kl/elbo, or kl_upper_bound/q_elbo
                metrics.update(log_z=log_z, log_z_stderr=log_z_err)
                kl_uniform = prior.kl_to_uniform(log_z, eval_rng)  # is the prior learning at all?
                if kl_uniform is not None:
                    metrics["prior_kl_uniform"] = kl_uniform
            score = val_terms[elbo_key(val_terms)]
            is_best = score > best_elbo
            if is_best:
                best_elbo, best_epoch = score, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if log_z is not None:
            if average is not None:  # the training terms are the trained weights' own: so is their log Z
                log_z = prior.log_z(config.log_z_chains, config.log_z_betas, eval_rng)[0]
                metrics["train_log_z"] = log_z
            train_terms = prior.complete_with_log_z(train_terms, log_z)
        metrics.update(train_terms)
        metrics.update({f"val_{k}": v for k, v in val_terms.items()})
        metrics["epoch_seconds"] = time.perf_counter() - started
        used = utilisation(flops, metrics["epoch_seconds"], peak)
        if used is not None:
            metrics["flops_utilisation"] = used
        history.append(metrics)
        result.best_epoch, result.best_state = best_epoch, best_state
        checkpoint = None
        if ckpt_dir is not None:
            state = {
                "version": CHECKPOINT_VERSION, "epoch": epoch, "config": config.to_dict(),
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "sampler": sampler.state_dict() if sampler is not None else None,
                "weight_average": average.state_dict() if average is not None else None,
                "shuffle_rng": shuffle_rng.get_state(), "noise_rng": noise_rng.get_state(),
                "eval_rng": eval_rng.get_state(),
                "history": history, "best_elbo": best_elbo, "best_epoch": best_epoch, "best_model": best_state,
            }
            checkpoint = ckpt_dir / LAST_CHECKPOINT
            if checkpoint.exists():
                os.replace(checkpoint, ckpt_dir / PREVIOUS_CHECKPOINT)
            save_checkpoint(state, checkpoint)
            if is_best:
                save_checkpoint(state, ckpt_dir / BEST_CHECKPOINT)
        tqdm.write(_summary_line(epoch, config.epochs, metrics))
        try:
            with judged():  # pictures and pruning see the weights validation judged
                for callback in callbacks:
                    callback.on_epoch_end(EpochReport(epoch, metrics, model, checkpoint, is_best))
        except StopTraining:
            result.stopped_early = True
            break
    warn_if_prior_is_uniform(history, config)
    return result


def warn_if_prior_is_uniform(history: list[dict[str, float]], config: Config) -> None:
    """One warning when the prior ended within PRIOR_LEARNING_NATS of uniform: the model is then an
    autoencoder with a Bernoulli(1/2) prior, and its generated digits show it."""
    last = history[-1].get("prior_kl_uniform") if history else None
    if last is not None and last < PRIOR_LEARNING_NATS:
        log.warning("the prior did not learn: prior_kl_uniform = KL(p || uniform) = %.3g nats after %d epochs "
                    "(< %g), so samples come from an almost uniform Bernoulli(1/2) prior. kl_beta=%g weighs the KL "
                    "against weight_decay=%g on the RBM: raise kl_beta (--preset likelihood uses 1), lower "
                    "weight_decay, or train longer", last, len(history), PRIOR_LEARNING_NATS, config.kl_beta,
                    config.weight_decay)


def _check_healthy(healthy: torch.Tensor, epoch: int, step: int, terms: dict[str, torch.Tensor],
                   config: Config) -> None:
    """Raise DivergenceError (before any checkpoint of this epoch) once a loss was NaN, inf or huge."""
    if not bool(healthy):
        last = {k: float(v.detach()) for k, v in terms.items()}
        raise DivergenceError(f"epoch {epoch}, step <= {step}: the training loss is NaN, infinite or beyond "
                              f"{DIVERGED_LOSS:g} (last step's terms {last}); lower lr (now {config.lr:g}) "
                              f"or check the input")


def _summary_line(epoch: int, epochs: int, m: dict[str, float]) -> str:
    key = elbo_key(m)
    elbo = f"{key} {m[key]:.2f} val_{key} {m['val_' + key]:.2f} " if key != "elbo_unnormalized" else ""
    return (f"epoch {epoch}/{epochs}: loss {m['loss']:.3f} cost {m['cost']:.3f} val_cost "
            f"{m['val_cost']:.3f} {elbo}({m['epoch_seconds']:.1f} s)")


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write atomically: a crash mid-write never leaves a truncated checkpoint behind."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint's state, read as data only (`weights_only`): a checkpoint fetched from a shared
    tracking server cannot run code on the machine that resumes it."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {state.get('version')} is not {CHECKPOINT_VERSION}")
    return state


def load_resumable(path: str | os.PathLike[str], map_location: Any = "cpu") -> tuple[dict[str, Any], Path]:
    """The checkpoint at `path`, or, when it cannot be read (e.g. truncated by a kill during its copy or
    upload), the previous epoch's beside it (PREVIOUS_CHECKPOINT), with a warning; returns the state
    and the file used. Raises the first file's error when neither can be read."""
    path = Path(path)
    try:
        return load_checkpoint(path, map_location), path
    except Exception as err:  # noqa: BLE001 (a damaged file raises anything from zipfile to unpickling)
        previous = path.with_name(PREVIOUS_CHECKPOINT)
        if path.name == PREVIOUS_CHECKPOINT or not previous.exists():
            raise
        try:
            state = load_checkpoint(previous, map_location)
        except Exception:  # noqa: BLE001
            raise err from None
        log.warning("%s cannot be read (%s: %s); resuming from %s, epoch %d, the one before it. Epoch %d's "
                    "metrics, logged before the failure, are logged again by the resumed epoch", path,
                    type(err).__name__, str(err).splitlines()[0][:200], previous.name, state["epoch"],
                    state["epoch"] + 1)
        return state, previous


def _check_resumable(state: dict[str, Any], config: Config) -> None:
    """The one resume rule (Config.check_resumable): only epochs and device may differ, and epochs must go
    beyond the checkpoint's."""
    config.check_resumable(state["config"], state["epoch"], "the checkpoint")
