"""The study's pictures and trial table, logged to the parent MLflow run."""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from qvae.tracking.store import store_write  # noqa: E402
from tuning.objective import PRUNING_QUANTITY, RUN_ID_ATTR  # noqa: E402

log = logging.getLogger(__name__)

PLOTS = {
    "optimization_history.png": optuna.visualization.matplotlib.plot_optimization_history,
    "param_importances.png": optuna.visualization.matplotlib.plot_param_importances,
    "parallel_coordinate.png": optuna.visualization.matplotlib.plot_parallel_coordinate,
    "intermediate_values.png": optuna.visualization.matplotlib.plot_intermediate_values,
}


def value_is(trial: optuna.trial.FrozenTrial, objective: str) -> str:
    """What a trial's value measures: the objective for a complete trial; for a pruned one the
    per-epoch quantity the pruner watched, at the epoch it stopped (Optuna stores that as its value)."""
    if trial.state == TrialState.PRUNED and trial.intermediate_values:
        return f"{PRUNING_QUANTITY} at epoch {max(trial.intermediate_values)} (pruned)"
    return objective if trial.state == TrialState.COMPLETE else ""


def log_study_report(study: optuna.Study, objective: str) -> None:
    """trials.csv (with `value_is`: what each value measures), the study plots (PNG) and the best
    trial's summary on the active run."""
    with tempfile.TemporaryDirectory(prefix="qvae-study-") as tmp:
        table = Path(tmp) / "trials.csv"
        frame = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs", "duration",
                                              "datetime_start", "datetime_complete"))
        if len(frame):
            by_number = {t.number: t for t in study.trials}
            frame.insert(2, "value_is", [value_is(by_number[n], objective) for n in frame["number"]])
        frame.to_csv(table, index=False)
        store_write(mlflow.log_artifact, str(table))
        complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
        for name, plot in PLOTS.items():
            if name == "param_importances.png" and len(complete) < 2:
                continue  # importances need at least two completed trials
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # optuna marks its matplotlib API experimental
                    axes = plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as err:
                log.warning("study plot %s skipped: %s", name, err)
                continue
            first = axes.flat[0] if hasattr(axes, "flat") else axes
            if name == "intermediate_values.png":
                first.set_ylabel(f"{PRUNING_QUANTITY} (nats), what the pruner compares")
            elif name == "optimization_history.png":  # complete trials only: their values are the objective
                first.set_ylabel(objective)
            figure = first.figure
            figure.set_size_inches(9, 5.5)
            figure.tight_layout()
            figure.savefig(Path(tmp) / name, dpi=110)
            plt.close(figure)
            store_write(mlflow.log_artifact, str(Path(tmp) / name), artifact_path="study_plots")
    counts = {state.name.lower(): sum(t.state == state for t in study.trials)
              for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    store_write(mlflow.log_metrics, {f"trials_{k}": v for k, v in counts.items()})
    if complete:
        best = study.best_trial
        store_write(mlflow.log_metric, "best_value", best.value)
        store_write(mlflow.set_tags, {"best_trial_number": str(best.number),
                                      "best_trial_run_id": str(best.user_attrs.get(RUN_ID_ATTR)),
                                      **{f"best_param.{k}": str(v) for k, v in best.params.items()}})
