"""Generating from logged and registered models: Python, CLI, REST serving, errors."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

import qvae
from qvae.config import Config, JobOptions
from qvae.models.build import build_model
from qvae.tracking.job import run_main_job
from qvae.tracking.loading import Generator, ModelNotFoundError
from tests.servers import answers
from tests.waiting import wait_until

TINY = dict(epochs=2, batch_size=50, hidden_dim=64, latent_dim=16, num_visible=8, num_hidden=8, train_size=1000,
            validation_size=100, test_size=100, lr=3e-3, kl_beta=1.0,
            sampler_chains=16, log_z_betas=10, log_z_chains=8, generate_sweeps=15,
            device="cpu")


@pytest.fixture(scope="module")
def registry(tracking_store, mnist_dir):
    """A tracking store holding one tiny trained model, registered as qvae-mnist v1 @champion."""
    options = JobOptions(fid_samples=0, tsne_interval=0, tsne_final_points=0, register_model="qvae-mnist",
                         progress=False)
    result = run_main_job(Config(**TINY, data_dir=str(mnist_dir)), options)
    MlflowClient().set_registered_model_alias("qvae-mnist", "champion", "1")
    return tracking_store, result.run_id, {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}


def test_every_uri_form_loads_and_generates(registry):
    _, run_id, _ = registry
    reference = qvae.load_generator("models:/qvae-mnist@champion").generate(6, seed=3)
    assert reference.shape == (6, 1, 28, 28) and reference.min() >= 0 and reference.max() <= 1
    for uri in (f"runs:/{run_id}/model", "models:/qvae-mnist/1", "models:/qvae-mnist/latest"):
        assert torch.equal(qvae.load_generator(uri, device="cpu").generate(6, seed=3), reference), uri
    local = mlflow.artifacts.download_artifacts("models:/qvae-mnist/1")
    assert torch.equal(qvae.load_generator(local).generate(6, seed=3), reference)


def test_seeds_and_sweeps_control_the_images(registry):
    gen = qvae.load_generator("models:/qvae-mnist@champion")
    a, b = gen.generate(5, seed=1), gen.generate(5, seed=2)
    assert (a - b).abs().max() > 1e-2
    assert torch.equal(gen.generate(5, seed=1), a)
    assert (gen.generate(5, seed=1, sweeps=0) - a).abs().max() > 1e-2
    assert gen.default_sweeps == 15


def test_python_api_and_pyfunc_agree(registry):
    import pandas as pd

    model = mlflow.pyfunc.load_model("models:/qvae-mnist@champion")
    via_pyfunc = model.predict(pd.DataFrame({"seed": [7]}), params={"num_images": 4})
    via_api = qvae.load_generator("models:/qvae-mnist@champion").generate(4, seed=7)
    assert np.allclose(via_pyfunc, via_api.reshape(4, -1).numpy(), atol=1e-6)


def test_errors_a_user_can_act_on(registry, tmp_path):
    with pytest.raises(ModelNotFoundError,
                       match="no registered model named 'qvae-mnsit'; registered models: qvae-mnist"):
        qvae.load_generator("models:/qvae-mnsit@champion")
    with pytest.raises(ModelNotFoundError, match=r"has no alias 'best'; its aliases: @champion -> version 1"):
        qvae.load_generator("models:/qvae-mnist@best")
    with pytest.raises(ModelNotFoundError, match="has no version '9'; its versions: 1"):
        qvae.load_generator("models:/qvae-mnist/9")
    gen = qvae.load_generator("models:/qvae-mnist@champion")
    with pytest.raises(ValueError, match=r"number of images must be an integer in 1\.\.\d+"):
        gen.generate(0)
    with pytest.raises(ValueError, match=r"fits in free memory"):
        gen.generate(10**12)
    # a model written by an incompatible release names the format it needs
    copy = tmp_path / "model"
    shutil.copytree(mlflow.artifacts.download_artifacts("models:/qvae-mnist/1"), copy)
    config_file = next(copy.rglob("config.json"))
    meta = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(Exception, match="format version 99"):
        qvae.load_generator(str(copy))


def run_cli(env, *args):
    return subprocess.run([sys.executable, "-m", "qvae", "generate", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def generate_here(*args: str) -> int:
    """`qvae generate ARGS` in this process (its exit code): the command's own code, without another
    process's start-up (seconds of imports on CI's cores), which only the reproducibility test needs."""
    from qvae.cli import build_parser, cmd_generate

    return cmd_generate(build_parser().parse_args(["generate", *args]))


def test_cli_writes_npy_reproducibly_across_processes(registry, tmp_path):
    _, _, env = registry
    for name in ("a.npy", "b.npy"):
        proc = run_cli(env, "--model", "models:/qvae-mnist@champion", "--num-images", "9", "--seed", "4",
                       "--output", str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert a.shape == (9, 1, 28, 28) and np.array_equal(a, b)
    assert np.allclose(a, qvae.load_generator("models:/qvae-mnist@champion").generate(9, seed=4).numpy(), atol=1e-6)


def test_cli_writes_a_grid_or_a_folder_of_pngs(registry, tmp_path):
    assert generate_here("--model", "models:/qvae-mnist@champion", "--num-images", "9", "--output",
                         str(tmp_path / "grid.png")) == 0
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (2 * (3 * 30 + 2),) * 2
    assert generate_here("--model", "models:/qvae-mnist@champion", "--num-images", "3", "--output",
                         str(tmp_path / "folder")) == 0
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    with Image.open(tmp_path / "folder" / "00000.png") as one:
        assert one.size == (28, 28)


def test_cli_errors_exit_nonzero_with_the_reason(registry, capsys):
    assert generate_here("--model", "models:/nope@champion") == 2
    assert "registered models: qvae-mnist" in capsys.readouterr().err
    assert generate_here("--model", "models:/qvae-mnist@champion", "--num-images", "-3") == 2
    assert "number of images must be an integer in 1.." in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_rest_serving_answers_invocations_with_images(registry):
    tmp, _, env = registry
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/qvae-mnist@champion",
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp)
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/ping"), "the model server's /ping", process=server,
                   poll=1)
        url = f"http://127.0.0.1:{port}/invocations"
        rows = post(url, {"dataframe_split": {"columns": ["seed"], "data": [[0], [1], [2]]}})["predictions"]
        assert np.array(rows).shape == (3, 784)
        batch = post(url, {"inputs": {"seed": [7]}, "params": {"num_images": 4, "sweeps": 15}})["predictions"]
        expected = qvae.load_generator("models:/qvae-mnist@champion").generate(4, seed=7).reshape(4, -1).numpy()
        assert np.allclose(np.array(batch, dtype=np.float32), expected, atol=1e-5)
        with pytest.raises(urllib.error.HTTPError) as refused:  # over the limit: the request's fault, said so
            post(url, {"inputs": {"seed": [1]}, "params": {"num_images": 100_001}})
        body = refused.value.read().decode()
        assert refused.value.code == 400, body
        assert "num_images must be in 0..100000" in json.loads(body)["message"]
        assert "Traceback" not in body and "stack_trace" not in json.loads(body)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_quantum_prior_model_generates_from_its_qbm(tracking_store, mnist_dir):
    """The logged model carries Gamma and P: it generates from the QBM, seed-reproducibly, like the
    model it was trained as (not from the RBM with the same weights)."""
    options = JobOptions(fid_samples=0, tsne_interval=0, tsne_final_points=0, progress=False)
    config = Config(**{**TINY, "epochs": 1}, gamma=0.8, sampler="pimc", trotter_slices=4, data_dir=str(mnist_dir))
    result = run_main_job(config, options)
    params = MlflowClient().get_run(result.run_id).data.params
    assert (params["gamma"], params["sampler"], params["log_z_method"]) == ("0.8", "pimc", "ais_trotter_P4")
    assert {"q_elbo", "val_q_elbo", "kl_upper_bound"} <= set(result.metrics) and "elbo" not in result.metrics
    loaded = qvae.load_generator(result.model_uri, device="cpu")
    assert loaded.model.config.gamma == 0.8 and loaded.model.config.trotter_slices == 4
    images = loaded.generate(4, seed=5)
    assert torch.equal(images, qvae.load_generator(result.model_uri).generate(4, seed=5))
    classical = build_model(Config.from_dict({**loaded.model.config.to_dict(), "gamma": 0.0, "sampler": "pcd"}))
    classical.load_state_dict(loaded.model.state_dict())  # same weights, RBM prior: other latents, other images
    twin = Generator(classical.eval(), result.model_uri)
    assert (twin.generate(4, seed=5) - images).abs().max() > 1e-3


def test_a_per_unit_gamma_model_records_its_values_and_generates_from_them(tracking_store, mnist_dir):
    """Γ_l per latent unit (rigid units among them): the run records the values (param and gamma.json, which
    `--gamma @gamma.json` reads back), its params pass the resume check, and the loaded model is the QBM
    with those Γ_l: it generates what the same weights generate in-process, not what one Γ would."""
    from pathlib import Path

    gammas = (0.0, 1.5) * 4 + (2.0, 0.0) * 4
    options = JobOptions(fid_samples=0, tsne_interval=0, tsne_final_points=0, progress=False)
    config = Config(**{**TINY, "epochs": 1}, gamma=gammas, sampler="pimc", trotter_slices=4, data_dir=str(mnist_dir))
    result = run_main_job(config, options)
    params = MlflowClient().get_run(result.run_id).data.params
    assert params["gamma"] == "0.0,1.5,0.0,1.5,0.0,1.5,0.0,1.5,2.0,0.0,2.0,0.0,2.0,0.0,2.0,0.0"
    assert config.resume_mismatches(params) == []
    values = Path(mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="gamma.json"))
    assert Config(**TINY, sampler="pimc", gamma=f"@{values}").gamma == gammas
    loaded = qvae.load_generator(result.model_uri, device="cpu")
    assert loaded.model.config.gamma == gammas and loaded.model.gamma.tolist() == list(gammas)
    images = loaded.generate(4, seed=5)
    for gamma, same in ((gammas, True), (sum(gammas) / 16, False)):
        twin = build_model(Config.from_dict({**loaded.model.config.to_dict(), "gamma": gamma}))
        twin.load_state_dict(loaded.model.state_dict())
        generated = Generator(twin.eval(), result.model_uri).generate(4, seed=5)
        assert torch.equal(generated, images) if same else (generated - images).abs().max() > 1e-3
