"""benchmarks/compare.py end to end on a tiny budget, without MLflow or Optuna on its import path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN = """
import sys
sys.path.insert(0, {bench!r})
import compare
rc = compare.main(sys.argv[1:])
assert "mlflow" not in sys.modules and "optuna" not in sys.modules, "compare.py imported mlflow/optuna"
sys.exit(rc)
"""


def compare(*args: str) -> subprocess.CompletedProcess:
    code = RUN.format(bench=str(REPO / "benchmarks"))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600, cwd=REPO)


@pytest.mark.slow
def test_trains_both_models_then_rescores_from_checkpoints(mnist_dir, tmp_path):
    common = ["--data-dir", str(mnist_dir), "--test-size", "200", "--device", "cpu", "--fid-samples", "0",
              "--nll-samples", "5", "--nll-images", "50", "--probe-epochs", "1", "--no-progress"]
    proc = compare("--epochs", "1", "--train-size", "512", "--output-dir", str(tmp_path), *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "QVAE (RBM 128x128)" in proc.stdout and "Gaussian VAE (256-d)" in proc.stdout
    first = json.loads((tmp_path / "results.json").read_text())
    assert set(first["models"]) == {"qvae", "gaussian"}
    assert (tmp_path / "qvae" / "last.pt").exists() and (tmp_path / "gaussian" / "last.pt").exists()
    proc = compare("--evaluate-only", str(tmp_path), *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((tmp_path / "results.json").read_text())
    for name in ("qvae", "gaussian"):  # same checkpoints, settings and seed: the same scores
        assert again["models"][name]["metrics"] == pytest.approx(first["models"][name]["metrics"], rel=1e-5)
        assert again["models"][name]["seconds_per_epoch"] == first["models"][name]["seconds_per_epoch"]
