"""Command line: `qvae fetch | train | run | generate | evaluate` (also `python -m qvae`).

Every Config field is a flag of `qvae train` (`--num-visible 64`), so the CLI, the JSON config,
and later the MLflow params all speak the same names.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from qvae.config import Config, ConfigError, JobOptions


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, title: str, prefix: str = "",
                        skip: tuple[str, ...] = (), defaults: dict[str, Any] | None = None) -> None:
    """One `--field-name` flag per dataclass field (dest `prefix + name`, None when not given).

    Flags left out stay None, so `picked_flags` returns only what the user set and the
    dataclass (or a config file) supplies the rest. Tuple fields take several integers.
    """
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = (defaults or {}).get(f.name, f.default)
        flag, dest = f"--{f.name.replace('_', '-')}", f"{prefix}{f.name}"
        if isinstance(default, tuple):
            group.add_argument(flag, dest=dest, type=int, nargs="*", default=None, help=f"default: {default}")
        else:
            group.add_argument(flag, dest=dest, type=type(default), default=None,
                               metavar=type(default).__name__.upper(), help=f"default: {default!r}")


def picked_flags(args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    """The flags with `prefix` that were given, by field name."""
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    add_dataclass_flags(parser, Config, "hyperparameters (defaults are the seed's)", prefix="cfg_")


def config_from_args(args: argparse.Namespace) -> Config:
    base = Config.load(args.config) if getattr(args, "config", None) else Config()
    return base.replace(**picked_flags(args, "cfg_"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qvae", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    fetch = sub.add_parser("fetch", help="download and verify MNIST into the data directory")
    fetch.add_argument("--data-dir", default="data")

    train = sub.add_parser("train", help="train one QVAE; writes checkpoints, summary.json and PNG grids")
    train.add_argument("--output-dir", default="outputs", help="where checkpoints and pictures go")
    train.add_argument("--config", help="JSON file of config fields; flags override it")
    train.add_argument("--resume", help="checkpoint to continue from (e.g. outputs/checkpoints/last.pt)")
    train.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_config_flags(train)

    run = sub.add_parser("run", help="the main job (what `mlflow run .` executes): train, evaluate and "
                                     "log everything to MLflow")
    run.add_argument("--config", help="JSON file of config fields; flags override it")
    _add_job_flags(run)
    _add_config_flags(run)

    gen = sub.add_parser("generate", help="generate digits from a logged or registered model")
    gen.add_argument("--model", required=True,
                     help="MLflow model URI: models:/qvae-mnist@champion, models:/qvae-mnist/3, runs:/<id>/model, a path")
    gen.add_argument("--num-images", type=int, default=64)
    gen.add_argument("--seed", type=int, default=0, help="the same seed gives the same images")
    gen.add_argument("--sweeps", type=int, default=None,
                     help="Gibbs burn-in of the prior per image (default or -1: the model's own, which gave its "
                          "logged FID)")
    gen.add_argument("--output", default="samples.png", help="a PNG grid, a .npy file, or a folder of PNGs")
    gen.add_argument("--format", choices=("png", "npy", "png-dir"), default=None,
                     help="default: from --output (.npy -> npy, .png -> png, otherwise png-dir)")
    gen.add_argument("--device", default="auto")

    ev = sub.add_parser("evaluate", help="score a logged or registered model: FID/KID, test NLL, latent accuracy")
    ev.add_argument("--model", required=True, help="MLflow model URI (as for generate) or a local model path")
    ev.add_argument("--data-dir", default="data", help="MNIST (fetched if missing)")
    ev.add_argument("--fid-samples", type=int, default=10_000, help="generated vs test images (0 skips FID/KID)")
    ev.add_argument("--fid-batch-size", type=int, default=100)
    ev.add_argument("--nll-samples", type=int, default=1000, help="importance samples per image (0 skips the NLL)")
    ev.add_argument("--nll-images", type=int, default=0, help="test images for the NLL (0: all 10 000)")
    ev.add_argument("--nll-ais-chains", type=int, default=1000)
    ev.add_argument("--nll-ais-betas", type=int, default=1000)
    ev.add_argument("--probe-epochs", type=int, default=100, help="latent-probe MLP epochs (0 skips it)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the NLL's samples and the probe")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--output", help="also write the scores as JSON to this file")
    ev.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def _add_job_flags(parser: argparse.ArgumentParser) -> None:
    add_dataclass_flags(parser, JobOptions, "main job (MLflow)", prefix="job_", skip=("progress", "extra_tags"))
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def cmd_fetch(args: argparse.Namespace) -> int:
    from qvae.data.fetch import ensure_mnist

    source = ensure_mnist(Path(args.data_dir))
    print(json.dumps({"source": source.name, "raw_dir": str(source.raw_dir), **dict(source.md5)}, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from qvae.data.mnist import load_mnist_for
    from qvae.train import DivergenceError, train

    config = config_from_args(args)  # validated before anything is written or downloaded
    _check_data_dir(config.data_dir)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_mnist_for(config)
    started = time.perf_counter()
    try:
        result = train(config, data, checkpoint_dir=out / "checkpoints", resume_from=args.resume,
                       progress=not args.no_progress)
    except DivergenceError as err:
        print(f"qvae train: error: the run diverged: {err}", file=sys.stderr)
        return 3
    from qvae.plots import write_pictures

    pictures = write_pictures(result.model, data.test_x, result.history, out, seed=config.seed)
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
    options = JobOptions(**picked_flags(args, "job_"), progress=not args.no_progress)
    options.validate(config)  # before MLflow is even imported: bad input records nothing
    _check_data_dir(config.data_dir)

    from qvae.tracking.job import run_main_job
    from qvae.train import DivergenceError

    try:
        result = run_main_job(config, options)
    except DivergenceError as err:
        print(f"qvae run: error: the run diverged and is marked FAILED: {err}", file=sys.stderr)
        return 3
    print(f"MLflow run {result.run_id} finished")
    return 0


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

    if args.sweeps == -1:
        args.sweeps = None
    fmt = args.format or ("npy" if args.output.endswith(".npy") else "png" if args.output.endswith(".png")
                          else "png-dir")
    try:
        generator = load_generator(args.model, device=args.device)
        images = generator.generate(args.num_images, seed=args.seed, sweeps=args.sweeps)
    except (ModelNotFoundError, ValueError) as err:
        print(f"qvae generate: error: {err}", file=sys.stderr)
        return 2
    path = write_images(images, Path(args.output), fmt)
    print(f"wrote {args.num_images} images from {args.model} (seed {args.seed}, sweeps "
          f"{args.sweeps if args.sweeps is not None else generator.default_sweeps}) to {path}")
    if os.environ.get("MLFLOW_RUN_ID"):  # launched by `mlflow run . -e generate`: keep the result
        import mlflow

        from qvae.tracking.store import store_write, tracked_run

        with tracked_run():
            if path.is_file():
                store_write(mlflow.log_artifact, str(path))
            else:
                store_write(mlflow.log_artifacts, str(path), path.name)
    return 0


SCORE_FLAGS = ("fid_samples", "fid_batch_size", "nll_samples", "nll_images", "nll_ais_chains", "nll_ais_betas",
               "probe_epochs")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Load any logged model and print (and optionally save) its FID/KID, test NLL and latent accuracy."""
    JobOptions(**{name: getattr(args, name) for name in SCORE_FLAGS}).validate(Config())  # 10 000 test images

    from qvae.data.mnist import load_mnist
    from qvae.metrics.scores import ScoreSettings, final_scores, score_details
    from qvae.tracking.loading import ModelNotFoundError, load_generator

    try:
        model = load_generator(args.model, device=args.device).model
    except (ModelNotFoundError, TypeError, ValueError) as err:
        print(f"qvae evaluate: error: {err}", file=sys.stderr)
        return 2
    config = model.config
    data = load_mnist(args.data_dir, binarize=config.binarize, seed=config.seed)  # as the model was trained
    settings = ScoreSettings(**{name: getattr(args, name) for name in SCORE_FLAGS}, seed=args.seed)
    started = time.perf_counter()
    scores = final_scores(model, data, settings, progress=not args.no_progress)
    report = {"model": args.model, "prior": config.prior, "gamma": config.gamma,
              "device": str(model.train_bias.device), "settings": dataclasses.asdict(settings),
              "metrics": scores["metrics"], "seconds": time.perf_counter() - started, **score_details(scores)}
    print(format_scores(report))
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.output}")
    return 0


def format_scores(report: dict[str, Any]) -> str:
    """A two-column table of a `cmd_evaluate` report."""
    m = report["metrics"]
    rows = [("model", report["model"]), ("prior", f"{report['prior']} (gamma {report['gamma']:g})"),
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
    try:
        return COMMANDS[args.command](args)
    except ConfigError as err:
        parser.error(str(err))  # exits with status 2 and the message naming the field
    except KeyboardInterrupt:
        print("interrupted; the last completed epoch's checkpoint is kept", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
