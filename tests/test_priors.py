"""The prior objects against independent truths: numpy enumeration of a tiny RBM, scipy's matrix
exponential of the dense quantum Hamiltonian, the finite-Trotter marginal PIMC targets, and N(0, I).

Sampling checks draw N states of a 3+3 RBM (64 states) and compare the histogram with the truth
in total variation against `tv_bound`; each also shows the bound would catch the wrong prior.
"""

from __future__ import annotations

import ast
import copy
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from qvae.config import Config
from qvae.models.gaussian import GaussianVAE
from qvae.models.qvae import QVAE
from qvae.priors.boltzmann import QBMPrior, RBMPrior
from qvae.priors.build import log_z_method, make_prior, make_sampler
from qvae.priors.gaussian import GaussianPrior
from qvae.priors.log_z import EXACT_LOG_Z_MAX_STATES
from qvae.priors.qbm import PIMCSampler
from qvae.priors.qbm_exact import exact_trotter_log_partition, exact_trotter_z_distribution
from qvae.priors.rbm import RBM
from qvae.priors.samplers import AnnealingSampler, PCDSampler

from .test_rbm import random_rbm
from .tv import empirical_tv, tv_bound

REPO = Path(__file__).resolve().parents[1]
TINY = dict(input_dim=6, hidden_dim=8, latent_dim=6, num_visible=3, num_hidden=3, device="cpu")
GAMMA, SLICES = 1.5, 8
QUANTUM = dict(sampler="pimc", gamma=GAMMA, trotter_slices=SLICES)
N = 20_000
BOUND = tv_bound(64, N)


# ---------------------------------------------------------------- independent truths
def states(n: int) -> np.ndarray:
    return np.array(list(itertools.product([0.0, 1.0], repeat=n)))


def numpy_energies(rbm: RBM) -> np.ndarray:
    """E(z) = -a.v - b.h - v W h of every state, lexicographic (visible first), in numpy."""
    w = rbm.weight.detach().double().numpy()
    a, b = rbm.visible_bias.detach().double().numpy(), rbm.hidden_bias.detach().double().numpy()
    z = states(rbm.num_units)
    v, h = z[:, :rbm.num_visible], z[:, rbm.num_visible:]
    return -(v @ a) - (h @ b) - np.einsum("ni,ij,nj->n", v, w, h)


def classical_truth(rbm: RBM) -> tuple[torch.Tensor, float]:
    """(p(z) over all states, log Z) by summing e^{-E} over every state."""
    log_unnorm = -numpy_energies(rbm)
    log_z = float(np.logaddexp.reduce(log_unnorm))
    return torch.from_numpy(np.exp(log_unnorm - log_z)), log_z


def quantum_truth(rbm: RBM, gamma: float | list[float]) -> tuple[torch.Tensor, float]:
    """(<z|e^{-H}|z> / Tr e^{-H}, log Tr e^{-H}), H = diag E - sum_i Γ_i σ^x_i, by scipy's expm
    (`gamma`: one Γ, or Γ_i per unit)."""
    n = rbm.num_units
    gammas = gamma if isinstance(gamma, list) else [gamma] * n
    sigma_x = np.array([[0.0, 1.0], [1.0, 0.0]])
    field = sum(g * np.kron(np.kron(np.eye(2**i), sigma_x), np.eye(2 ** (n - i - 1))) for i, g in enumerate(gammas))
    energies = numpy_energies(rbm)
    shift = energies.min()
    diagonal = np.diag(scipy.linalg.expm(-(np.diag(energies - shift) - field)))
    return torch.from_numpy(diagonal / diagonal.sum()), float(math.log(diagonal.sum()) - shift)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def rbm() -> RBM:
    return random_rbm(3, 3, scale=1.3, seed=1)


def rbm_prior(rbm: RBM, **config) -> RBMPrior:
    prior = make_prior(Config(**TINY, **config), rbm)
    assert isinstance(prior, RBMPrior)
    return prior


def qbm_prior(rbm: RBM, **config) -> QBMPrior:
    return QBMPrior(rbm, Config(**TINY, **{**QUANTUM, **config}))


# ---------------------------------------------------------------- which prior, what it reports
@pytest.mark.parametrize("config, kind, bound, names", [
    (dict(), RBMPrior, False, ("kl", "elbo")),
    (dict(sampler="pimc", trotter_slices=4), RBMPrior, False, ("kl", "elbo")),  # Γ = 0: the RBM, whatever samples it
    (QUANTUM, QBMPrior, True, ("kl_upper_bound", "q_elbo")),
    ({**QUANTUM, "gamma": (0.0, 0.0, 0.0, 0.0, 0.0, 0.5)}, QBMPrior, True, ("kl_upper_bound", "q_elbo")),
    ({**QUANTUM, "gamma": (0.0,) * 6}, RBMPrior, False, ("kl", "elbo")),  # Γ_i = 0 for every unit: the RBM
    (dict(prior="gaussian"), GaussianPrior, False, ("kl", "elbo")),
], ids=["rbm", "pimc-gamma0", "qbm", "qbm-per-unit", "per-unit-gamma0", "gaussian"])
def test_the_config_picks_the_prior_and_its_names(rbm, config, kind, bound, names):
    prior = make_prior(Config(**TINY, **config), rbm)
    assert type(prior) is kind and prior.is_bound is bound and (prior.kl_name, prior.elbo_name) == names
    assert prior.needs_log_z is (kind is not GaussianPrior)


def test_completing_with_log_z_adds_the_kl_and_elbo_under_the_priors_names(rbm):
    terms = {"cost": 90.0, "kl_unnormalized": -30.0}
    assert rbm_prior(rbm).complete_with_log_z(terms, 40.0) == {**terms, "kl": 10.0, "elbo": -100.0}
    assert qbm_prior(rbm).complete_with_log_z(terms, 40.0) == {**terms, "kl_upper_bound": 10.0, "q_elbo": -100.0}
    gaussian = {"cost": 90.0, "kl": 3.0, "elbo": -93.0}
    assert make_prior(Config(**TINY, prior="gaussian")).complete_with_log_z(gaussian, 40.0) == gaussian


@pytest.mark.parametrize("sizes, method", [
    ((3, 3), "exact"), ((16, 40), "exact"), ((17, 17), "ais"), ((40, 17), "ais"),
])
def test_rbm_log_z_method_follows_the_size_of_the_smaller_layer(sizes, method):
    nv, nh = sizes
    assert (2 ** min(sizes) <= EXACT_LOG_Z_MAX_STATES) == (method == "exact")
    config = Config(input_dim=6, hidden_dim=8, latent_dim=nv + nh, num_visible=nv, num_hidden=nh)
    assert make_prior(config, RBM(nv, nh)).log_z_method() == method == log_z_method(config)


@pytest.mark.parametrize("units, method", [(6, "exact"), (12, "exact"), (13, "ais_trotter_P8"), (40, "ais_trotter_P8")])
def test_qbm_log_z_method_is_exact_up_to_twelve_units(units, method):
    config = Config(input_dim=6, hidden_dim=8, latent_dim=units, num_visible=units // 2,
                    num_hidden=units - units // 2, **QUANTUM)
    assert make_prior(config, RBM(units // 2, units - units // 2)).log_z_method() == method == log_z_method(config)


def test_config_level_helpers_leave_the_global_random_stream_alone():
    state = torch.get_rng_state()
    assert log_z_method(Config(prior="gaussian")) == "none"
    assert isinstance(make_sampler(Config()), PCDSampler) and make_sampler(Config(prior="gaussian")) is None
    assert torch.equal(torch.get_rng_state(), state)


def test_each_prior_makes_the_sampler_it_needs(rbm):
    assert isinstance(rbm_prior(rbm).make_sampler(), PCDSampler)
    assert isinstance(rbm_prior(rbm, sampler="sa").make_sampler(), AnnealingSampler)
    classical = rbm_prior(rbm, sampler="pimc", trotter_slices=4).make_sampler()
    assert isinstance(classical, PIMCSampler) and classical.gamma == 0.0
    quantum = qbm_prior(rbm, sampler_chains=32).make_sampler()
    assert isinstance(quantum, PIMCSampler)
    assert (quantum.gamma, quantum.slices, quantum.num_chains) == (GAMMA, SLICES, 32)
    assert make_prior(Config(**TINY, prior="gaussian")).make_sampler() is None


def test_make_prior_refuses_a_boltzmann_prior_without_its_rbm():
    with pytest.raises(ValueError, match="wraps an RBM"):
        make_prior(Config(**TINY))


# ---------------------------------------------------------------- log Z against the truth
def test_rbm_log_z_is_exact_by_enumeration_and_ais_agrees(rbm):
    _, truth = classical_truth(rbm)
    prior = rbm_prior(rbm)
    log_z, err, how = prior.log_z(50, 50, torch.Generator().manual_seed(0))
    assert how == "exact" and err == 0.0 and log_z == pytest.approx(truth, abs=1e-9)
    log_z, err, how = prior.log_z(500, 300, torch.Generator().manual_seed(0), method="ais")
    assert how == "ais" and 0 < err < 0.01 and log_z == pytest.approx(truth, abs=4 * err + 1e-3)


def test_qbm_log_z_is_log_tr_exp_minus_h_and_its_ais_targets_the_trotter_trace(rbm):
    _, truth = quantum_truth(rbm, GAMMA)
    prior = qbm_prior(rbm)
    log_z, err, how = prior.log_z(50, 50, None)
    assert how == "exact" and err == 0.0 and log_z == pytest.approx(truth, abs=1e-9)
    log_z, err, how = prior.log_z(500, 300, torch.Generator().manual_seed(0), method="ais")
    assert how == f"ais_trotter_P{SLICES}" and 0 < err < 0.01
    assert log_z == pytest.approx(exact_trotter_log_partition(rbm, GAMMA, SLICES), abs=4 * err + 1e-3)
    assert abs(log_z - truth) < 0.05  # the Trotter error at P = 8


def test_exact_log_z_is_refused_beyond_the_rule():
    config = Config(input_dim=6, hidden_dim=8, latent_dim=34, num_visible=17, num_hidden=17)
    with pytest.raises(ValueError, match=r"exact log Z is out of reach for this prior \(17 \+ 17 units\)"):
        make_prior(config, RBM(17, 17)).log_z(2, 2, None, method="exact")
    with pytest.raises(ValueError, match="method must be auto, exact or ais"):
        make_prior(config, RBM(17, 17)).log_z(2, 2, None, method="enumerate")


# ---------------------------------------------------------------- samples against the truth
def test_rbm_prior_samples_its_distribution(rbm):
    exact, _ = classical_truth(rbm)
    quantum, _ = quantum_truth(rbm, GAMMA)
    assert 0.5 * (exact - quantum).abs().sum().item() > 3 * BOUND  # the test tells the priors apart
    prior = rbm_prior(rbm)
    assert empirical_tv(prior.sample(N, 30, torch.Generator().manual_seed(0)), exact) < BOUND
    n = 8000
    streams = [np.random.default_rng(seed) for seed in range(n)]
    assert empirical_tv(prior.sample_from_streams(streams, 20), exact) < tv_bound(64, n)
    negative = prior.make_sampler()
    for _ in range(10):
        z = negative.sample(rbm, N)
    assert empirical_tv(z, exact) < BOUND


def test_qbm_prior_samples_its_trotter_distribution(rbm):
    trotter = exact_trotter_z_distribution(rbm, GAMMA, SLICES)
    classical, _ = classical_truth(rbm)
    assert 0.5 * (trotter - classical).abs().sum().item() > 3 * BOUND
    prior = qbm_prior(rbm, sampler_sweeps=20)
    assert empirical_tv(prior.sample(N, 20, torch.Generator().manual_seed(0)), trotter) < BOUND
    n = 4000
    streams = [np.random.default_rng(seed) for seed in range(n)]
    assert empirical_tv(prior.sample_from_streams(streams, 10), trotter) < tv_bound(64, n)
    assert empirical_tv(prior.make_sampler().sample(rbm, N), trotter) < BOUND


def test_seeded_states_depend_only_on_their_own_stream(rbm):
    for prior in (rbm_prior(rbm), qbm_prior(rbm), GaussianPrior(6)):
        together = prior.sample_from_streams([np.random.default_rng(s) for s in (4, 9, 2)], 5)
        alone = prior.sample_from_streams([np.random.default_rng(9)], 5)
        assert torch.equal(together[1:2], alone), type(prior).__name__


def test_a_per_unit_qbm_prior_against_its_truths(rbm):
    """Γ_i per unit (a rigid unit in each layer): exact log Z against scipy's expm, and every way the prior
    samples (generation, per seed, the negative phase) against its Trotter marginal at P = 8."""
    gammas = [2.0, 0.0, 0.5, 0.0, 1.5, 3.0]
    prior = qbm_prior(rbm, gamma=tuple(gammas), sampler_sweeps=10)
    truth, log_z = quantum_truth(rbm, gammas)
    assert prior.log_z(2, 2, None) == (pytest.approx(log_z, abs=1e-9), 0.0, "exact")
    assert 0.5 * (truth - quantum_truth(rbm, sum(gammas) / 6)[0]).abs().sum().item() > 2 * BOUND  # it can fail
    trotter = exact_trotter_z_distribution(rbm, gammas, SLICES)
    assert 0.5 * (trotter - truth).abs().sum().item() < 0.01
    assert empirical_tv(prior.sample(N, 10, torch.Generator().manual_seed(0)), trotter) < BOUND
    n = 4000
    assert empirical_tv(prior.sample_from_streams([np.random.default_rng(s) for s in range(n)], 8), trotter) < tv_bound(
        64, n)
    assert empirical_tv(prior.make_sampler().sample(rbm, N), trotter) < BOUND
    kl = (truth * (truth * 64).log()).sum().item()
    assert prior.kl_to_uniform(log_z) == pytest.approx(kl, abs=1e-9)


# ---------------------------------------------------------------- Γ = 0: the QBM is the RBM
def test_a_qbm_at_gamma_zero_is_the_rbm(rbm):
    quantum, classical = qbm_prior(rbm, gamma=0.0), rbm_prior(rbm)
    assert quantum.log_z(2, 2, None)[0] == pytest.approx(classical.log_z(2, 2, None)[0], abs=1e-9)
    q_ais = quantum.log_z(64, 50, torch.Generator().manual_seed(3), method="ais")
    c_ais = classical.log_z(64, 50, torch.Generator().manual_seed(3), method="ais")
    assert q_ais[:2] == c_ais[:2]  # the same estimator, the same numbers
    exact, _ = classical_truth(rbm)
    assert empirical_tv(quantum.sample(N, 30, torch.Generator().manual_seed(1)), exact) < BOUND
    assert empirical_tv(quantum.make_sampler().sample(rbm, N), exact) < BOUND
    terms = {"cost": 90.0, "kl_unnormalized": -30.0}
    assert list(quantum.complete_with_log_z(terms, 40.0).values()) == list(classical.complete_with_log_z(
        terms, 40.0).values())


# ---------------------------------------------------------------- N(0, I)
def test_gaussian_prior_is_the_standard_normal():
    prior = GaussianPrior(3)
    z = prior.sample(200_000, None, torch.Generator().manual_seed(0))
    assert z.shape == (200_000, 3) and z.dtype == torch.float32
    z = z.double()
    assert (z.mean(0).abs() < 5 / math.sqrt(len(z))).all()
    assert ((z.var(0) - 1).abs() < 5 * math.sqrt(2 / len(z))).all()
    points = torch.tensor([[0.0, 1.0, -2.0], [3.0, 0.5, 0.0]])
    expected = scipy.stats.norm.logpdf(points.numpy()).sum(1)
    assert np.allclose(prior.log_prob(points).numpy(), expected, atol=1e-5)
    assert (prior.log_z(), prior.log_z_method(), prior.make_sampler()) == ((0.0, 0.0, "none"), "none", None)
    rows = prior.sample_from_streams([np.random.default_rng(5)])
    assert torch.equal(rows[0], torch.from_numpy(np.random.default_rng(5).standard_normal(3, dtype=np.float32)))


# ---------------------------------------------------------------- the models hold them
def test_the_models_state_dicts_hold_only_the_parameters_they_always_held():
    model = QVAE(Config(**TINY, **QUANTUM))
    assert model.latent_prior.rbm is model.prior and model.gamma == GAMMA
    assert {k.split(".")[0] for k in model.state_dict()} == {"data_mean", "train_bias", "encoder", "decoder", "prior"}
    gaussian = GaussianVAE(Config(**TINY, prior="gaussian"))
    assert {k.split(".")[0] for k in gaussian.state_dict()} == {"data_mean", "train_bias", "encoder", "decoder"}
    twin = copy.deepcopy(model).double()
    assert twin.latent_prior.rbm is twin.prior and twin.latent_prior.rbm is not model.prior
    assert twin.sample_prior(3, 1).dtype == torch.float64
    assert gaussian.double().latent_prior.sample(2).dtype == torch.float64


def test_only_the_priors_read_gamma():
    """train.py, the models and the metrics ask the prior object; none compares a `gamma` itself."""
    offenders = []
    for path in [REPO / "qvae" / "train.py", *(REPO / "qvae" / "models").glob("*.py"),
                 *(REPO / "qvae" / "metrics").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(isinstance(side, ast.Attribute) and side.attr == "gamma"
                                                     for side in [node.left, *node.comparators]):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders
