"""Command line: `qvae fetch | train` (also `python -m qvae`).

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

import torch

from .config import Config, ConfigError


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("hyperparameters (defaults are the seed's)")
    for f in dataclasses.fields(Config):
        kind = type(f.default)
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, default=None,
                           metavar=kind.__name__.upper(), help=f"default: {f.default}")


def config_from_args(args: argparse.Namespace) -> Config:
    base = Config.load(args.config) if getattr(args, "config", None) else Config()
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
                 if getattr(args, f.name, None) is not None}
    return base.replace(**overrides)


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
    return parser


def cmd_fetch(args: argparse.Namespace) -> int:
    from .data import ensure_mnist

    source = ensure_mnist(Path(args.data_dir))
    print(json.dumps({"source": source.name, "raw_dir": str(source.raw_dir), **dict(source.md5)}, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .data import load_mnist
    from .train import train

    config = config_from_args(args)  # validated before anything is written or downloaded
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_mnist(config.data_dir, train_size=config.train_size or None,
                      test_size=config.test_size or None, binarize=config.binarize, seed=config.seed)
    started = time.perf_counter()
    result = train(config, data, checkpoint_dir=out / "checkpoints", resume_from=args.resume,
                   progress=not args.no_progress)
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


def write_pictures(model: Any, test_x: torch.Tensor, history: list[dict[str, float]], out: Path,
                   seed: int = 0, n: int = 64) -> dict[str, Path]:
    """original.png, reconstruction.png, generated.png (8x8 grids) and training_curves.png."""
    from .plots import save_grid, save_training_curves

    model.eval()
    device = model.train_bias.device
    gen = torch.Generator(device=device).manual_seed(seed)
    originals = test_x[:n].to(device)
    paths = {
        "original": save_grid(originals, out / "original.png"),
        "reconstruction": save_grid(model.reconstruct(originals, gen), out / "reconstruction.png"),
        "generated": save_grid(model.generate(n, generator=gen), out / "generated.png"),
    }
    if history:
        paths["training_curves"] = save_training_curves(history, out / "training_curves.png")
    return paths


COMMANDS = {"fetch": cmd_fetch, "train": cmd_train}


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
