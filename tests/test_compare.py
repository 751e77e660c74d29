"""benchmarks/compare.py end to end on a tiny budget, without MLflow or Optuna on its import path."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qvae.config import Config
from qvae.train import load_checkpoint

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
def test_trains_each_preset_and_prior_then_rescores_from_checkpoints(mnist_dir, tmp_path):
    common = ["--data-dir", str(mnist_dir), "--validation-size", "200", "--test-size", "200", "--device", "cpu",
              "--fid-samples", "0", "--nll-samples", "5", "--nll-images", "50", "--probe-epochs", "1", "--no-progress"]
    names = ("qvae-seed", "qvae-likelihood", "gaussian-likelihood")
    proc = compare("--epochs", "2", "--train-size", "512", "--models", ",".join(names), "--output-dir", str(tmp_path),
                   *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for label in ("QVAE, seed preset", "QVAE, likelihood", "Gaussian, likelihood", "prior_kl_uniform", "test ELBO"):
        assert label in proc.stdout, label
    first = json.loads((tmp_path / "results.json").read_text())
    assert set(first["models"]) == set(names)
    likelihood = first["models"]["qvae-likelihood"]["config"]
    assert (likelihood["kl_beta"], likelihood["binarize"]) == (1.0, "dynamic")  # the preset's
    assert first["models"]["qvae-seed"]["config"]["kl_beta"] == 1e-6
    for name in names:
        assert (tmp_path / name / "last.pt").exists()
        assert "test_nll" in first["models"][name]["metrics"] and "test_elbo" in first["models"][name]["metrics"]
    proc = compare("--evaluate-only", str(tmp_path), "--models", ",".join(names), *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((tmp_path / "results.json").read_text())
    for name in names:  # same (best-on-validation) checkpoints, settings and seed: the same scores
        assert again["models"][name]["metrics"] == pytest.approx(first["models"][name]["metrics"], rel=1e-5)
        for fact in ("seconds_per_epoch", "train_seconds", "epochs_trained"):  # training facts are kept
            assert again["models"][name][fact] == first["models"][name][fact], fact
    assert compare("--models", "qvae,vae", *common).returncode == 2  # a one-line error naming the choices


@pytest.mark.slow
def test_a_budget_gives_both_priors_the_same_wall_time(mnist_dir, tmp_path):
    proc = compare("--budget", "4", "--epochs", "200", "--train-size", "512", "--validation-size", "200",
                   "--test-size", "200", "--data-dir", str(mnist_dir), "--device", "cpu", "--fid-samples", "0",
                   "--nll-samples", "5", "--nll-images", "50", "--nll-ais-chains", "50", "--nll-ais-betas", "50",
                   "--no-progress", "--output-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    assert set(report["models"]) == {"qvae-likelihood", "gaussian-likelihood"}  # the default question
    assert report["settings"]["budget_seconds"] == 4
    for model in report["models"].values():
        assert 1 <= model["epochs_trained"] < 200  # stopped by the clock, not the epochs
        assert 4 <= model["train_seconds"] < 4 + 3 * model["seconds_per_epoch"] + 5
    assert "epochs trained / training seconds" in proc.stdout and "budget: every model" in proc.stdout
    assert compare("--budget", "0", "--data-dir", str(mnist_dir)).returncode == 2


@pytest.mark.slow
def test_a_comparison_killed_mid_training_resumes_to_the_uninterrupted_result(mnist_dir, tmp_path):
    flags = ["--models", "qvae-likelihood,gaussian-likelihood", "--epochs", "4", "--train-size", "1024",
             "--validation-size", "200", "--test-size", "200", "--data-dir", str(mnist_dir), "--device", "cpu",
             "--fid-samples", "0", "--nll-samples", "5", "--nll-images", "50", "--nll-ais-chains", "50",
             "--nll-ais-betas", "50", "--no-progress"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert compare(*flags, "--output-dir", str(whole)).returncode == 0
    # the same comparison, killed (no chance to clean up) as soon as the QVAE's first epoch is on disk
    code = RUN.format(bench=str(REPO / "benchmarks"))
    proc = subprocess.Popen([sys.executable, "-c", code, *flags, "--output-dir", str(killed)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed / "qvae-likelihood" / "last.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert checkpoint.exists() and not (killed / "gaussian-likelihood").exists()
    before = load_checkpoint(checkpoint)["history"]

    resumed = compare(*flags, "--output-dir", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # the epochs trained before the kill were kept, not trained again: their wall times are the killed run's
    assert load_checkpoint(checkpoint)["history"][:len(before)] == before
    expected, got = (json.loads((d / "results.json").read_text())["models"] for d in (whole, killed))
    for name in expected:  # bit-for-bit resume: the scores and every epoch's metrics of the uninterrupted run
        assert got[name]["metrics"] == pytest.approx(expected[name]["metrics"], rel=1e-6), name
        assert (got[name]["best_epoch"], got[name]["epochs_trained"]) == (expected[name]["best_epoch"], 4)
        assert {k: v for k, v in got[name]["chosen_epoch"].items() if "seconds" not in k and "utilisation" not in k} \
            == pytest.approx({k: v for k, v in expected[name]["chosen_epoch"].items()
                              if "seconds" not in k and "utilisation" not in k}, rel=1e-6), name

    again = compare(*flags, "--output-dir", str(killed), "--resume")  # nothing left to do: both kept as they are
    assert again.returncode == 0 and again.stderr.count("already, kept") == 2, again.stderr[-3000:]
    assert json.loads((killed / "results.json").read_text())["models"] == got
    changed = compare(*flags[:-1], "--output-dir", str(killed), "--resume", "--base", "lr:0.001")
    assert changed.returncode == 2 and "lr: saved 0.006, given 0.001" in changed.stderr, changed.stderr[-2000:]


def test_base_changes_every_models_preset_and_a_bad_one_is_refused_before_any_data_is_read(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import compare as module

    args = module.build_parser().parse_args(["--base", "lr:0.003,dist_beta:20,epochs:5", "--epochs", "7",
                                               "--models", ",".join(module.MODELS)])
    configs = module.configs(args)
    assert set(configs) == set(module.MODELS)
    for name, config in configs.items():
        preset = "seed" if name.endswith("seed") else "likelihood"
        assert (config.lr, config.epochs) == (0.003, 7)  # --base on every model; the shared flag wins over it
        assert config.kl_beta == Config.from_preset(preset).kl_beta  # the rest still the model's preset
        assert config.dist_beta == 20.0 and config.prior == ("gaussian" if "gaussian" in name else "boltzmann")
    missing = str(tmp_path / "no-mnist-here")
    for base, message in [("mean_field_iterations:abc", "mean_field_iterations must be an integer in 1..100"),
                          ("lr:0", "lr must be a finite number > 0.0"), ("lr_shedule:cosine", "unknown config field"),
                          ("prior:gaussian", "the prior is each model's own")]:
        proc = compare("--base", base, "--data-dir", missing, "--output-dir", str(tmp_path / "out"))
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    proc = compare("--evaluate-only", str(tmp_path), "--base", "lr:0.003")
    assert proc.returncode == 2 and "--evaluate-only" in proc.stderr
    for flags in (["--resume"], ["--resume", "--evaluate-only", str(tmp_path), "--output-dir", str(tmp_path)]):
        with pytest.raises(SystemExit) as exited:  # in this process: the parser's error, before any data is read
            module.main([*flags, "--data-dir", missing])
        assert exited.value.code == 2
    assert not (tmp_path / "out").exists()
