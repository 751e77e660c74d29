"""The study's champion scored on the test split, once: the only place a study reads test images.

Trials choose on validation images only (tuning/objective.py). After the study, the best trial's
logged model is scored on the test split with the trials' score settings; the scores go to that
trial's run (tagged, so a resumed study never scores it again) and to the study's parent run as
`champion_*`, and the caller puts them on the registered version.
"""

from __future__ import annotations

import logging
import time

import mlflow
import optuna
from mlflow import MlflowClient

from qvae.config import ScoreSettings
from qvae.data.mnist import MnistData
from qvae.metrics.scores import final_scores
from qvae.tracking.loading import load_generator
from qvae.tracking.store import store_write
from tuning.objective import MODEL_URI_ATTR, RUN_ID_ATTR
from tuning.registry import best_trial

log = logging.getLogger(__name__)
TEST_SCORED_TAG = "qvae.test_scored"  # "true" on a trial's run once its test scores are logged


def score_champion(study: optuna.Study, data: MnistData, settings: ScoreSettings, seed: int = 0,
                   progress: bool = False, client: MlflowClient | None = None) -> dict[str, float]:
    """The best trial's test scores: computed and logged the first time, read back afterwards
    ({} when no trial completed)."""
    client = client or MlflowClient()
    best = best_trial(study)
    if best is None:
        return {}
    run_id = best.user_attrs[RUN_ID_ATTR]
    run = client.get_run(run_id)
    if run.data.tags.get(TEST_SCORED_TAG) == "true":  # a resumed study: the test split was read already
        return {k: v for k, v in run.data.metrics.items() if k in run.data.tags.get("qvae.test_metrics", "").split()}
    log.info("scoring the champion (trial %d, run %s) on the test split", best.number, run_id)
    model = load_generator(best.user_attrs[MODEL_URI_ATTR]).model
    scores = final_scores(model, data, settings, split="test", seed=seed, progress=progress)["metrics"]
    now = int(time.time() * 1000)
    store_write(client.log_batch, run_id, metrics=[mlflow.entities.Metric(k, v, now, 0) for k, v in scores.items()])
    store_write(client.set_tag, run_id, "qvae.test_metrics", " ".join(sorted(scores)))
    store_write(client.set_tag, run_id, TEST_SCORED_TAG, "true")
    return scores
