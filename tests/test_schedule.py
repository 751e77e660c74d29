"""The learning-rate schedule and the KL warm-up: closed-form values, and a scheduled run that
trains with them, resumes bit for bit and refuses a resume that would bend its schedule."""

import dataclasses
import math

import pytest
import torch

from qvae.config import Config, ConfigError
from qvae.data.mnist import train_mean
from qvae.models.build import build_model
from qvae.schedule import kl_factor, lr_factor
from qvae.timing import is_wall_clock
from qvae.train import StopTraining, load_checkpoint, train
from tests.test_train import SMALL

STEPS = 4  # steps per epoch on `first(data, 256)` with SMALL's batches of 64


def first(data, n):
    """`data` with only its first `n` training images (short runs for the schedule's tests)."""
    return dataclasses.replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n])


def test_the_cosine_schedule_is_a_half_cosine_over_the_run():
    total = 100
    values = [lr_factor("cosine", step, total) for step in range(1, total + 1)]
    assert values[0] == 1.0
    assert values[50] == pytest.approx(0.5)  # step 51: cos(pi / 2)
    assert values[-1] == pytest.approx((1 + math.cos(math.pi * 99 / 100)) / 2) and 0 < values[-1] < 1e-3
    assert all(a > b for a, b in zip(values, values[1:]))
    assert {lr_factor("constant", step, total) for step in (1, 50, 100)} == {1.0}


def test_a_step_outside_the_run_or_an_unknown_schedule_is_an_error():
    with pytest.raises(ValueError, match=r"step must be in 1\.\.10"):
        lr_factor("cosine", 11, 10)
    with pytest.raises(ValueError, match="constant, cosine"):
        lr_factor("linear", 1, 10)
    with pytest.raises(ConfigError, match="lr_schedule"):
        Config(lr_schedule="linear")


def test_the_kl_warm_up_rises_linearly_then_stays_at_one():
    assert [kl_factor(4, step) for step in (1, 2, 4, 9)] == [0.25, 0.5, 1.0, 1.0]


def test_a_cosine_run_ends_at_the_last_steps_learning_rate_and_still_learns(small_data, tmp_path):
    config = Config(epochs=2, lr=3e-3, lr_schedule="cosine", **SMALL)
    result = train(config, first(small_data, 256), checkpoint_dir=tmp_path, progress=False)
    lr = load_checkpoint(tmp_path / "last.pt")["optimizer"]["param_groups"][0]["lr"]
    total = 2 * STEPS
    assert float(lr) == pytest.approx(3e-3 * (1 + math.cos(math.pi * (total - 1) / total)) / 2, rel=1e-6)
    assert result.history[-1]["val_cost"] < result.history[0]["val_cost"]


def test_the_scheduled_learning_rate_tensor_steps_as_the_constant_float_does(small_data):
    """The float learning rate (constant) and the device tensor (scheduled) give the same Adam update: a run of
    a single step, where the cosine's factor is exactly 1, gives the constant run's weights up to float32
    rounding (the tensor holds lr in float32, the float path computes with it in double)."""
    one_batch = first(small_data, 64)
    config = dict(SMALL, log_z_betas=0)
    runs = [train(Config(epochs=1, lr_schedule=schedule, **config), one_batch, progress=False)
            for schedule in ("constant", "cosine")]
    torch.manual_seed(Config().seed)  # train()'s first draws: the weights before the step
    small_state = build_model(Config(**config), data_mean=train_mean(one_batch.train_x)).state_dict()
    moved = 0
    for name, value in runs[0].model.state_dict().items():
        torch.testing.assert_close(runs[1].model.state_dict()[name], value, rtol=1e-5, atol=1e-8, msg=name)
        moved += int((value != small_state[name]).sum()) if name in small_state else 0
    assert moved > 1000  # the step did change the weights, so agreeing means the same update


class StopAfterFirst:
    def on_epoch_end(self, report):
        raise StopTraining


def test_a_stopped_cosine_run_resumes_bit_for_bit(small_data, tmp_path):
    config = Config(epochs=3, lr_schedule="cosine", kl_beta=1.0, kl_warmup_epochs=2, iw_samples=2, **SMALL)
    data = first(small_data, 256)
    straight = train(config, data, progress=False)
    train(config, data, checkpoint_dir=tmp_path, callbacks=[StopAfterFirst()], progress=False)
    resumed = train(config, data, checkpoint_dir=tmp_path, resume_from=tmp_path / "last.pt", progress=False)
    for name, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    strip = lambda hs: [{k: v for k, v in e.items() if not is_wall_clock(k)} for e in hs]  # noqa: E731
    assert strip(resumed.history) == strip(straight.history)


def test_a_cosine_run_may_not_resume_with_other_epochs(small_data, tmp_path):
    config = Config(epochs=3, lr_schedule="cosine", **SMALL)
    train(config, first(small_data, 64), checkpoint_dir=tmp_path, callbacks=[StopAfterFirst()], progress=False)
    with pytest.raises(ConfigError, match=r"lr_schedule=cosine decays over the run's epochs, so epochs must stay 3"):
        train(Config(epochs=5, lr_schedule="cosine", **SMALL), first(small_data, 64), resume_from=tmp_path / "last.pt",
              progress=False)
