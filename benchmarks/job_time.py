"""Where the main job's wall clock goes: run `qvae run` once and print its phase table.

--full runs every MLproject default of `mlflow run .` (20 epochs, t-SNE every epoch on 2 000
points and a final one on 10 000, FID on 10 000 samples, NLL with K = 1000 on all 10 000 test
images with AIS 1000 x 1000, a 100-epoch probe): the GPU figure. Without it, the reduced settings
below (stated in the output) keep a 2-core CPU run to a few minutes. The table comes from the
run's own `time_<phase>` metrics, in a throw-away SQLite store.

    python benchmarks/job_time.py [--full] [--device auto] [--data-dir data]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from common import hardware

REDUCED = dict(epochs=2, train_size=10_000, fid_samples=1_000, nll_samples=100, nll_images=500, nll_ais_chains=200,
               nll_ais_betas=200, probe_epochs=5, tsne_points=1_000, tsne_final_points=2_000)
FULL = dict(nll_samples=1_000, nll_images=0, nll_ais_chains=1_000, nll_ais_betas=1_000, probe_epochs=100)
PHASES = ("data", "train", "elbo", "generate", "fid", "classes", "nll", "probe", "tsne", "pictures", "model",
          "cpu_wait", "tsne_beside")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="every MLproject default (the GPU benchmark)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", default=os.environ.get("QVAE_DATA_DIR", "data"))
    args = parser.parse_args()
    settings = FULL if args.full else REDUCED

    with tempfile.TemporaryDirectory(prefix="qvae-job-time-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        from dataclasses import fields

        import mlflow

        from qvae.config import Config, JobOptions
        from qvae.tracking.job import run_main_job

        values = {**settings, "device": args.device, "data_dir": args.data_dir}
        names = {f.name for f in fields(Config)}
        config_values = {k: v for k, v in values.items() if k in names}
        option_values = {k: v for k, v in values.items() if k not in names}
        start = time.perf_counter()
        # artifacts into the throw-away folder too (a SQLite store's default experiment writes ./mlruns)
        mlflow.MlflowClient().create_experiment("job-time", artifact_location=Path(tmp, "artifacts").as_uri())
        result = run_main_job(Config(**config_values),
                              JobOptions(**option_values, experiment_name="job-time", progress=False))
        wall = time.perf_counter() - start
        run = mlflow.get_run(result.run_id)
        client = mlflow.MlflowClient()
        epochs = [m.value for m in client.get_metric_history(result.run_id, "epoch_seconds")]
        mfu = [m.value for m in client.get_metric_history(result.run_id, "flops_utilisation")]

    device = run.data.params.get("device_used", args.device)
    hw = hardware(device)
    metrics = run.data.metrics
    print(f"# main job, {'every MLproject default' if args.full else 'reduced: ' + str(settings)}")
    print(f"# {device} ({hw}) | torch {torch.__version__} | {wall:.1f} s in run_main_job")
    print(f"{'phase':28s} {'seconds':>8s}")
    for phase in PHASES:
        key = f"time_{phase}"
        if key in metrics:
            label = phase + (" (overlapped)" if phase == "tsne_beside" else "")
            print(f"{label:28s} {metrics[key]:8.1f}")
    print(f"{'total (run wall clock)':28s} {metrics['time_total']:8.1f}")
    print(f"seconds per epoch: {' '.join(f'{s:.2f}' for s in epochs)}")
    if mfu:
        print(f"flops_utilisation per epoch: {' '.join(f'{u:.3f}' for u in mfu)}")


if __name__ == "__main__":
    main()
