"""The memory preflight: the parameter count is torch's, the estimate is never below a measured
peak, and a configuration that cannot fit is refused in one line before anything runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qvae.cli import main
from qvae.config import Config, ConfigError, ScoreSettings
from qvae.memory import GIB, check_memory, estimate_peak, fid_bytes, parameter_count
from qvae.models.build import build_model

# The child's own peak: VmHWM belongs to the process's address space, new at exec. (getrusage's
# ru_maxrss is not: Linux keeps the parent's peak across fork and exec, so a large test runner
# would be measured instead.)
MEASURE = """
import sys
from qvae.cli import main
code = main(sys.argv[1:])
with open("/proc/self/status") as status:
    print("PEAK_KIB", next(line.split()[1] for line in status if line.startswith("VmHWM:")))
sys.exit(code)
"""
SIZES = [  # hidden_dim, batch_size, train_size: the default widths, a wide batch, a large model
    (512, 256, 5000),
    (4096, 512, 2000),
    (16384, 256, 2000),
]


@pytest.mark.parametrize("changes", [{}, {"prior": "gaussian"}, {"hidden_dim": 64, "latent_dim": 16,
                                                                  "num_visible": 8, "num_hidden": 8},
                                     {"hidden_layers": 2}, {"prior": "gaussian", "hidden_layers": 3}])
def test_the_parameter_count_is_torchs(changes):
    config = Config(**changes)
    assert parameter_count(config) == sum(p.numel() for p in build_model(config).parameters())


@pytest.mark.parametrize("hidden_dim,batch_size,train_size", SIZES)
def test_the_estimate_is_never_below_the_measured_peak(hidden_dim, batch_size, train_size, mnist_dir, tmp_path):
    flags = ["train", "--data-dir", str(mnist_dir), "--epochs", "1", "--train-size", str(train_size),
             "--validation-size", "1000", "--test-size", "1000", "--hidden-dim", str(hidden_dim),
             "--batch-size", str(batch_size),
             "--device", "cpu", "--log-z-betas", "50", "--output-dir", str(tmp_path), "--no-progress"]
    done = subprocess.run([sys.executable, "-c", MEASURE, *flags], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    peak = int(done.stdout.split("PEAK_KIB")[1].split()[0]) * 1024
    config = Config(hidden_dim=hidden_dim, batch_size=batch_size, train_size=train_size,
                    validation_size=1000, test_size=1000,
                    epochs=1, device="cpu", log_z_betas=50)
    estimate = estimate_peak(config).total
    print(f"hidden {hidden_dim} batch {batch_size}: estimate {estimate / GIB:.2f} GiB, measured {peak / GIB:.2f} GiB")
    assert estimate >= peak
    assert estimate <= 3 * peak  # conservative, not absurd


def test_a_run_that_cannot_fit_is_refused_naming_its_sizes():
    config = Config(hidden_dim=100_000, batch_size=1024)
    with pytest.raises(ConfigError, match=r"needs about .* GiB at its peak but the machine has 1\.0 GiB") as refused:
        check_memory(config, "cpu", ScoreSettings(), available=GIB)
    assert "hidden_dim 100000" in str(refused.value) and "batch_size 1024" in str(refused.value)
    with pytest.raises(ConfigError, match="fid_batch_size 5000"):
        check_memory(Config(), "cpu", ScoreSettings(fid_batch_size=5000), available=8 * GIB)
    check_memory(Config(), "cpu", available=64 * GIB)  # the defaults fit in 64 GiB


def test_the_cli_refuses_a_model_larger_than_this_machine_in_one_line(capsys, mnist_dir, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data-dir", str(mnist_dir), "--hidden-dim", "5000000", "--output-dir", str(tmp_path)])
    message = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "needs about" in message and "hidden_dim 5000000" in message and "Traceback" not in message
    assert not list(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.slow  # Inception on 200 images on a CPU: about a minute (make test PYTEST_ARGS="-m slow")
@pytest.mark.reference_classifier
def test_the_estimate_with_fid_covers_a_scored_tracked_run(mnist_dir, inception_cache, tmp_path):
    """`qvae run` with FID (Inception on CPU, class coverage) under a real MLflow store: the estimate
    with its FID and MLflow parts is not below the measured peak (measured: 2.70 GiB on the project's AMD
    EPYC, 3.55 GiB on CI's machine, which the estimate of 3.49 GiB before the FID part grew with the batch
    failed to cover)."""
    import os

    flags = ["run", "--data-dir", str(mnist_dir), "--epochs", "1", "--train-size", "2000", "--validation-size", "1000",
             "--test-size", "1000", "--device", "cpu", "--log-z-betas", "50", "--fid-samples", "100",
             "--fid-batch-size", "100", "--tsne-interval", "0", "--tsne-final-points", "0",
             "--output-dir", str(tmp_path / "out"), "--no-progress"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "QVAE_CACHE_DIR": str(inception_cache), "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run([sys.executable, "-c", MEASURE, *flags], capture_output=True, text=True, timeout=900,
                          env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    peak = int(done.stdout.split("PEAK_KIB")[1].split()[0]) * 1024
    config = Config(train_size=2000, validation_size=1000, test_size=1000, epochs=1, device="cpu", log_z_betas=50)
    estimate = estimate_peak(config, ScoreSettings(fid_samples=100, fid_batch_size=100), tracked=True)
    print(f"with FID: estimate {estimate.total / GIB:.2f} GiB ({estimate.describe()}), measured {peak / GIB:.2f} GiB")
    assert estimate.total >= peak
    assert estimate.total <= 3 * peak


# Inception alone in a fresh process: the peak above what the process held before loading it.
# Writing 5 to clear_refs resets VmHWM to the current resident size (Linux >= 4.0).
INCEPTION_PEAK = """
import sys, torch
from qvae.metrics.fid import InceptionFeatures

def status(key):
    with open("/proc/self/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith(key))) * 1024

batch, cache = int(sys.argv[1]), sys.argv[2]
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS:")
network = InceptionFeatures(cache_dir=cache)
with torch.no_grad():
    for _ in range(2):
        network(torch.rand(batch, 1, 28, 28))
print("INCEPTION_PEAK", status("VmHWM:") - before)
"""


@pytest.mark.slow  # two Inception batches of up to 200 images on a CPU: about 30 s
@pytest.mark.parametrize("batch", [25, 200])
def test_the_fid_part_grows_with_the_inception_batch_and_covers_its_measured_peak(batch, inception_cache):
    """The FID part is not below what Inception adds to a process at this batch size (measured on the
    project's AMD EPYC: 0.62 GiB at 25 images, 3.17 GiB at 200), nor absurdly above it."""
    done = subprocess.run([sys.executable, "-c", INCEPTION_PEAK, str(batch), str(inception_cache)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    added = int(done.stdout.split("INCEPTION_PEAK")[1].split()[0])
    print(f"Inception batch {batch}: estimate {fid_bytes(batch) / GIB:.2f} GiB, measured {added / GIB:.2f} GiB")
    assert added <= fid_bytes(batch) <= 3 * added
