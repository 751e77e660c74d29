"""The tracking layer: the only library module that talks to MLflow (with generator.py).

`run_main_job` is what `mlflow run .` executes: it trains one QVAE and records a complete,
comparable experiment: params (config, device, data checksums, versions, git state), the MNIST
dataset input, per-epoch metrics, an image series of generated digits, checkpoints, t-SNE frames
and their GIF, training curves, FID/KID, and the model as a pyfunc generator.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shlex
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import mlflow
import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from qvae.background import BackgroundWork
from qvae.config import NOT_GIVEN, Config, ConfigError, JobOptions
from qvae.data.mnist import MnistData, load_mnist_for, model_inputs
from qvae.gamma import ARTIFACT as GAMMA_ARTIFACT
from qvae.gamma import as_param
from qvae.metrics.names import split_name
from qvae.metrics.scores import final_scores, score_details
from qvae.models.build import build_model
from qvae.models.qvae import QVAE
from qvae.priors.build import kl_uniform_method, log_z_method
from qvae.timing import PhaseTimer
from qvae.tracking.store import (
    check_resume,
    deferred_interrupts,
    download_checkpoint,
    log_input_once,
    mark_model_training,
    missing_metric_steps,
    prepare_store,
    store_write,
    tracked_run,
)
from qvae.train import (
    BEST_CHECKPOINT,
    PREVIOUS_CHECKPOINT,
    DivergenceError,
    EpochReport,
    TrainResult,
    load_resumable,
    resolve_device,
    train,
)

log = logging.getLogger(__name__)
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # qvae/: logged with the model (code_paths)
GENERATOR_FILE = PACKAGE_DIR / "tracking" / "pyfunc.py"
MODEL_NAME = "model"
DEFAULT_REGISTERED_MODEL = "qvae-mnist"  # the Model Registry name studies register under
CHOSEN_CHECKPOINT = "best-on-validation"  # which weights are scored, pictured and logged as the model


# ---------------------------------------------------------------- provenance
def log_new_params(params: dict[str, Any]) -> None:
    """Log params on the active run, skipping keys it already holds.

    `mlflow run` logs the entry point's parameters itself (as given on the command line, e.g.
    kl_beta=0.000001); MLflow refuses to change a logged param, so those keep their values. A preset
    field it logged as not given ('', the preset's value) gets its value beside it, as `<name>.resolved`.
    """
    run = mlflow.active_run()
    existing = mlflow.get_run(run.info.run_id).data.params if run else {}
    resolved = {f"{k}.resolved": v for k, v in params.items() if k in existing and existing[k] in NOT_GIVEN}
    store_write(mlflow.log_params, {k: v for k, v in {**params, **resolved}.items() if k not in existing})



def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("torch", "mlflow", "optuna", "kaiwu-community", "kaiwu", "torchmetrics", "qvae-mlops"):
        try:
            versions[f"version_{package.replace('-', '_')}"] = version(package)
        except PackageNotFoundError:
            versions[f"version_{package.replace('-', '_')}"] = "not installed"
    return versions


def git_state(path: Path = PACKAGE_DIR) -> dict[str, str]:
    """Commit and dirtiness of the source tree the code runs from ('unknown' outside git)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        return {"git_commit": git("rev-parse", "HEAD"),
                "git_dirty": str(bool(git("status", "--porcelain", "--untracked-files=no")))}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}


DATASET_ROLES = {"train": "training", "validation": "validation", "test": "test"}  # split -> MLflow input context


def log_dataset(data: MnistData) -> None:
    """The three MNIST splits as MLflow dataset inputs: digest = content hash, source = raw dir,
    context = the split's role (training; validation: chooses; test: scored once)."""
    from mlflow.data.numpy_dataset import from_numpy
    from mlflow.data.sources import LocalArtifactDatasetSource

    source = LocalArtifactDatasetSource(str(data.source.raw_dir))  # a plain path is ambiguous to MLflow (a warning)
    for split, context in DATASET_ROLES.items():
        x, y = data.split(split)
        dataset = from_numpy((x.cpu().numpy() * 255).round().astype(np.uint8), targets=y.cpu().numpy(),
                             source=source, name=f"mnist-{split}")
        log_input_once(dataset, context)


# ---------------------------------------------------------------- per-epoch logging
class MlflowEpochLogger:
    """Train callback: metrics, checkpoints, a generated-digits image series and t-SNE frames."""

    def __init__(self, data: MnistData, options: JobOptions, workdir: Path, seed: int, run_id: str | None = None,
                 work: BackgroundWork | None = None) -> None:
        """`run_id`: the run the frames go to (default: the active run); `work`: where the t-SNE frames
        are drawn (default: at once, in this thread)."""
        from qvae.plots import grid_image

        self.grid_image = grid_image
        self.options, self.workdir, self.seed = options, workdir, seed
        self.run_id = run_id or mlflow.active_run().info.run_id
        self.work = work or BackgroundWork(enabled=False)
        n = min(options.tsne_points, len(data.val_x))  # validation images: the test split is read once, at the end
        self.tsne_x, self.tsne_y = data.val_x[:n], data.val_y[:n].cpu().numpy()
        self.frames: list[Path] = []
        (workdir / "tsne_frames").mkdir(parents=True, exist_ok=True)
        self.previous_embedding: np.ndarray | None = None

    def restore_frames(self, run_id: str, through_epoch: int, model: QVAE) -> None:
        """A resumed run's t-SNE frames of epochs 1..through_epoch, fetched back from the run, so
        tsne_evolution.gif holds every epoch, not only the resumed ones. The checkpoint's own epoch
        may have been killed between its checkpoint and its frame: that frame is drawn now from
        `model`, which holds exactly that epoch's weights."""
        from mlflow.exceptions import MlflowException

        try:
            local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="tsne_frames",
                                                             dst_path=str(self.workdir / "resumed")))
        except (MlflowException, OSError):  # no frames logged yet
            local = self.workdir / "resumed"
        by_epoch = {int(f.stem.removeprefix("epoch_")): f for f in local.glob("epoch_*.png")}
        self.frames = [by_epoch[epoch] for epoch in sorted(by_epoch) if epoch <= through_epoch]
        if through_epoch % self.options.tsne_interval == 0 and through_epoch not in by_epoch:
            self.tsne_frame(model.eval(), through_epoch)

    def on_epoch_end(self, report: EpochReport) -> None:
        # the checkpoint before the metrics: a resumed run re-logs metrics its checkpoint holds (see runs.py)
        if report.checkpoint is not None:  # the previous epoch's first: one complete checkpoint survives any kill
            previous = report.checkpoint.with_name(PREVIOUS_CHECKPOINT)
            if previous.exists():
                store_write(mlflow.log_artifact, str(previous), artifact_path="checkpoints")
            store_write(mlflow.log_artifact, str(report.checkpoint), artifact_path="checkpoints")
            if report.is_best:
                store_write(mlflow.log_artifact, str(report.checkpoint.with_name(BEST_CHECKPOINT)),
                            artifact_path="checkpoints")
        store_write(mlflow.log_metrics, report.metrics, step=report.epoch)
        model = report.model
        device = model.train_bias.device
        gen = torch.Generator(device=device).manual_seed(self.seed)
        store_write(mlflow.log_image, self.grid_image(model.generate(64, generator=gen)), key="generated",
                    step=report.epoch)
        interval = self.options.tsne_interval
        if interval and (report.epoch % interval == 0 or report.epoch == model.config.epochs):
            self.tsne_frame(model, report.epoch)
        model.train()

    def tsne_frame(self, model: QVAE, epoch: int) -> None:
        """The epoch's latent features now (on the device); the t-SNE, PNG and upload as background work."""
        x = model_inputs(self.tsne_x.to(model.train_bias.device), model.config.binarize)
        self.work.submit(self._draw_frame, model.latent_features(x).cpu().numpy(), epoch)

    def _draw_frame(self, features: np.ndarray, epoch: int) -> None:
        from qvae.plots import save_tsne_frame, tsne_embedding

        embedding = tsne_embedding(features, init=self.previous_embedding, seed=self.seed, quality="fast")
        self.previous_embedding = embedding
        path = save_tsne_frame(embedding, self.tsne_y, self.workdir / "tsne_frames" / f"epoch_{epoch:03d}.png",
                               title=f"epoch {epoch}")
        self.frames.append(path)
        log_artifact(self.run_id, path, "tsne_frames")


def log_artifact(run_id: str, path: Path, artifact_path: str | None = None) -> None:
    """Log a file to run `run_id` from any thread (the fluent API's active run is per thread)."""
    store_write(mlflow.MlflowClient().log_artifact, run_id, str(path), artifact_path)


# ---------------------------------------------------------------- the model
def generator_signature(config: Config) -> ModelSignature:
    return ModelSignature(
        inputs=Schema([ColSpec("long", "seed")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, config.input_dim), "images")]),
        params=ParamSchema([ParamSpec("num_images", "long", 0), ParamSpec("sweeps", "long", config.generate_sweeps)]),
    )


def log_generator(model: QVAE, workdir: Path, registered_model_name: str = "", best_epoch: int | None = None,
                  epochs: int = 0) -> Any:
    """Log the chosen model (the best-on-validation checkpoint) as the pyfunc generator, tagged as
    such; optionally register a new version."""
    import pandas as pd

    from qvae.tracking.pyfunc import MODEL_FORMAT_VERSION

    model_dir = workdir / "model_artifacts"
    model_dir.mkdir(parents=True, exist_ok=True)
    weights = model_dir / "weights.pt"
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, weights)
    config_file = model_dir / "config.json"
    config_file.write_text(json.dumps({"format_version": MODEL_FORMAT_VERSION, "config": model.config.to_dict()}))
    with deferred_interrupts():  # many writes: a retry could log the model twice
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=str(GENERATOR_FILE),
            artifacts={"weights": str(weights), "config": str(config_file)},
            code_paths=[str(PACKAGE_DIR)],
            signature=generator_signature(model.config),
            input_example=pd.DataFrame({"seed": [0, 1, 2, 3]}),
            pip_requirements=_pip_requirements(),
            registered_model_name=registered_model_name or None,
            tags={"qvae.checkpoint": CHOSEN_CHECKPOINT, "qvae.best_epoch": str(best_epoch), "qvae.epochs": str(epochs)},
            step=best_epoch or 0,
        )


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"torch=={version('torch')}", f"mlflow=={version('mlflow')}", f"numpy=={version('numpy')}",
            f"pandas=={version('pandas')}", "kaiwu-community"]


# ---------------------------------------------------------------- the main job
@dataclass
class JobResult:
    run_id: str
    metrics: dict[str, float]  # the chosen epoch's metrics (the last one's if stopped early) plus the final scores
    stopped_early: bool  # a callback (e.g. an Optuna pruner) ended training
    model_uri: str | None = None  # the logged generator (None when stopped early)


def run_main_job(config: Config, options: JobOptions, *, parent_run_id: str | None = None,
                 callbacks: Sequence[Any] = (), data: MnistData | None = None,
                 on_run_start: Callable[[str], None] | None = None, score_split: str = "test") -> JobResult:
    """Train, evaluate and log one QVAE in one MLflow run (a child run under `parent_run_id`).

    The final scores read `score_split`: "test" for the main job (once, on the chosen checkpoint),
    "validation" for a tuning trial, whose scores choose (the test split is then never read).

    `callbacks` run after the MLflow logger each epoch; when one stops training early, the run
    keeps its per-epoch record but skips the final evaluation and the model. `on_run_start`
    receives the run id as soon as the run exists (e.g. to store it on an Optuna trial).
    """
    options.validate(config, score_split)  # fail before anything is downloaded, trained or recorded
    resolve_device(config.device)  # a device this machine lacks is refused here, not inside the run
    launched_by_mlflow_run = bool(os.environ.get("MLFLOW_RUN_ID")) and parent_run_id is None
    own_experiment = options.experiment_name and not launched_by_mlflow_run and parent_run_id is None
    if parent_run_id is None:  # a child run's parent already prepared the store (and found its server up)
        prepare_store(options.experiment_name if own_experiment else "")  # fails fast on an unreachable server
    if options.resume:
        check_resume(options.resume, config)
    with local_copies(options.output_dir) as workdir:
        return _start_run(config, options, workdir, parent_run_id, callbacks, data, on_run_start,
                          launched_by_mlflow_run, score_split)


@contextlib.contextmanager
def local_copies(output_dir: str) -> Iterator[Path]:
    """Where the run writes what it logs: `output_dir` (kept), or a temporary directory removed when
    the run ends, since every file in it has been logged to MLflow by then (a study's trials would
    otherwise leave ~30 MB each behind)."""
    if output_dir:
        path = Path(output_dir)
        path.mkdir(parents=True, exist_ok=True)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="qvae-run-") as tmp:
            yield Path(tmp)


def _start_run(config: Config, options: JobOptions, workdir: Path, parent_run_id: str | None,
               callbacks: Sequence[Any], data: MnistData | None, on_run_start: Callable[[str], None] | None,
               launched_by_mlflow_run: bool, score_split: str) -> JobResult:
    """Fetch what a resumed run continues from and the data, then run the job inside its MLflow run."""
    timer = PhaseTimer(resolve_device(config.device))
    resume_from, resumed = (_fetch_resume_checkpoint(options.resume, config, workdir) if options.resume
                            else (None, None))
    if data is None:
        with timer.phase("data"):
            data = load_mnist_for(config)
    if resumed is not None and launched_by_mlflow_run:  # `mlflow run` made a fresh run: point it at the real one
        store_write(mlflow.MlflowClient().set_tag, os.environ["MLFLOW_RUN_ID"], "qvae.resumed_run_id", options.resume)
    with tracked_run(run_id=options.resume or None, run_name=None if options.resume else options.run_name or None,
                     parent_run_id=None if options.resume else parent_run_id,
                     nested=parent_run_id is not None and not options.resume) as run:
        if on_run_start is not None:
            on_run_start(run.info.run_id)
        try:
            return _run_in(run, config, options, data, workdir, callbacks, launched_by_mlflow_run, resume_from,
                           resumed, score_split, timer)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the run ends KILLED, its checkpoints stay
            store_write(mlflow.set_tag, "qvae.status", "interrupted")
            log.warning("MLflow run %s stopped; its last completed epoch's checkpoint is logged. Continue it "
                        "with:\n  %s\nor: mlflow run . -P resume=%s (with the same -P settings)",
                        run.info.run_id, resume_command(config, options, run.info.run_id), run.info.run_id)
            raise
        except DivergenceError as err:
            store_write(mlflow.set_tags, {"qvae.status": "diverged", "fail_reason": str(err)[:5000]})
            raise


NOT_FOR_RESUME = ("resume", "run_name", "experiment_name", "extra_tags", "progress")  # the run keeps its own


def resume_command(config: Config, options: JobOptions, run_id: str) -> str:
    """The `qvae run` command that continues run `run_id`: every setting that differs from its default."""
    given = {**config.to_dict(), **{k: v for k, v in asdict(options).items() if k not in NOT_FOR_RESUME}}
    defaults = {**Config().to_dict(), **asdict(JobOptions())}
    flags = [f"--{name.replace('_', '-')} {shlex.quote(str(value))}" for name, value in given.items()
             if value != defaults[name]]
    return " ".join(["qvae run --resume", run_id, *flags])


def _fetch_resume_checkpoint(run_id: str, config: Config, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """The run's last checkpoint, downloaded, readable, and one this config may continue
    (`Config.check_resumable`: the same config but for epochs and device, epochs beyond it)."""
    path = download_checkpoint(run_id, workdir / "resume")
    try:
        state, path = load_resumable(path)  # a damaged last.pt (killed mid-upload): the previous epoch's
    except Exception as err:  # neither can be read, or a foreign file
        raise ConfigError(f"resume: run {run_id}'s checkpoint cannot be read ({type(err).__name__}: {err})") from None
    config.check_resumable(state["config"], state["epoch"], f"run {run_id}")
    return path, state


def _run_in(run: Any, config: Config, options: JobOptions, data: MnistData, workdir: Path,
            callbacks: Sequence[Any], launched_by_mlflow_run: bool, resume_from: Path | None,
            resumed: dict[str, Any] | None, score_split: str, timer: PhaseTimer) -> JobResult:
    """The main job inside its (new or reopened) MLflow run, in the order things happen: describe the
    run, train, score once, draw the pictures, log the model. On an accelerator the t-SNE pictures are
    drawn by a CPU worker beside the training and scoring (qvae/background.py)."""
    with timer.phase("data"):
        describe_run(run, config, options, data, launched_by_mlflow_run, resumed)
    run_id = run.info.run_id
    with BackgroundWork(enabled=resolve_device(config.device).type != "cpu") as work:
        epoch_logger = MlflowEpochLogger(data, options, workdir, config.seed, run_id, work)
        if resumed is not None and options.tsne_interval:
            at_checkpoint = build_model(config)
            at_checkpoint.load_state_dict(resumed["model"])
            epoch_logger.restore_frames(run_id, resumed["epoch"], at_checkpoint)
        with timer.phase("train"):
            result = train(config, data, checkpoint_dir=workdir / "checkpoints",
                           callbacks=[epoch_logger, *callbacks], progress=options.progress, resume_from=resume_from)
        if result.best_epoch is not None:
            store_write(mlflow.set_tag, "best_epoch", str(result.best_epoch))
        if result.stopped_early:  # e.g. pruned: the per-epoch record stays, no final scores and no model
            return JobResult(run_id, dict(result.history[-1]) if result.history else {}, True)
        metrics = result.chosen_metrics()
        model = result.best_model()  # what is scored, pictured and logged: the best-on-validation checkpoint
        store_write(mlflow.set_tags, {"qvae.checkpoint": CHOSEN_CHECKPOINT, "qvae.scored_split": score_split})
        with timer.phase("tsne"):  # on a CPU the final t-SNE itself; on a GPU only its features (drawn beside)
            submit_tsne_pictures(model, data, epoch_logger, options, workdir, work, run_id)
        scores = final_scores(model, data, options.score_settings(), split=score_split, seed=config.seed,
                              progress=options.progress, timer=timer)
        metrics.update(log_scores(scores, config, result, options, workdir, score_split))
        with timer.phase("pictures"):
            log_pictures(model, data, result.history, workdir)
        with timer.phase("model"):
            model_uri = log_generator(model, workdir, options.register_model, result.best_epoch,
                                      len(result.history)).model_uri
        with timer.phase("cpu_wait"):
            work.wait()
    if work.enabled:  # the worker's t-SNE frames, final t-SNE and GIF, overlapped with the phases above
        timer.add("tsne_beside", work.busy, beside=True)
    log_timings(timer)
    return JobResult(run_id, metrics, False, model_uri)


def log_timings(timer: PhaseTimer) -> None:
    """`time_<phase>` metrics and the phase table on stdout: where the run's wall clock went."""
    store_write(mlflow.log_metrics, timer.metrics())
    print(timer.table(), flush=True)


def describe_run(run: Any, config: Config, options: JobOptions, data: MnistData, launched_by_mlflow_run: bool,
                 resumed: dict[str, Any] | None) -> None:
    """Tags, params (config, device, data checksums, versions, git state, what is scored), and the
    dataset inputs; a resumed run instead gets back the metrics its checkpoint holds but it lacks."""
    if options.experiment_name and launched_by_mlflow_run:
        experiment = mlflow.get_experiment(run.info.experiment_id)
        if experiment.name != options.experiment_name:
            log.warning("experiment_name=%r ignored: `mlflow run` already placed this run in %r; "
                        "use `mlflow run . --experiment-name ...`", options.experiment_name, experiment.name)
    if options.run_name:
        store_write(mlflow.set_tag, "mlflow.runName", options.run_name)
    store_write(mlflow.set_tags, {"qvae.entry_point": "main", **options.extra_tags})
    mark_model_training(run.info.experiment_id)
    prior_params = {} if config.prior == "gaussian" else {  # a Gaussian has no sampler and no log Z
        "log_z_method": log_z_method(config), "prior_kl_uniform_method": kl_uniform_method(config)}
    log_new_params({**{k: as_param(v) for k, v in config.relevant().items()},
                    "device_used": str(resolve_device(config.device)),
                    **data.source.as_params(), **library_versions(), **git_state(),
                    **asdict(options.score_settings()), "tsne_interval": options.tsne_interval,
                    "tsne_points": options.tsne_points, **prior_params})
    if isinstance(config.relevant().get("gamma"), tuple):  # per-unit Γ: the values, whatever the param holds
        store_write(mlflow.log_text, json.dumps(list(config.gamma)), GAMMA_ARTIFACT)
    if resumed is None:
        log_dataset(data)
    else:  # killed between a checkpoint and its metrics: log them now, so no step is missing or doubled
        for epoch, epoch_metrics in missing_metric_steps(run.info.run_id, resumed["history"]):
            store_write(mlflow.log_metrics, epoch_metrics, step=epoch)
        store_write(mlflow.set_tag, "qvae.resumed", f"from epoch {resumed['epoch']} to {config.epochs}")


def log_scores(scores: dict[str, Any], config: Config, result: TrainResult, options: JobOptions,
               workdir: Path, split: str = "test") -> dict[str, float]:
    """The final scores as metrics, with fid_results.txt (FID) and scores.json (NLL and probe details)."""
    metrics = scores["metrics"]
    if not metrics:
        return {}
    store_write(mlflow.log_metrics, metrics)
    fid = split_name("fid", split)
    if fid in metrics:
        results = workdir / "fid_results.txt"
        kid = split_name("kid", split)
        results.write_text(
            f"FID: {metrics[fid]:.4f}\nFID (64 features): {metrics[split_name('fid_64', split)]:.4f}\n"
            f"KID: {metrics[kid]:.6f} +- {metrics[split_name('kid_std', split)]:.6f}\n"
            f"Model: the best-on-validation checkpoint, epoch {result.best_epoch} of {len(result.history)} "
            f"(highest validation ELBO)\n"
            f"Latent size: {config.latent_dim} ({config.num_visible} visible + {config.num_hidden} hidden)\n"
            f"Samples: {options.fid_samples} generated vs the first {options.fid_samples} {split} images (grey)\n"
            f"Date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}\n")
        store_write(mlflow.log_artifact, str(results))
    details = score_details(scores)
    if "class_counts" in details:  # which digits the FID samples are
        from qvae.metrics.classes import class_histogram

        histogram = class_histogram(details["class_counts"], workdir / "class_histogram.png",
                                    title=f"{options.fid_samples} generated digits")
        store_write(mlflow.log_artifact, str(histogram))
    if details:
        path = workdir / "scores.json"
        path.write_text(json.dumps({"metrics": {k: v for k, v in metrics.items() if "fid" not in k and "kid" not in k},
                                    **details}, indent=2))
        store_write(mlflow.log_artifact, str(path))
    return metrics


def log_pictures(model: QVAE, data: MnistData, history: list[dict[str, float]], workdir: Path) -> None:
    """Image grids (original, reconstruction, generated) and the training curves."""
    from qvae.plots import write_pictures

    for path in write_pictures(model, data.val_x, history, workdir, seed=model.config.seed).values():
        store_write(mlflow.log_artifact, str(path))


def submit_tsne_pictures(model: QVAE, data: MnistData, epoch_logger: MlflowEpochLogger, options: JobOptions,
                         workdir: Path, work: BackgroundWork, run_id: str) -> None:
    """The t-SNE GIF of the epochs' frames and the final t-SNE of the chosen model, as background work
    (the features are computed here, on the device, before the scores use it)."""
    from qvae.plots import assemble_gif, save_tsne

    def gif() -> None:
        if epoch_logger.frames:  # read when the job runs: after every frame job submitted before it
            log_artifact(run_id, assemble_gif(epoch_logger.frames, workdir / "tsne_evolution.gif"))

    work.submit(gif)
    n = min(options.tsne_final_points, len(data.val_x))
    if n:
        x = model_inputs(data.val_x[:n].to(model.train_bias.device), model.config.binarize)
        features = model.latent_features(x).cpu().numpy()

        def final() -> None:
            log_artifact(run_id, save_tsne(features, data.val_y[:n].cpu().numpy(), workdir / "tsne_final.png",
                                           title=f"latent features of {n} validation images (the chosen checkpoint)",
                                           seed=model.config.seed))

        work.submit(final)
