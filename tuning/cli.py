"""`python -m tuning` (and `mlflow run . -e tune`): an Optuna study of QVAE hyperparameters.

Flags: the study (name, storage, sampler, pruner, trials, workers, objective, registry), the
search space (or `--space FILE.json`), the per-trial job (FID samples, pictures) and any `qvae
train` hyperparameter, which stays fixed for every trial.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from qvae.cli import add_config_flags, add_job_flags, config_from_args
from qvae.config import ConfigError, JobOptions
from qvae.memory import check_memory
from qvae.settings import add_flags, picked_flags
from qvae.stopping import exit_code, stop_on_sigterm
from qvae.train import resolve_device
from tuning.objective import check_objective
from tuning.space import SearchSpace, check_base_config
from tuning.study import TRIAL_DEFAULTS, TRIAL_FIXED, StudySettings, WorkerSpec, run_study, run_worker


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tuning", description=__doc__.splitlines()[0])
    parser.add_argument("--space", help="JSON file of search-space fields; flags override it")
    parser.add_argument("--config", help="JSON file of fixed config fields; flags override it")
    parser.add_argument("--no-progress", action="store_true")
    add_flags(parser, StudySettings, "study", "study_", skip=("extra",))
    add_flags(parser, SearchSpace, "search space", "space_")
    add_job_flags(parser, skip=TRIAL_FIXED, title="each trial's job", defaults=TRIAL_DEFAULTS)
    add_config_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    stop_on_sigterm()  # a stopped coordinator still registers its best finished trial; a stopped worker fails its trial
    if argv[:1] == ["worker"]:  # internal: one worker process of a multi-process study
        try:
            run_worker(WorkerSpec(**json.loads(Path(argv[1]).read_text())))
        except KeyboardInterrupt as interrupt:  # its trial is FAIL and its run KILLED; the coordinator goes on
            return exit_code(interrupt)
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cfg_latent_dim is not None and args.cfg_num_visible is None and args.cfg_num_hidden is None:
        # the space chooses the split; start from an even one so the base config is valid
        half = args.cfg_latent_dim // 2
        args.cfg_num_visible, args.cfg_num_hidden = half, args.cfg_latent_dim - half
    try:
        config = config_from_args(args)
        check_base_config(config)
        space = SearchSpace.resolve(args.space, picked_flags(args, "space_"), config.latent_dim)
        settings = StudySettings(**picked_flags(args, "study_"))
        settings.validate()
        options = JobOptions(**{**TRIAL_DEFAULTS, **picked_flags(args, "job_")}, progress=not args.no_progress)
        options.validate(config, "validation")  # what the trials score
        options.validate(config, "test")  # the champion, once
        check_objective(settings.objective, options)
        check_memory(config, resolve_device(config.device).type, options.score_settings(), tracked=True)
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
