"""The training step (qvae/train_step.py): eager on CPUs, a replayed CUDA graph on CUDA, same numbers.

The CPU tests check what the graph relies on (samplers update their state in place, state dicts
are copies) and that the eager path's epoch terms are the batch-weighted means of the model's own
terms. The CUDA tests (skipped without a GPU) train twice from one seed, eager and graph-captured,
and require identical numbers, a single capture, and bit-exact resume with graphs on.
"""

from __future__ import annotations

import pytest
import torch

from qvae.config import Config
from qvae.models.build import build_model
from qvae.priors.qbm import PIMCSampler
from qvae.priors.samplers import PCDSampler
from qvae.timing import is_wall_clock
from qvae.train import train
from qvae.train_step import TrainStep, graphs_available

SMALL = dict(hidden_dim=128, latent_dim=32, num_visible=16, num_hidden=16, batch_size=64, train_size=1024,
             validation_size=256, test_size=256, sampler_chains=64, log_z_betas=50, log_z_chains=32)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


def numbers(history):
    return [{k: v for k, v in h.items() if not is_wall_clock(k)} for h in history]


def test_graphs_are_cuda_only():
    assert not graphs_available(torch.device("cpu"))
    assert not graphs_available(torch.device("cuda"), enabled=False)
    assert graphs_available(torch.device("cuda"))


@pytest.mark.parametrize("make", [lambda: PCDSampler(num_chains=8, sweeps=2, seed=1),
                                  lambda: PIMCSampler(num_chains=8, slices=4, sweeps=2, gamma=1.0, seed=1),
                                  lambda: PIMCSampler(num_chains=8, slices=4, sweeps=2, gamma=[1.0, 0.0] * 5 + [0.5],
                                                      seed=1)],
                         ids=["pcd", "pimc", "pimc-per-unit"])
def test_samplers_update_their_state_in_place_and_hand_out_copies(make):
    """A captured step reads the sampler's chains and generator at fixed addresses: sampling and
    reloading a state must keep those objects; a state dict must not change when the sampler moves on."""
    from qvae.priors.rbm import RBM

    prior, sampler = RBM(6, 5), make()
    sampler.sample(prior, 8)
    inputs = sampler.graph_inputs()
    saved = sampler.state_dict()
    frozen = {k: v.clone() for k, v in saved.items() if isinstance(v, torch.Tensor)}
    first = sampler.sample(prior, 8)
    assert all(a is b for a, b in zip(sampler.graph_inputs(), inputs))  # same tensors, same generator
    assert all(torch.equal(saved[k], v) for k, v in frozen.items())  # the state dict did not move with them
    sampler.load_state_dict(saved)
    assert all(a is b for a, b in zip(sampler.graph_inputs(), inputs))
    assert torch.equal(sampler.sample(prior, 8), first)  # reloaded: the same draw again


def test_annealed_pimc_is_never_captured():
    from qvae.priors.rbm import RBM

    sampler = PIMCSampler(num_chains=4, slices=4, gamma=1.0, anneal_gamma=[1.0, 0.5])
    sampler.sample(RBM(3, 3), 4)
    assert sampler.graph_inputs() is None  # fresh paths each call: nothing fixed to capture


def test_eager_epoch_terms_are_the_batch_weighted_means(small_data):
    """epoch_terms(n) = sum over batches of len(batch) x the step's term, / n (what the loop logged before)."""
    config = Config(**SMALL, device="cpu")
    torch.manual_seed(0)
    model = build_model(config)
    sampler = model.latent_prior.make_sampler()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = TrainStep(model, optimizer, sampler, torch.Generator().manual_seed(1), dynamic=False, batch_size=64,
                     use_graph=True)
    assert not step.use_graph  # a CPU model is never captured
    x = small_data.train_x[:150]
    expected: dict[str, float] = {}
    step.start_epoch()
    for chunk in (x[:64], x[64:128], x[128:]):
        step.step(chunk)
        for name, value in step.last.items():
            expected[name] = expected.get(name, 0.0) + float(value.detach()) * len(chunk)
    got = step.epoch_terms(len(x))
    assert got.keys() == expected.keys()
    for name in got:
        assert got[name] == pytest.approx(expected[name] / len(x), rel=1e-5, abs=1e-4), name
    assert bool(step.healthy())


@needs_cuda
@pytest.mark.parametrize("prior", [dict(), dict(sampler="pimc", gamma=1.0, trotter_slices=4),
                                   dict(sampler="pimc", gamma=(1.0, 0.0) * 16, trotter_slices=4),
                                   dict(iw_samples=3, lr_schedule="cosine", kl_warmup_epochs=1)],
                         ids=["pcd", "pimc", "pimc-per-unit", "iw-cosine-warmup"])
def test_graph_steps_compute_what_eager_steps_compute(small_data, prior):
    runs = [train(Config(epochs=2, device="cuda", cuda_graphs=graphs, **prior, **SMALL), small_data, progress=False)
            for graphs in (False, True)]
    assert numbers(runs[0].history) == numbers(runs[1].history)
    for name, value in runs[0].model.state_dict().items():
        assert torch.equal(runs[1].model.state_dict()[name], value), name


@needs_cuda
def test_graph_training_resumes_bit_for_bit(small_data, tmp_path):
    straight = train(Config(epochs=3, device="cuda", **SMALL), small_data, progress=False)
    train(Config(epochs=1, device="cuda", **SMALL), small_data, checkpoint_dir=tmp_path, progress=False)
    resumed = train(Config(epochs=3, device="cuda", **SMALL), small_data, checkpoint_dir=tmp_path,
                    resume_from=tmp_path / "last.pt", progress=False)
    assert numbers(resumed.history) == numbers(straight.history)


@needs_cuda
def test_the_step_is_captured_once_per_run(small_data):
    """One capture for the whole run (evaluation and log Z between epochs do not force a re-capture)."""
    import qvae.train_step as module

    captures = []
    original = module.TrainStep._capture

    def counting(self):
        captures.append(1)
        return original(self)

    module.TrainStep._capture = counting
    try:
        train(Config(epochs=3, device="cuda", **SMALL), small_data, progress=False)
    finally:
        module.TrainStep._capture = original
    assert len(captures) == 1


@needs_cuda
def test_graphed_probe_learns_what_the_eager_probe_learns():
    from qvae.metrics.probe import train_probe

    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (2000,), generator=gen)
    features = torch.nn.functional.one_hot(labels, 10).float() + 0.3 * torch.randn(2000, 10, generator=gen)
    results = [train_probe(features[:1500].cuda(), labels[:1500], features[1500:].cuda(), labels[1500:], epochs=3,
                           cuda_graphs=graphs) for graphs in (False, True)]
    assert results[0].accuracy == results[1].accuracy and results[1].accuracy > 0.9
