"""A fixed-seed main-job run and a one-trial study, through the CLI, with their metrics as JSON.

Recorded once before the relayout (`python -m tests.fixed_seed record`); the relayout, and any
later change that claims to change no number, must reproduce them bit for bit on the same machine
and torch version. A change that moves numbers on purpose records them again and says why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RUN_FLAGS = ["--epochs", "2", "--train-size", "5000", "--validation-size", "1000", "--test-size", "1000",
             "--device", "cpu", "--seed", "0",
             "--tsne-interval", "0", "--tsne-final-points", "0", "--nll-samples", "10", "--nll-images", "100",
             "--nll-ais-chains", "50", "--nll-ais-betas", "50", "--probe-epochs", "2", "--no-progress"]
FID_FLAGS = ["--fid-samples", "200", "--fid-batch-size", "100"]
TRIAL_FLAGS = ["--n-trials", "1", "--workers", "1", "--objective", "val_neg_elbo", "--epochs", "2",
               "--train-size", "1000", "--validation-size", "300", "--test-size", "300",
               "--hidden-dim", "64", "--latent-dim", "16",
               "--batch-size", "50", "--sampler-chains", "32", "--log-z-betas", "20", "--log-z-chains", "16",
               "--generate-sweeps", "10", "--fid-samples", "0", "--visible-min", "4", "--visible-step", "4",
               "--device", "cpu", "--seed", "0", "--no-progress", "--register-model", ""]
TIMINGS = ("seconds", "_time", "duration")  # wall-clock figures: not part of the numbers


def _numbers(metrics: dict[str, float]) -> dict[str, float]:
    from qvae.timing import is_wall_clock

    return {k: v for k, v in sorted(metrics.items()) if not any(t in k for t in TIMINGS) and not is_wall_clock(k)}


def _env(store: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k != "PYTEST_CURRENT_TEST"}
    return {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}", "MLFLOW_DISABLE_TELEMETRY": "true",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _finished_runs(store: Path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs and all(r.info.status == "FINISHED" for r in runs), [(r.info.run_id, r.info.status) for r in runs]
    return runs


def run_metrics(data_dir: Path, fid: bool = False) -> dict[str, float]:
    """The final metrics of `qvae run` with RUN_FLAGS (and FID on 200 samples if `fid`)."""
    with tempfile.TemporaryDirectory(prefix="qvae-fixed-seed-") as tmp:
        store = Path(tmp)
        command = [sys.executable, "-m", "qvae", "run", "--data-dir", str(data_dir), *RUN_FLAGS,
                   *(FID_FLAGS if fid else ["--fid-samples", "0"])]
        done = subprocess.run(command, env=_env(store), cwd=store, capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        (run,) = _finished_runs(store)
        return _numbers(run.data.metrics)


def trial_metrics(data_dir: Path) -> dict[str, float]:
    """The one trial's child-run metrics and objective value of `python -m tuning` with TRIAL_FLAGS."""
    with tempfile.TemporaryDirectory(prefix="qvae-fixed-trial-") as tmp:
        store = Path(tmp)
        command = [sys.executable, "-m", "tuning", "--study-name", "fixed", "--storage", f"journal:{store / 'j.log'}",
                   "--data-dir", str(data_dir), *TRIAL_FLAGS]
        done = subprocess.run(command, env=_env(store), cwd=store, capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        (child,) = [r for r in _finished_runs(store) if "mlflow.parentRunId" in r.data.tags]
        return {**_numbers(child.data.metrics), **{f"param.{k}": float(v) for k, v in sorted(child.data.params.items())
                                                   if k in ("num_visible", "num_hidden", "dist_beta", "kl_beta")}}


def fixture(name: str) -> dict[str, float]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


RECORDINGS = {"fixed_seed_run": lambda d: run_metrics(d), "fixed_seed_trial": lambda d: trial_metrics(d),
              "fixed_seed_run_fid": lambda d: run_metrics(d, fid=True)}


def record(data_dir: Path, names: list[str] | None = None) -> None:
    """Record the named fixtures (default: all) anew."""
    FIXTURES.mkdir(exist_ok=True)
    for name in names or list(RECORDINGS):
        metrics = RECORDINGS[name](data_dir)
        (FIXTURES / f"{name}.json").write_text(json.dumps(metrics, indent=1) + "\n")
        print(f"recorded {name}: {len(metrics)} numbers")


if __name__ == "__main__":
    if sys.argv[1:2] != ["record"]:
        sys.exit(f"usage: python -m tests.fixed_seed record [DATA_DIR [{' '.join(RECORDINGS)}]]")
    record(Path(sys.argv[2]) if len(sys.argv) > 2 else Path(".cache/test-data"), sys.argv[3:])
