"""benchmarks/step_breakdown.py: each part is timed where the model has it, and everything is put back."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import step_breakdown  # noqa: E402
import torch  # noqa: E402

import qvae.models.qvae as qvae_module  # noqa: E402
from qvae.config import Config  # noqa: E402
from qvae.models.build import build_model  # noqa: E402
from qvae.models.importance import relaxed_log_prior  # noqa: E402

QVAE_ONLY = ("negative phase", "relaxed log prior", "log q(zeta|x)")
SHARED = ("encoder", "latent sample", "decoder", "loss, backward, Adam")


def tiny(prior: str) -> Config:
    return Config.from_preset("likelihood", prior=prior, hidden_dim=32, latent_dim=8, num_visible=4, num_hidden=4,
                              batch_size=64, sampler_chains=16, sampler_sweeps=2, iw_samples=2, device="cpu")


@pytest.mark.parametrize("prior", ["boltzmann", "gaussian"])
def test_each_model_reports_exactly_the_parts_it_has_and_they_fit_in_the_step(prior, small_data):
    row = step_breakdown.measure(tiny(prior), small_data, steps=4, warmup=1)
    expected = SHARED + (QVAE_ONLY if prior == "boltzmann" else ())
    assert set(expected) <= set(row)
    if prior == "gaussian":
        assert not set(QVAE_ONLY) & set(row)
    assert all(row[label] > 0 for label in expected)
    assert sum(row[label] for label in expected) == pytest.approx(row["step"])
    assert row["steps per epoch"] == 1024 // 64
    assert ("log Z (AIS)" in row) == (prior == "boltzmann")
    assert step_breakdown.epoch_seconds(row) > row["steps per epoch"] * row["step"] / 1e3


def test_a_wrapped_part_counts_its_own_time_and_is_put_back_afterwards():
    model = build_model(tiny("boltzmann"))
    timer = step_breakdown.PartTimer(torch.device("cpu"))
    slow_decode = model.decode
    model.decode = lambda zeta: (time.sleep(0.02), slow_decode(zeta))[1]  # an instance attribute already
    roots = {"model": model, "sampler": None, "module": qvae_module}
    with step_breakdown.timed_parts(timer, roots):
        assert qvae_module.relaxed_log_prior is not relaxed_log_prior
        timer.on = True
        model.decode(torch.zeros(3, 8))
        model.encode(torch.zeros(3, 784))
        timer.on = False
        for _ in range(10):  # 0.2 s, not counted
            model.decode(torch.zeros(3, 8))
    assert 0.02 <= timer.seconds["decoder"] < 0.2
    assert set(timer.seconds) == {"decoder", "encoder"}
    assert qvae_module.relaxed_log_prior is relaxed_log_prior
    assert "encode" not in vars(model) and "rsample" not in vars(model.smoothing)
    assert vars(model)["decode"] is not None and model.decode.__name__ == "<lambda>"


@pytest.mark.parametrize("base, named", [("mean_field_iterations:0", r"mean_field_iterations.*1\.\.100"),
                                         ("no_such_field:1", "no_such_field")])
def test_a_bad_base_is_refused_before_any_data_is_read(base, named, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        step_breakdown.main(["--base", base, "--data-dir", str(tmp_path / "absent")])
    assert exit_info.value.code == 2
    assert re.search(named, capsys.readouterr().err)
    assert not (tmp_path / "absent").exists()
