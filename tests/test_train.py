"""Training on a small real-MNIST subset: it learns, checkpoints, and resumes exactly."""

import copy
import dataclasses

import pytest
import torch

from qvae.config import Config
from qvae.timing import is_wall_clock
from qvae.train import StopTraining, load_checkpoint, train

SMALL = dict(hidden_dim=128, latent_dim=32, num_visible=16, num_hidden=16, batch_size=64,
             train_size=1024, validation_size=256, test_size=256, device="cpu", sampler_chains=64, log_z_betas=50,
             log_z_chains=32)



def test_training_lowers_the_loss_and_logs_every_term(small_data, tmp_path):
    result = train(Config(epochs=4, **SMALL), small_data, checkpoint_dir=tmp_path, progress=False)
    h = result.history
    assert len(h) == 4
    assert h[-1]["loss"] < 0.95 * h[0]["loss"]
    assert h[-1]["val_cost"] < h[0]["val_cost"]
    for name in ("loss", "cost", "kl", "elbo", "val_loss", "val_cost", "val_kl", "val_elbo", "log_z"):
        assert all(name in epoch for epoch in h), name
    # the true KL is non-negative and the ELBO is -cost - KL
    assert all(e["val_kl"] >= 0 for e in h)
    assert h[-1]["val_elbo"] == pytest.approx(-h[-1]["val_cost"] - h[-1]["val_kl"])
    assert (tmp_path / "last.pt").exists() and (tmp_path / "best.pt").exists()
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == result.best_epoch


QUANTUM = dict(sampler="pimc", gamma=1.0, trotter_slices=8)


@pytest.mark.parametrize("prior", [dict(sampler="pcd"), dict(sampler="sa"), QUANTUM], ids=["pcd", "sa", "pimc"])
def test_resumed_run_continues_exactly_where_it_stopped(small_data, tmp_path, prior):
    straight = train(Config(epochs=3, **prior, **SMALL), small_data,
                     checkpoint_dir=tmp_path / "a", progress=False)
    train(Config(epochs=1, **prior, **SMALL), small_data, checkpoint_dir=tmp_path / "b", progress=False)
    resumed = train(Config(epochs=3, **prior, **SMALL), small_data, checkpoint_dir=tmp_path / "b",
                    resume_from=tmp_path / "b" / "last.pt", progress=False)
    for name, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    strip = lambda hs: [{k: v for k, v in e.items() if not is_wall_clock(k)} for e in hs]  # noqa: E731
    assert strip(resumed.history) == strip(straight.history)


def test_resume_refuses_a_changed_config(small_data, tmp_path):
    train(Config(epochs=1, **SMALL), small_data, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="dist_beta"):
        train(Config(epochs=2, dist_beta=5.0, **SMALL), small_data, resume_from=tmp_path / "last.pt",
              progress=False)


def test_a_callback_can_stop_training(small_data):
    seen = []

    class StopAfterTwo:
        def on_epoch_end(self, report):
            seen.append(report.epoch)
            if report.epoch == 2:
                raise StopTraining

    result = train(Config(epochs=5, **SMALL), small_data, callbacks=[StopAfterTwo()], progress=False)
    assert seen == [1, 2] and result.stopped_early and len(result.history) == 2


def test_dynamic_binarisation_trains_on_fresh_unbiased_binary_batches(small_data, monkeypatch):
    """Every training batch the model sees is a Bernoulli sample of its intensities: in {0, 1}, 0 and
    1 where the intensity is, unbiased (ones per batch match the summed intensities within 5 sd), and
    drawn anew each epoch (the same image is binarised differently in epochs 1 and 2)."""
    import qvae.train_step
    from qvae.models.qvae import QVAE

    pairs, seen, epoch = [], [], [1]
    binarize, step = qvae.train_step.binarize_batch, QVAE.training_step

    def spy_binarize(x, generator=None):
        out = binarize(x, generator)
        pairs.append((x.clone(), out.clone()))
        return out

    def spy_step(self, x, sampler, generator=None):
        intensities, binary = pairs[-1]
        assert torch.equal(x, binary)  # the model trains on the binarised batch, not the intensities
        seen.append((epoch[0], intensities, binary))
        return step(self, x, sampler, generator)

    class CountEpochs:
        def on_epoch_end(self, report):
            epoch[0] += 1

    monkeypatch.setattr(qvae.train_step, "binarize_batch", spy_binarize)
    monkeypatch.setattr(QVAE, "training_step", spy_step)
    train(Config(epochs=2, binarize="dynamic", **SMALL), small_data, callbacks=[CountEpochs()], progress=False)

    n = len(small_data.train_x)
    assert sum(len(x) for e, x, _ in seen if e == 1) == sum(len(x) for e, x, _ in seen if e == 2) == n
    for _, x, b in seen:
        assert set(b.unique().tolist()) == {0.0, 1.0}
        assert torch.all(b[x == 0] == 0) and torch.all(b[x == 1] == 1)
        assert abs(b.sum() - x.sum()) < 5 * (x * (1 - x)).sum().sqrt() + 1
    by_epoch = [{tuple(x[i].tolist()): b[i] for e, x, b in seen if e == k for i in range(len(x))} for k in (1, 2)]
    assert by_epoch[0].keys() == by_epoch[1].keys()  # the same images (identical ones collapse to one key)
    redrawn = sum(not torch.equal(by_epoch[0][key], by_epoch[1][key]) for key in by_epoch[0])
    assert redrawn == len(by_epoch[0])  # these images have >= 26 grey pixels: two independent
    # binarisations of one agree with probability < 0.002


def test_quantum_prior_logs_the_q_elbo_and_never_calls_it_the_elbo(small_data):
    """Gamma > 0: the KL term with log Tr e^{-H} is an upper bound, so it is logged as
    kl_upper_bound / q_elbo (AIS of the path integral here: 32 units is too many to diagonalise)."""
    from qvae.priors.build import log_z_method

    config = Config(epochs=2, **QUANTUM, **SMALL)
    assert log_z_method(config) == "ais_trotter_P8"
    h = train(config, small_data, progress=False).history
    for epoch in h:
        assert not {"elbo", "kl", "val_elbo", "val_kl"} & set(epoch)
        assert epoch["val_q_elbo"] == pytest.approx(-epoch["val_cost"] - epoch["val_kl_upper_bound"])
        assert epoch["log_z_stderr"] > 0
    assert h[-1]["loss"] < h[0]["loss"]


def test_small_quantum_prior_uses_exact_log_z(small_data):
    from qvae.priors.build import log_z_method

    config = Config(epochs=1, **{**SMALL, "latent_dim": 8, "num_visible": 4, "num_hidden": 4}, **QUANTUM)
    assert log_z_method(config) == "exact"
    last = train(config, small_data, progress=False).history[-1]
    assert last["log_z_stderr"] == 0.0 and last["val_kl_upper_bound"] >= 0  # >= the true KL >= 0


class _WritesAFile:
    """A pickled object that runs code when unpickled: what a tampered checkpoint could carry."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_checkpoint_that_would_run_code_is_refused_unread(tmp_path):
    import pickle

    marker = tmp_path / "code-ran"
    torch.save({"version": 1, "payload": _WritesAFile(str(marker))}, tmp_path / "tampered.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(tmp_path / "tampered.pt")
    assert not marker.exists()


@pytest.mark.parametrize("sampler", ["pcd", "pimc"])
def test_the_validation_pass_leaves_the_training_sampler_untouched(small_data, sampler):
    """Evaluating draws negative samples (for val_loss) but restores the chains and random state."""
    from qvae.models.build import build_model
    from qvae.train import evaluate

    config = Config(epochs=1, sampler=sampler, **({"gamma": 0.5, "trotter_slices": 4} if sampler == "pimc" else {}),
                    **SMALL)
    model = build_model(config)
    chain_sampler = model.latent_prior.make_sampler()
    chain_sampler.sample(model.prior, config.sampler_chains)  # chains exist and have moved once
    before = copy.deepcopy(chain_sampler.state_dict())
    terms = evaluate(model, chain_sampler, small_data.val_x[:128], 64, torch.Generator().manual_seed(0))
    assert "loss" in terms  # the negative phase ran
    after = chain_sampler.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        same = (torch.equal(before[key], after[key]) if isinstance(before[key], torch.Tensor)
                else str(before[key]) == str(after[key]))
        assert same, key


def test_the_validation_split_never_changes_training(small_data):
    """Training on the same images with another validation split: the same weights, bit for bit
    (the validation pass feeds nothing back), while the val_* figures differ."""
    other = dataclasses.replace(small_data, val_x=small_data.test_x, val_y=small_data.test_y)
    a = train(Config(epochs=2, **SMALL), small_data, progress=False)
    b = train(Config(epochs=2, **SMALL), other, progress=False)
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert a.history[-1]["val_cost"] != b.history[-1]["val_cost"]


def test_the_best_model_is_the_best_validation_epochs(small_data, tmp_path):
    result = train(Config(epochs=3, **SMALL), small_data, checkpoint_dir=tmp_path, progress=False)
    scores = [h["val_elbo"] for h in result.history]
    assert result.best_epoch == 1 + scores.index(max(scores))
    best = load_checkpoint(tmp_path / "best.pt")["model"]
    model = result.best_model()
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())


def test_a_prior_that_does_not_learn_is_reported_once(small_data, caplog):
    """The seed's kl_beta = 1e-6 against weight_decay = 0.01: the RBM stays near zero, so the prior
    stays within a nat of uniform, and the run says so once, naming both settings."""
    with caplog.at_level("WARNING", logger="qvae.train"):
        result = train(Config(epochs=2, **SMALL), small_data, progress=False)
    assert all(0 <= h["prior_kl_uniform"] < 1.0 for h in result.history)
    warnings = [r.getMessage() for r in caplog.records if "the prior did not learn" in r.getMessage()]
    assert len(warnings) == 1
    assert "kl_beta=1e-06" in warnings[0] and "weight_decay=0.01" in warnings[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="qvae.train"):  # a prior pushed away from uniform: no warning
        peaked = train(Config(epochs=2, kl_beta=1.0, weight_decay=0.0, lr=3e-2, **{**SMALL, "log_z_betas": 20}),
                       small_data, progress=False)
    assert peaked.history[-1]["prior_kl_uniform"] >= 1.0
    assert not [r for r in caplog.records if "the prior did not learn" in r.getMessage()]


def test_the_chosen_metrics_are_a_copy_of_the_chosen_epochs():
    from qvae.train import chosen_metrics

    history = [{"val_elbo": -3.0}, {"val_elbo": -1.0}, {"val_elbo": -2.0}]
    chosen = chosen_metrics(history, 2)
    assert chosen == {"val_elbo": -1.0}
    chosen["val_elbo"] = 0.0
    assert history[1] == {"val_elbo": -1.0}  # a copy: a caller's additions do not rewrite the history
    assert chosen_metrics(history, None) == {"val_elbo": -2.0} and chosen_metrics([], None) == {}
