"""Faults in the main job, for real: a run killed with SIGKILL resumes into the same MLflow run and
ends with the weights of an uninterrupted run; a diverging run stops FAILED with its reason."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from tests.waiting import GENEROUS_TIMEOUT_S, wait_until

EPOCHS = 4
TINY = ["--epochs", str(EPOCHS), "--train-size", "1024", "--validation-size", "256", "--test-size", "256",
        "--batch-size", "64",
        "--hidden-dim", "32", "--latent-dim", "16", "--num-visible", "8", "--num-hidden", "8",
        "--sampler-chains", "32", "--log-z-betas", "20", "--log-z-chains", "16", "--generate-sweeps", "10",
        "--device", "cpu", "--fid-samples", "0", "--tsne-interval", "1", "--tsne-points", "100",
        "--tsne-final-points", "0",
        "--kl-beta", "0.01", "--no-progress"]
PER_EPOCH = ("loss", "cost", "val_loss", "val_cost", "kl", "val_elbo", "log_z")


def qvae_run(mnist_dir, *flags: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "qvae", "run", "--data-dir", str(mnist_dir), *TINY, *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def run_named(experiment: str, name: str):
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], f"tags.`mlflow.runName` = '{name}'") if exp else []
    return runs[0] if runs else None


def last_weights(run_id: str, tmp_path) -> dict[str, torch.Tensor]:
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoints/last.pt",
                                               dst_path=str(tmp_path / run_id))
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def killed_and_reference(tracking_store, mnist_dir):
    """A run SIGKILLed right after its first epoch is logged, and the same config uninterrupted."""
    reference = qvae_run(mnist_dir, "--experiment-name", "faults", "--run-name", "reference")
    victim = qvae_run(mnist_dir, "--experiment-name", "faults", "--run-name", "victim")

    def first_epoch_logged() -> bool:  # its metrics and its t-SNE frame (the last thing an epoch logs)
        run = run_named("faults", "victim")
        return bool(run and MlflowClient().list_artifacts(run.info.run_id, "tsne_frames"))

    wait_until(first_epoch_logged, "the victim's first epoch", process=victim, poll=0.1)
    victim.send_signal(signal.SIGKILL)  # mid-training: the first epoch's checkpoint is logged
    victim.wait(timeout=GENEROUS_TIMEOUT_S)
    assert victim.returncode == -signal.SIGKILL, victim.stdout.read()[-3000:]
    output, _ = reference.communicate(timeout=GENEROUS_TIMEOUT_S)
    assert reference.returncode == 0, output[-3000:]
    return run_named("faults", "victim"), run_named("faults", "reference")


def test_a_killed_run_resumes_into_the_same_run_bit_for_bit(killed_and_reference, mnist_dir, tmp_path):
    victim, reference = killed_and_reference
    run_id = victim.info.run_id
    assert victim.info.status == "RUNNING"  # killed: nobody closed it
    done = len(MlflowClient().get_metric_history(run_id, "loss"))
    assert 1 <= done < EPOCHS
    proc = qvae_run(mnist_dir, "--resume", run_id)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]
    assert f"MLflow run {run_id} finished" in output

    client = MlflowClient()
    resumed = client.get_run(run_id)
    assert resumed.info.status == "FINISHED" and resumed.data.tags["qvae.resumed"].startswith("from epoch")
    assert len(client.search_runs([resumed.info.experiment_id])) == 2  # no third run
    for name in PER_EPOCH:  # no gap, no duplicate step, and the values of the uninterrupted run
        history = sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)
        expected = sorted(client.get_metric_history(reference.info.run_id, name), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(1, EPOCHS + 1)), name
        assert [m.value for m in history] == [m.value for m in expected], name
    mine, theirs = last_weights(run_id, tmp_path), last_weights(reference.info.run_id, tmp_path)
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert mlflow.pyfunc.load_model(f"runs:/{run_id}/model") is not None
    gif = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="tsne_evolution.gif", dst_path=str(tmp_path))
    with Image.open(gif) as frames:  # every epoch's frame, the ones before the kill included
        assert frames.n_frames == EPOCHS


def test_resume_is_refused_with_a_reason(killed_and_reference, mnist_dir, capsys):
    """Unknown run, a run without a checkpoint, a config that differs from the logged params."""
    from qvae.cli import main

    _, reference = killed_and_reference
    client = MlflowClient()
    empty = client.create_run(reference.info.experiment_id, run_name="empty").info.run_id
    client.set_terminated(empty, "KILLED")
    cases = [(["--resume", "0123456789abcdef0123456789abcdef"], "resume must be the id of an existing MLflow run"),
             (["--resume", empty], "has no checkpoints/last.pt"),
             (["--resume", reference.info.run_id, "--kl-beta", "0.5"], "kl_beta: logged 0.01, given 0.5"),
             (["--resume", reference.info.run_id], f"epochs must be > {EPOCHS}")]
    for flags, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["run", "--data-dir", str(mnist_dir), *TINY, *flags])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err, err[-2000:]
    assert len(client.search_runs([reference.info.experiment_id])) == 3  # nothing new
    assert client.get_run(reference.info.run_id).data.metrics["loss"]  # untouched


def test_a_diverging_run_stops_failed_with_its_reason(tracking_store, mnist_dir, capsys):
    from qvae.cli import main

    assert main(["run", "--data-dir", str(mnist_dir), *TINY, "--experiment-name", "diverge", "--run-name",
                 "lr-1e6", "--lr", "1e6"]) == 3
    err = capsys.readouterr().err
    assert "the training loss is NaN, infinite or beyond" in err and "lower lr" in err
    run = run_named("diverge", "lr-1e6")
    assert run.info.status == "FAILED"
    assert run.data.tags["qvae.status"] == "diverged" and "epoch 1" in run.data.tags["fail_reason"]
    client = MlflowClient()
    assert client.get_metric_history(run.info.run_id, "loss") == []  # no garbage recorded
    assert not [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]


def test_sigterm_stops_a_run_killed_with_its_checkpoint_and_says_how_to_continue(tracking_store, mnist_dir):
    """What a scheduler, `docker stop` or a preempted VM sends: the run ends KILLED, not RUNNING for ever."""
    proc = qvae_run(mnist_dir, "--experiment-name", "faults", "--run-name", "terminated")

    def first_epoch_logged():
        run = run_named("faults", "terminated")
        return run if run and MlflowClient().get_metric_history(run.info.run_id, "loss") else None

    run = wait_until(first_epoch_logged, "the first epoch", process=proc, poll=0.1)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=GENEROUS_TIMEOUT_S)
    assert proc.returncode == 143, output[-3000:]
    stopped = MlflowClient().get_run(run.info.run_id)
    assert stopped.info.status == "KILLED" and stopped.data.tags["qvae.status"] == "interrupted"
    command = next(line.strip() for line in output.splitlines() if "qvae run --resume" in line)
    assert command.startswith(f"qvae run --resume {run.info.run_id} ") and "--epochs 4" in command
    resumed = subprocess.run([sys.executable, "-m", "qvae", *command.split()[1:]], capture_output=True, text=True,
                             timeout=GENEROUS_TIMEOUT_S)  # the printed command, as printed, continues the run
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert MlflowClient().get_run(run.info.run_id).info.status == "FINISHED"
    assert "checkpoints/last.pt" in {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "checkpoints")}


def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one_and_says_so(tracking_store, mnist_dir, tmp_path):
    """A kill during the upload of last.pt leaves it truncated on the server: resume uses previous.pt (the
    epoch before, uploaded first) instead of failing, says so, and ends where an uninterrupted run ends."""
    from urllib.parse import urlparse

    done = subprocess.run([sys.executable, "-m", "qvae", "run", "--data-dir", str(mnist_dir), *TINY, "--epochs", "2",
                           "--experiment-name", "faults", "--run-name", "damaged"], capture_output=True, text=True,
                          timeout=GENEROUS_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = run_named("faults", "damaged")
    client = MlflowClient()
    assert {"checkpoints/last.pt", "checkpoints/previous.pt"} <= {a.path for a in client.list_artifacts(
        run.info.run_id, "checkpoints")}
    last = Path(urlparse(run.info.artifact_uri).path) / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # what a kill mid-upload leaves
    proc = qvae_run(mnist_dir, "--resume", run.info.run_id, "--epochs", "3")
    output, _ = proc.communicate(timeout=GENEROUS_TIMEOUT_S)
    assert proc.returncode == 0, output[-3000:]
    assert "cannot be read" in output and "resuming from previous.pt, epoch 1" in output, output[-3000:]
    losses = sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)
    assert [m.step for m in losses] == [1, 2, 2, 3]  # epoch 2 ran again from epoch 1's checkpoint
    assert losses[1].value == losses[2].value  # ... bit for bit (same device)
    final = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="checkpoints/last.pt",
                                                dst_path=str(tmp_path))
    assert torch.load(final, weights_only=True)["epoch"] == 3
