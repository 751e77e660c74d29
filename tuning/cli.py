"""`python -m tuning` (and `mlflow run . -e tune`): an Optuna study of QVAE hyperparameters.

Flags: the study (name, storage, sampler, pruner, trials, workers, objective, registry), the
search space (or `--space FILE.json`), the per-trial job (FID samples, pictures) and any `qvae
train` hyperparameter, which stays fixed for every trial.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from qvae.cli import _add_config_flags, config_from_args
from qvae.config import ConfigError, JobOptions

from .space import SearchSpace
from .study import StudySettings, WorkerSpec, run_study, run_worker

# Per-trial job defaults: cheaper pictures than the main job, FID on 1000 samples.
TRIAL_DEFAULTS = {"fid_samples": 1000, "tsne_interval": 0, "tsne_final_points": 0}


def _add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, prefix: str, title: str,
                         skip: tuple[str, ...] = (), defaults: dict[str, Any] | None = None) -> None:
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = (defaults or {}).get(f.name, f.default)
        if isinstance(default, tuple):
            group.add_argument(f"--{f.name.replace('_', '-')}", dest=f"{prefix}{f.name}", type=int, nargs="*",
                               default=None, help=f"default: {default}")
            continue
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f"{prefix}{f.name}", type=type(default),
                           default=None, metavar=type(default).__name__.upper(), help=f"default: {default!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tuning", description=__doc__.splitlines()[0])
    parser.add_argument("--space", help="JSON file of search-space fields; flags override it")
    parser.add_argument("--config", help="JSON file of fixed config fields; flags override it")
    parser.add_argument("--no-progress", action="store_true")
    _add_dataclass_flags(parser, StudySettings, "study_", "study", skip=("extra",))
    _add_dataclass_flags(parser, SearchSpace, "space_", "search space")
    _add_dataclass_flags(parser, JobOptions, "job_", "each trial's job",
                         skip=("progress", "extra_tags", "register_model", "experiment_name", "output_dir"),
                         defaults=TRIAL_DEFAULTS)
    _add_config_flags(parser)
    return parser


def _picked(args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:  # internal: one worker process of a multi-process study
        run_worker(WorkerSpec(**json.loads(Path(argv[1]).read_text())))
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.latent_dim is not None and args.num_visible is None and args.num_hidden is None:
        # the space chooses the split; start from an even one so the base config is valid
        args.num_visible, args.num_hidden = args.latent_dim // 2, args.latent_dim - args.latent_dim // 2
    try:
        config = config_from_args(args)
        space_values = _picked(args, "space_")
        space = SearchSpace.load(args.space, **space_values) if args.space else SearchSpace(**space_values)
        if "latent_total" not in space_values and not (args.space and "latent_total" in json.loads(Path(args.space).read_text())):
            space = dataclasses.replace(space, latent_total=config.latent_dim)
        settings = StudySettings(**_picked(args, "study_"))
        settings.validate()
        options = JobOptions(**{**TRIAL_DEFAULTS, **_picked(args, "job_")}, progress=not args.no_progress)
        options.validate(config)
    except ConfigError as err:
        parser.error(str(err))
    study = run_study(settings, config, space, options)
    finished = [t for t in study.trials if t.state.is_finished()]
    print(f"study {settings.study_name}: {len(finished)} finished trials", end="")
    try:
        print(f", best value {study.best_value:.4f} (trial {study.best_trial.number}: {study.best_params})")
    except ValueError:
        print(", none completed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
