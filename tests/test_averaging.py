"""The weights' moving average: its value against the closed-form weighted sum, an exact swap in and
out, and a training run whose validation, best checkpoint and resume all use it."""

import copy
import dataclasses

import pytest
import torch
from torch import nn

from qvae.averaging import WeightAverage, decay_at
from qvae.config import Config, ConfigError
from qvae.data.mnist import model_inputs
from qvae.timing import is_wall_clock
from qvae.train import StopTraining, evaluate, load_checkpoint, train
from tests.test_train import SMALL


def test_the_average_is_the_closed_form_weighted_sum_of_the_trajectory():
    layer = nn.Linear(3, 2)
    start = [p.detach().clone() for p in layer.parameters()]
    average = WeightAverage(layer, decay=0.6)
    generator = torch.Generator().manual_seed(0)
    trajectory = []
    for _ in range(7):
        with torch.no_grad():
            for p in layer.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))
        trajectory.append([p.detach().clone() for p in layer.parameters()])
        average.update()
    decays = [decay_at(0.6, t) for t in range(1, 8)]
    # a_T = (prod_t d_t) a_0 + sum_t (1 - d_t) (prod_{s > t} d_s) w_t: weights that sum to one
    weight_of_start = torch.tensor(decays).prod().item()
    weights = [(1 - decays[t]) * torch.tensor(decays[t + 1:]).prod().item() for t in range(7)]
    assert weight_of_start + sum(weights) == pytest.approx(1.0)
    for i, mine in enumerate(average.average):
        expected = weight_of_start * start[i] + sum(w * step[i] for w, step in zip(weights, trajectory))
        assert torch.allclose(mine, expected, atol=1e-6)


def test_the_first_updates_follow_the_weights_closely_then_the_declared_decay_holds():
    assert decay_at(0.999, 1) == pytest.approx(2 / 11)  # the random start weighs little after one step
    assert decay_at(0.999, 100) == pytest.approx(101 / 110)
    assert decay_at(0.9, 10_000) == 0.9


def test_inside_the_swap_the_model_holds_the_average_and_after_it_exactly_its_own_weights():
    layer = nn.Linear(4, 3)
    average = WeightAverage(layer, decay=0.5)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(1.0)
    average.update()
    own = copy.deepcopy(layer.state_dict())
    storages = [p.data_ptr() for p in layer.parameters()]
    with average.swapped_in():
        for p, mine in zip(layer.parameters(), average.average):
            assert torch.equal(p, mine)
        assert not torch.equal(layer.weight, own["weight"])
    assert all(torch.equal(layer.state_dict()[k], v) for k, v in own.items())
    assert [p.data_ptr() for p in layer.parameters()] == storages  # in place: a captured CUDA graph stays valid


def test_a_decay_outside_0_1_is_refused_with_the_range():
    with pytest.raises(ConfigError, match=r"weight_average must be .*0.*0\.99999.*got 1\.0"):
        Config(weight_average=1.0)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        WeightAverage(nn.Linear(1, 1), decay=0.0)


def first(data, n):
    return dataclasses.replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n])


def test_validation_and_the_best_checkpoint_judge_the_average_not_the_trained_weights(small_data, tmp_path):
    config = Config(epochs=1, kl_beta=1.0, weight_average=0.9, **{**SMALL, "log_z_betas": 0})
    data = first(small_data, 512)
    result = train(config, data, checkpoint_dir=tmp_path, progress=False)
    state = load_checkpoint(tmp_path / "last.pt")
    averaged = state["weight_average"]["average"]
    trained = dict(result.model.named_parameters())
    assert set(averaged) == set(trained)
    for name, value in averaged.items():
        assert torch.equal(result.best_state[name], value), name  # the best checkpoint holds the average
        assert not torch.equal(trained[name], value), name  # which is not the trained weights
        assert torch.equal(state["model"][name], trained[name])  # the resumable state keeps the trained ones
    # the epoch's validation terms, computed again on a model holding the average, with the same random streams
    model = result.best_model()
    again = evaluate(model, result.sampler, model_inputs(data.val_x, config.binarize), config.batch_size,
                     torch.Generator().manual_seed(config.seed + 2))
    assert {f"val_{k}": v for k, v in again.items()} == {k: v for k, v in result.history[0].items()
                                                         if k.startswith("val_")}


class StopAfterFirst:
    def on_epoch_end(self, report):
        raise StopTraining


def test_a_stopped_averaging_run_resumes_bit_for_bit(small_data, tmp_path):
    config = Config(epochs=2, kl_beta=1.0, weight_average=0.95, **SMALL)
    data = first(small_data, 256)
    straight = train(config, data, progress=False)
    train(config, data, checkpoint_dir=tmp_path, callbacks=[StopAfterFirst()], progress=False)
    resumed = train(config, data, checkpoint_dir=tmp_path, resume_from=tmp_path / "last.pt", progress=False)
    strip = lambda hs: [{k: v for k, v in e.items() if not is_wall_clock(k)} for e in hs]  # noqa: E731
    assert strip(resumed.history) == strip(straight.history)
    assert "train_log_z" in straight.history[-1]  # the trained weights' own log Z completes their terms
    assert straight.history[-1]["train_log_z"] != straight.history[-1]["log_z"]
    for name, value in straight.best_state.items():
        assert torch.equal(resumed.best_state[name], value), name
    for name, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
