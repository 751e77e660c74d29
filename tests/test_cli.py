"""`qvae` from the shell, as a user runs it."""

import json
import subprocess
import sys

from PIL import Image


def run_qvae(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "qvae", *args], capture_output=True, text=True, **kwargs)


def test_train_writes_checkpoints_summary_and_pictures(mnist_dir, tmp_path):
    out = tmp_path / "run"
    proc = run_qvae("train", "--data-dir", str(mnist_dir), "--output-dir", str(out), "--epochs", "2",
                    "--train-size", "256", "--validation-size", "128", "--test-size", "128",
                    "--batch-size", "64", "--hidden-dim", "64",
                    "--latent-dim", "16", "--num-visible", "8", "--num-hidden", "8", "--device", "cpu",
                    "--no-progress", timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["num_visible"] == 8 and len(summary["history"]) == 2
    assert summary["data"]["mnist_source"] in ("local", "registry", "torchvision")
    for name in ("original", "reconstruction", "generated", "training_curves"):
        with Image.open(out / f"{name}.png") as picture:
            picture.verify()
    with Image.open(out / "generated.png") as picture:
        assert picture.size == (2 * (8 * 30 + 2), 2 * (8 * 30 + 2))  # 8x8 grid of 28px + 2px padding, x2
    assert (out / "checkpoints" / "last.pt").exists()


def test_bad_flags_fail_before_anything_is_written(tmp_path):
    out = tmp_path / "never"
    proc = run_qvae("train", "--output-dir", str(out), "--num-visible", "100")
    assert proc.returncode == 2
    assert "num_visible + num_hidden must equal latent_dim" in proc.stderr
    assert not out.exists()
    proc = run_qvae("train", "--output-dir", str(out), "--kl-beta", "-1")
    assert proc.returncode == 2 and "kl_beta must be a finite number >= 0" in proc.stderr


def test_help_shows_each_settings_default_and_range():
    proc = run_qvae("run", "--help")
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 0
    assert "--nll-samples INT importance samples K per image of the test NLL" in text
    assert "(default: 0; an integer in 0..1000000; 0 skips the test NLL)" in text
    assert ("--dist-beta FLOAT sharpness beta of the smoothing (exponential: its rate; power: the exponent 1/beta) "
            "(default: 10.0; a finite number > 0.0)") in text
    proc = run_qvae("evaluate", "--help")
    assert "--model STR MLflow model URI (as for generate) or a local model path (required)" in " ".join(
        proc.stdout.split())
