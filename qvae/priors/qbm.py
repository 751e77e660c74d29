"""The quantum prior: a transverse-field quantum Boltzmann machine with the RBM's structure.

In binary variables z in {0,1}^n (n = nv + nh, visible first) the Hamiltonian is

    H = diag(E(z)) - Gamma * sum_i sigma^x_i,        E(z) = -b^T z - z_v^T W z_h  (`RBM.energy`)

and the prior is its z-basis (measurement) distribution p(z) = <z|e^{-H}|z> / Tr e^{-H}. Gamma = 0
gives back the RBM. For diagonal parameters theta (b, W), d log Tr e^{-H} / d theta =
-E_p[dE/d theta] exactly, so z-basis samples give the exact log Z gradient (Khoshaman et al. 2018).

Path integral (Suzuki-Trotter, P slices, periodic), with a = Gamma / P:

    Tr e^{-H} ~ Tr (e^{-diag(E)/P} e^{a sum_i sigma^x_i})^P = sum over paths z^1..z^P of exp(-S),
    S = sum_k E(z^k) / P + 2 J sum_{k,i} [z^k_i != z^{k+1}_i] - n P log cosh a,
    J = J_perp = -1/2 log tanh a.

Derivation: per unit and neighbouring slices <z|e^{a sigma^x}|z'> is cosh a if z = z' and sinh a
otherwise, i.e. cosh a * tanh(a)^[z != z'] = cosh a * exp(-2 J [z != z']). In spins s = 2z - 1
that is sqrt(cosh a sinh a) * exp(J s s'): a ferromagnetic coupling J between identical units of
neighbouring slices. Since s s' = 1 - 2 [z != z'], in binary variables each bond costs 2 J per
disagreement plus the constant -(J + log sqrt(cosh a sinh a)) = -log cosh a (n P bonds). Each
slice sees E / P. The error of the z-marginal is O((Gamma / P)^2). `path_energy` is S;
`qbm_exact.exact_trotter_z_distribution` is the finite-P marginal that `PIMCSampler` targets exactly.

Per-unit field, H = diag(E(z)) - sum_i Gamma_i sigma^x_i: everything above holds unit by unit, with
a_i = Gamma_i / P and J_i. A unit with Gamma_i = 0 has J_i = inf: its world line cannot kink, so it
is one classical variable shared by all slices (weight e^{f_0 + ... + f_{P-1}} for x = 1). The
chain samplers and chain sums treat such rigid units exactly (`sample_ising_paths`,
`chain_log_partition`), with no small-Gamma stand-in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from qvae.priors.qbm_exact import Gamma, check_gamma, largest_gamma, trotter_coupling, unit_gammas
from qvae.priors.rbm import RBM, ais_log_mean
from qvae.priors.samplers import GeneratorState, bernoulli, restore_in_place

Coupling = float | Tensor  # J_perp of every unit, or per unit along the paths' last axis (inf: rigid)


def path_energy(prior: RBM, v: Tensor, h: Tensor, gamma: Gamma) -> Tensor:
    """S per path: sum_k E(z^k)/P + sum_i 2 J_i sum_k [z^k_i != z^{k+1}_i] - P sum_i log cosh(Gamma_i/P).

    v: (..., P, nv), h: (..., P, nh). Summing exp(-S) over all paths gives Tr (D T)^P exactly,
    where D and T are as in `exact_trotter_z_distribution` (without its energy shift). A unit with
    Gamma_i = 0 gives S = inf to every path in which it kinks (weight 0).
    """
    slices = v.shape[-2]
    z = torch.cat([v, h], dim=-1)
    if isinstance(gamma, Tensor):
        kinks = (z != torch.roll(z, -1, dims=-2)).sum(-2).to(z.dtype)  # (..., n)
        coupling = trotter_coupling(gamma.to(z), slices)
        cost = torch.where(kinks > 0, 2.0 * coupling * kinks, 0.0).sum(-1)  # 0 * inf would be nan
        constant = slices * torch.log(torch.cosh(gamma.to(z) / slices)).sum()
        return prior.energy(z).sum(-1) / slices + cost - constant
    kinks = (z != torch.roll(z, -1, dims=-2)).sum((-2, -1)).to(z.dtype)
    constant = prior.num_units * slices * math.log(math.cosh(gamma / slices))
    return prior.energy(z).sum(-1) / slices + 2.0 * trotter_coupling(gamma, slices) * kinks - constant


def unit_couplings(prior: RBM, gamma: Gamma, slices: int, like: Tensor) -> tuple[Coupling, Coupling]:
    """J_perp of the visible units and of the hidden units: one float each for a single Gamma; for
    per-unit Gamma, tensors (nv,) and (nh,) on `like`'s device and dtype (inf where Gamma_i = 0).
    Computed where Gamma is: pass Gamma on the paths' device inside a captured CUDA graph."""
    coupling = trotter_coupling(gamma, slices)
    if not isinstance(coupling, Tensor):
        return coupling, coupling
    if coupling.shape != (prior.num_units,):
        raise ValueError(f"gamma must hold one value per unit, {prior.num_units} (num_visible + num_hidden), "
                         f"got shape {tuple(coupling.shape)}")
    coupling = coupling.to(device=like.device, dtype=like.dtype)
    return coupling[: prior.num_visible], coupling[prior.num_visible:]


def free_chain_log_z(gamma: Gamma, slices: int, units: int, clamped: bool = False) -> float:
    """log of the path sum of `units` free units (E = 0): prod over bonds of cosh(a_i) tanh(a_i)^[kink].

    Per unit P log cosh a + log((1+t)^P + (1-t)^P), t = tanh a, a = Gamma_i / P (log 2 for a rigid
    unit, Gamma_i = 0); `clamped` (slice 0 fixed) halves each unit's sum. The AIS start of log Z."""
    def one(unit_gamma: float) -> float:
        a = unit_gamma / slices
        t = math.tanh(a)
        value = slices * math.log(math.cosh(a)) + slices * math.log1p(t) + math.log1p(((1.0 - t) / (1.0 + t)) ** slices)
        return value - math.log(2.0) if clamped else value

    if isinstance(gamma, Tensor):
        return sum(one(g) for g in unit_gammas(gamma, units))
    return units * one(gamma)


# ---------------------------------------------------------------- path-integral Monte Carlo
UPDATES = ("worldline", "checkerboard")


class PIMCSampler:
    """Path-integral Monte Carlo for the z-marginal of the QBM prior, persistent like `PCDSampler`.

    State: visible (chains, P, nv) and hidden (chains, P, nh) binary paths. Slice k feels E / P
    and the same unit in slices k +- 1 through 2 J s (spins s = 2z - 1): the logit of visible unit
    i of slice k is (b_v + W h^k)_i / P + 2 J (s^{k-1}_i + s^{k+1}_i), and likewise for hidden
    units. Both update rules are block Gibbs on the bipartite structure (see `pimc_sweep`):

    - "worldline" (default): given every hidden slice, the visible paths of different units and
      chains are independent periodic 1D Ising chains; each is resampled exactly (transfer
      matrices, O(P)), then the hidden paths likewise. Whole paths flip in one step.
    - "checkerboard": with P even the (unit, slice) graph is bipartite; visible units of even
      slices and hidden units of odd slices are resampled together, then the other half. Cheaper
      per sweep, but a unit in a uniform path flips only against 4 J ~ 2 log(P / Gamma), so it
      mixes slowly at large P (hundreds of sweeps where world-line sweeps need a few: measured in
      docs/results.md).

    `sample` returns slice 0 of every chain: the periodic path is invariant under cyclic shifts of
    the slices, so every slice has the same marginal, the Trotter approximation of p(z) (error
    O((Gamma/P)^2)). Gamma = 0 locks the slices together (J = inf); the sweep is then the
    classical block-Gibbs sweep on slice 0 at temperature 1, copied to every slice, so the sampler
    targets the RBM exactly.

    `gamma` may be one value per unit (visible first): each unit's world line then has its own J,
    and a unit with Gamma_i = 0 a rigid one (world-line update only: single-slice flips never move
    it). `anneal_gamma` (one Gamma per sweep, e.g. decreasing to 0) makes it simulated quantum
    annealing: each call starts fresh chains and runs the schedule (in place of `gamma` and
    `sweeps`) with the same sweep code.
    """

    def __init__(self, num_chains: int = 256, slices: int = 16, sweeps: int = 4, gamma: Gamma | Sequence[float] = 1.0,
                 seed: int = 0, anneal_gamma: Sequence[float] | None = None, update: str = "worldline") -> None:
        if num_chains < 1:
            raise ValueError(f"num_chains must be >= 1, got {num_chains}")
        if sweeps < 1:
            raise ValueError(f"sweeps must be >= 1, got {sweeps}")
        if update not in UPDATES:
            raise ValueError(f"update must be one of {', '.join(UPDATES)}; got {update!r}")
        gamma = check_gamma(gamma)
        schedule = None if anneal_gamma is None else [check_gamma(g, "each anneal_gamma value")
                                                      for g in anneal_gamma]
        if schedule is not None and not schedule:
            raise ValueError("anneal_gamma must hold at least one Gamma (one per sweep)")
        check_slices(slices, max(schedule or [largest_gamma(gamma)]), update)
        if update == "checkerboard" and isinstance(gamma, Tensor) and bool((gamma == 0).any()):
            raise ValueError("update='checkerboard' needs every Gamma_i > 0: a unit with Gamma_i = 0 has a rigid "
                             "world line, which single-slice flips never move; use update='worldline'")
        self.num_chains, self.slices, self.sweeps, self.gamma = num_chains, slices, sweeps, gamma
        self.anneal_gamma, self.update = schedule, update
        self.visible: Tensor | None = None
        self.hidden: Tensor | None = None
        self._placed: Tensor | None = None  # per-unit Gamma on the chains' device (`_gamma_on`)
        self._rng = GeneratorState(seed)

    @torch.no_grad()
    def sample(self, prior: RBM, n: int | None = None) -> Tensor:
        """n z-basis samples (n, nv + nh) in {0,1}: slice 0 of n chains after this call's sweeps."""
        n = self.num_chains if n is None else n
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        device, dtype = prior.weight.device, prior.weight.dtype
        gen = self._rng.generator_for(device)
        shapes = ((n, self.slices, prior.num_visible), (n, self.slices, prior.num_hidden))
        if self.anneal_gamma is not None or self.visible is None or self.hidden is None \
                or (self.visible.shape, self.hidden.shape) != shapes:
            self.num_chains = n
            self.visible, self.hidden = uniform_paths(prior, n, self.slices, gen)
        self.visible = self.visible.to(device=device, dtype=dtype)
        self.hidden = self.hidden.to(device=device, dtype=dtype)
        v, h = self.visible, self.hidden
        for gamma in self.anneal_gamma or [self._gamma_on(device)] * self.sweeps:
            v, h = pimc_sweep(prior, v, h, gamma, gen, self.update)
        self.visible.copy_(v)  # in place: the paths stay the tensors a captured training step reads
        self.hidden.copy_(h)
        return torch.cat([v[:, 0], h[:, 0]], dim=1)

    def _gamma_on(self, device: torch.device) -> Gamma:
        """Gamma for the sweeps: per-unit values copied to `device` once, so that a captured training
        step computes its couplings there instead of copying from the host."""
        if not isinstance(self.gamma, Tensor):
            return self.gamma
        if self._placed is None or self._placed.device != device:
            self._placed = self.gamma.to(device)
        return self._placed

    def graph_inputs(self) -> tuple[Any, ...] | None:
        """The state a captured training step reads and updates in place (train_step.py); None while
        annealing (every call starts fresh paths)."""
        if self.anneal_gamma is not None or self.visible is None or self.hidden is None:
            return None
        return self.visible, self.hidden, self._rng.generator

    def state_dict(self) -> dict[str, Any]:
        gamma = self.gamma.clone() if isinstance(self.gamma, Tensor) else self.gamma
        return {"num_chains": self.num_chains, "slices": self.slices, "sweeps": self.sweeps,
                "gamma": gamma, "anneal_gamma": None if self.anneal_gamma is None else list(self.anneal_gamma),
                "update": self.update, "visible": _copy(self.visible), "hidden": _copy(self.hidden),
                "rng": self._rng.state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_chains, self.slices, self.sweeps = state["num_chains"], state["slices"], state["sweeps"]
        self.gamma, self.anneal_gamma, self.update = check_gamma(state["gamma"]), state["anneal_gamma"], state["update"]
        if isinstance(self.gamma, Tensor):  # in place where it was placed: a captured step keeps reading it
            self._placed = restore_in_place(self._placed, self.gamma)
        self.visible = restore_in_place(self.visible, state["visible"])
        self.hidden = restore_in_place(self.hidden, state["hidden"])
        self._rng.load(state["rng"])


def check_slices(slices: int, max_gamma: float, update: str) -> None:
    if max_gamma == 0 and slices >= 1:
        return
    if slices < 2:
        raise ValueError(f"slices must be >= 2 when Gamma > 0 (>= 1 when Gamma = 0), got {slices}")
    if update == "checkerboard" and slices % 2:
        raise ValueError(f"slices must be even for update='checkerboard' (the even/odd slice blocks of a "
                         f"periodic path), got {slices}")


def uniform_paths(prior: RBM, n: int, slices: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Uniformly random states, the same in every slice (no kinks: near equilibrium at small Gamma)."""
    device, dtype = prior.weight.device, prior.weight.dtype
    z = torch.randint(0, 2, (n, 1, prior.num_units), generator=gen, device=device).to(dtype)
    z = z.expand(n, slices, prior.num_units)
    return z[..., : prior.num_visible].contiguous(), z[..., prior.num_visible:].contiguous()


def _copy(paths: Tensor | None) -> Tensor | None:
    """A CPU copy, so that a state dict and the sampler never share a tensor."""
    return None if paths is None else paths.detach().to("cpu", copy=True)


@torch.no_grad()
def pimc_sweep(prior: RBM, v: Tensor, h: Tensor, gamma: Gamma, generator: torch.Generator | None,
               update: str = "worldline") -> tuple[Tensor, Tensor]:
    """One sweep over paths v (chains, P, nv), h (chains, P, nh) at transverse field Gamma (one value,
    or one per unit); new (v, h). update='checkerboard' needs every Gamma_i > 0 (see `PIMCSampler`)."""
    slices = v.shape[1]
    coupling_v, coupling_h = unit_couplings(prior, gamma, slices, v)
    if not isinstance(coupling_v, Tensor) and math.isinf(coupling_v):  # Gamma = 0: block Gibbs on slice 0, copied
        v0 = bernoulli(prior.visible_logits(h[:, 0]), generator)
        h0 = bernoulli(prior.hidden_logits(v0), generator)
        return v0[:, None].expand_as(v), h0[:, None].expand_as(h)  # views: never written in place
    beta = 1.0 / slices
    if update == "worldline":
        v = sample_ising_paths(prior.visible_logits(h, beta), coupling_v, generator)
        h = sample_ising_paths(prior.hidden_logits(v, beta), coupling_h, generator)
        return v, h
    v, h = v.clone(), h.clone()
    even, odd = slice(0, None, 2), slice(1, None, 2)
    for v_part, h_part in ((even, odd), (odd, even)):  # the two colours of the (unit, slice) graph
        v[:, v_part] = bernoulli(prior.visible_logits(h[:, v_part], beta)
                                 + 2.0 * coupling_v * _neighbour_spins(v, v_part), generator)
        h[:, h_part] = bernoulli(prior.hidden_logits(v[:, h_part], beta)
                                 + 2.0 * coupling_h * _neighbour_spins(h, h_part), generator)
    return v, h


def _neighbour_spins(x: Tensor, part: slice) -> Tensor:
    """s^{k-1} + s^{k+1} (s = 2x - 1) for the slices k in `part` (even or odd; P even, periodic)."""
    if part.start == 0:  # even slice 2m: odd neighbours 2m - 1 and 2m + 1
        other = 2.0 * x[:, 1::2] - 1.0
        return other + torch.roll(other, 1, dims=1)
    other = 2.0 * x[:, 0::2] - 1.0  # odd slice 2m + 1: even neighbours 2m and 2m + 2
    return other + torch.roll(other, -1, dims=1)


def sample_ising_paths(fields: Tensor, coupling: Coupling, generator: torch.Generator | None,
                       uniforms: Tensor | None = None) -> Tensor:
    """Exact samples of independent periodic binary chains: p(x) ~ exp(sum_k f_k x_k - 2J #kinks).

    fields: (chains, P, m), one chain per (chains, m). Transfer matrices A_k[x, y] =
    e^{f_k x} t^[x != y] with t = tanh(Gamma/P) = e^{-2J}; S_k = A_k ... A_{P-1}. A backward pass
    keeps, for both values a of x_0, the log ratio d_k(a) = log S_k[1, a] / S_k[0, a] and the log of
    S_0[0, a]; x_0 is drawn from diag(S_0), then x_k given x_{k-1} with logit d_k(x_0) + 2J s_{k-1}.
    `coupling` is one J, or one per unit (m,); J = inf (Gamma_i = 0) makes a unit's path constant,
    1 with probability sigmoid(sum_k f_k), decided by its first uniform.
    `uniforms` (the shape of `fields`, in (0, 1)) replaces the generator's draws, e.g. per-seed streams.
    """
    slices = fields.shape[1]
    log_t, rigid = _log_t(coupling, fields)
    fields = fields.transpose(0, 1).contiguous()  # (P, chains, m): one contiguous block per slice
    a = torch.arange(2, device=fields.device, dtype=fields.dtype)[:, None, None]  # no host copy: capturable
    d = fields[-1] + log_t * (1.0 - 2.0 * a)  # (2, chains, m); S_{P-1}[x, a] = e^{f x} t^[x != a]
    log_s0 = log_t * a  # log S_k[0, a]
    ratios = [d]
    for k in range(slices - 2, -1, -1):  # S_k = A_k S_{k+1}
        kink = F.softplus(d + log_t)
        log_s0 = log_s0 + kink
        d = (fields[k] + log_t) + F.softplus(d - log_t) - kink
        ratios.append(d)
    ratios.reverse()
    if uniforms is None:
        u = torch.rand(fields.shape, generator=generator, device=fields.device, dtype=fields.dtype)
    else:
        u = uniforms.transpose(0, 1).to(fields).clamp(1e-12, 1.0 - 1e-7)
    x = u[0] < torch.sigmoid(log_s0[1] + ratios[0][1] - log_s0[0])
    stacked = torch.stack(ratios, dim=1)  # (2, P, chains, m)
    ratio = torch.lerp(stacked[0], stacked[1], x.to(fields.dtype))  # d_k(x_0); lerp is far faster than where
    threshold = torch.logit(u) - ratio  # x_k = 1 iff threshold_k < 2J s_{k-1}
    below_minus, below_plus = threshold < log_t, threshold < -log_t
    paths = [x]
    for k in range(1, slices):
        x = below_minus[k] | (x & below_plus[k])
        paths.append(x)
    sampled = torch.stack(paths, dim=1).to(fields.dtype)
    if rigid is None:
        return sampled
    constant = (u[0] < torch.sigmoid(fields.sum(0))).to(fields.dtype)  # (chains, m): the whole path's value
    return torch.where(rigid, constant[:, None], sampled)


def _log_t(coupling: Coupling, like: Tensor) -> tuple[float | Tensor, Tensor | None]:
    """(log t = -2J, the rigid units' mask or None): per-unit J on `like`'s device and dtype, the rigid
    units (J = inf) given t = 1, a free chain whose samples `sample_ising_paths` then replaces."""
    if not isinstance(coupling, Tensor):
        return -2.0 * coupling, None
    log_t = (-2.0 * coupling).to(like)
    rigid = torch.isinf(log_t)
    return log_t.masked_fill(rigid, 0.0), rigid


def chain_log_partition(fields: Tensor, coupling: Coupling) -> Tensor:
    """log sum_x exp(sum_k f_k x_k - 2J #kinks) of independent periodic binary chains.

    fields: (chains, P, m) -> (chains, m). A product of 2x2 transfer matrices in log space. Per-unit
    J (m,) may be inf (a rigid unit): log t = -inf then keeps only the two constant paths.
    """
    log_t = (-2.0 * coupling).to(fields) if isinstance(coupling, Tensor) else -2.0 * coupling
    f = fields.transpose(0, 1)  # (P, chains, m)
    zero = torch.zeros_like(f[0])
    # m_ab: log (B_0 ... B_k)[a, b], B_k[x, y] = e^{f_k x} t^[x != y]; the trace closes the periodic chain
    m00, m01, m10, m11 = zero, zero + log_t, f[0] + log_t, f[0]
    for k in range(1, f.shape[0]):
        one = f[k]  # weight of x_k = 1 (row index of B_k)
        m00, m01 = torch.logaddexp(m00, m01 + one + log_t), torch.logaddexp(m00 + log_t, m01 + one)
        m10, m11 = torch.logaddexp(m10, m11 + one + log_t), torch.logaddexp(m10 + log_t, m11 + one)
    return torch.logaddexp(m00, m11)


@torch.no_grad()
def estimate_qbm_log_z(prior: RBM, gamma: Gamma, slices: int, num_chains: int = 256, num_betas: int = 300,
                       generator: torch.Generator | None = None) -> tuple[float, float]:
    """AIS estimate of log Tr (D T)^P, the P-slice approximation of log Tr e^{-H}, and its standard error.

    The classical system of visible paths (hidden paths summed out exactly, `chain_log_partition`)
    is annealed from beta = 0, where every unit is a free periodic chain with log Z in closed form
    (`free_chain_log_z`), to beta = 1, with world-line Gibbs transitions. Estimator of Z unbiased,
    log Z a stochastic lower bound; the Trotter error O((Gamma / P)^2) is not in the standard error.
    Gamma = 0 (every Gamma_i = 0) is the RBM's AIS.
    """
    gamma = check_gamma(gamma, units=prior.num_units)
    if largest_gamma(gamma) == 0:
        return prior.log_partition_ais(num_chains, num_betas, generator)
    if num_chains < 2 or num_betas < 2:
        raise ValueError(f"num_chains and num_betas must be >= 2, got {num_chains}, {num_betas}")
    check_slices(slices, largest_gamma(gamma), "worldline")
    w, dtype = prior.weight, prior.weight.dtype
    coupling_v, coupling_h = unit_couplings(prior, gamma, slices, w)
    log_z0 = free_chain_log_z(gamma, slices, prior.num_units)

    def log_unnorm(v: Tensor, beta: float) -> Tensor:  # kink terms of v cancel between betas: left out
        visible = (v @ prior.visible_bias).sum(-1) * (beta / slices)
        return visible + chain_log_partition(prior.hidden_logits(v, beta / slices), coupling_h).sum(-1)

    zeros = torch.zeros(num_chains, slices, prior.num_visible, device=w.device, dtype=dtype)
    v = sample_ising_paths(zeros, coupling_v, generator)  # exact samples of beta = 0
    log_weights = torch.zeros(num_chains, dtype=torch.float64, device=w.device)
    betas = torch.linspace(0.0, 1.0, num_betas).tolist()
    for prev, beta in zip(betas[:-1], betas[1:]):
        log_weights += (log_unnorm(v, beta) - log_unnorm(v, prev)).double()
        h = sample_ising_paths(prior.hidden_logits(v, beta / slices), coupling_h, generator)
        v = sample_ising_paths(prior.visible_logits(h, beta / slices), coupling_v, generator)
    log_mean_w, stderr = ais_log_mean(log_weights)
    return log_z0 + log_mean_w.item(), stderr.item()


@torch.no_grad()
def seeded_qbm_states(prior: RBM, streams: Sequence[Any], gamma: Gamma, slices: int, sweeps: int) -> Tensor:
    """z-basis samples (len(streams), n), row i drawing every random number from numpy stream i.

    Kink-free uniformly random paths, then `sweeps` world-line sweeps; slice 0 of each path. A row
    depends only on its own stream, so one seed gives one state alone or in any batch.
    """
    device, dtype = prior.weight.device, prior.weight.dtype
    nv, nh = prior.num_visible, prior.num_hidden
    coupling_v, coupling_h = unit_couplings(prior, gamma, slices, prior.weight)

    def draw(count: int, *shape: int) -> Tensor:
        rows = [stream.random(count, dtype="float32") for stream in streams]
        return torch.from_numpy(np.stack(rows)).to(device=device, dtype=dtype).reshape(len(streams), *shape)

    start = (draw(nv + nh, 1, nv + nh) < 0.5).to(dtype).expand(-1, slices, -1)
    v, h = start[..., :nv].contiguous(), start[..., nv:].contiguous()
    for _ in range(sweeps):
        v = sample_ising_paths(prior.visible_logits(h, 1.0 / slices), coupling_v, None, draw(slices * nv, slices, nv))
        h = sample_ising_paths(prior.hidden_logits(v, 1.0 / slices), coupling_h, None, draw(slices * nh, slices, nh))
    return torch.cat([v[:, 0], h[:, 0]], dim=1)


__all__ = [
    "UPDATES",
    "PIMCSampler",
    "chain_log_partition",
    "estimate_qbm_log_z",
    "free_chain_log_z",
    "path_energy",
    "pimc_sweep",
    "sample_ising_paths",
    "seeded_qbm_states",
    "unit_couplings",
]
