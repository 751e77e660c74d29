"""benchmarks/nll_memory.py on a tiny trained model: handing freed memory back changes no estimate."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from qvae.config import Config
from qvae.train import LAST_CHECKPOINT, train
from tests.test_train import SMALL

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "nll_memory.py"


def nll_memory(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_every_release_setting_gives_the_same_nll_and_a_bad_one_is_refused(small_data, mnist_dir, tmp_path):
    train(Config(epochs=1, **SMALL), small_data, checkpoint_dir=tmp_path, progress=False)
    common = [str(tmp_path / LAST_CHECKPOINT), "--data-dir", str(mnist_dir), "--images", "12", "--nll-samples", "40",
              "--ais-chains", "16", "--ais-betas", "20", "--split", "validation", "--no-progress"]
    proc = nll_memory(*common, "--release-every", "0,1,5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = re.findall(r"^\s*(never|\d+ batch(?:es)?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", proc.stdout, re.M)
    assert [r[0] for r in rows] == ["never", "1 batch", "5 batches"], proc.stdout
    assert len({r[4] for r in rows}) == 1, proc.stdout  # the same seeds, the same mean NLL to the last digit
    assert all(float(r[1]) >= float(r[2]) > 0 for r in rows)  # the peak is at least what it was at the start
    refused = nll_memory(*common, "--release-every", "-1")
    assert refused.returncode == 2 and "--release-every" in refused.stderr
