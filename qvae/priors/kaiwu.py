"""Two-way bridge between our samplers and kaiwu's Ising solvers.

kaiwu's convention (see `RBM.to_ising`): an (n+1)x(n+1) symmetric matrix J, the last spin
auxiliary, a solver returns spins s in {-1,+1}^(n+1) that maximise s^T J s and the binary state is
z = (s[:n] * s[n] + 1) / 2. Two directions:

- `IsingSolverSampler` makes any kaiwu `IsingSolver` (the licensed SA / CIM optimisers, or a
  community-SDK subclass) a negative-phase `Sampler` for the RBM prior.
- `SamplerIsingSolver` makes our samplers a kaiwu `IsingSolver` for RBM-structured matrices.

`load_kaiwu_solver` imports a solver by dotted name. The licensed enterprise SDK is an optional
extra (CPython 3.10 only) that asks for a licence on stdin; every call into it runs with an empty
stdin, so a missing licence becomes a `KaiwuUnavailableError` instead of a hang or a prompt.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from kaiwu.core import IsingSolver
from torch import Tensor

from qvae.priors.rbm import RBM, binary_to_spins, spins_to_binary
from qvae.priors.samplers import Sampler

_ALTERNATIVES = ("use sampler=pcd (persistent Gibbs chains, the default) or sampler=sa "
                 "(simulated annealing; sa_final_temperature=0.001 mimics kaiwu's optimiser)")


class KaiwuUnavailableError(RuntimeError):
    """The requested kaiwu solver cannot run here: SDK not installed or not licensed."""


# ---------------------------------------------------------------- kaiwu solver -> our Sampler
class IsingSolverSampler:
    """A `Sampler` backed by any object with `solve(ising_matrix) -> spins (k, n+1)`.

    Solvers return a fixed number of solutions per call (kaiwu's SA: `size_limit`), so `sample`
    calls `solve` until it holds n rows, then keeps a random subset of n: solvers may return
    their solutions sorted by energy, and taking the first n would favour low energies. Surplus
    rows are dropped, not cached, because the prior changes between training steps.

    kaiwu's optimisers anneal to T = 0.001 and return low-energy states, not samples of p(z) at
    T = 1; as a negative phase they bias the log Z gradient (see `qvae.priors.samplers`).
    """

    def __init__(self, solver: Any, seed: int = 0) -> None:
        if not callable(getattr(solver, "solve", None)):
            raise TypeError(f"solver must have a solve(ising_matrix) method, got {type(solver).__name__}")
        self.solver = solver
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def sample(self, prior: RBM, n: int) -> Tensor:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        ising = prior.to_ising()
        rows: list[np.ndarray] = []
        count = 0
        while count < n:
            spins = check_spins(self.solver.solve(ising), prior.num_units + 1, type(self.solver).__name__)
            rows.append(spins)
            count += len(spins)
        if not rows:
            return torch.zeros(0, prior.num_units, device=prior.weight.device, dtype=prior.weight.dtype)
        spins = np.concatenate(rows)
        keep = torch.randperm(len(spins), generator=self.generator)[:n].numpy()
        z = spins_to_binary(spins[keep])
        return z.to(device=prior.weight.device, dtype=prior.weight.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = state["seed"]
        self.generator = torch.Generator().manual_seed(self.seed)
        if "rng" in state:
            self.generator.set_state(state["rng"])


def check_spins(result: Any, width: int, source: str = "solver") -> np.ndarray:
    """Validate a solver's answer as a (k >= 1, width) array of ±1 and return it as float64."""
    if result is None:
        raise ValueError(f"{source}.solve returned None (no solution found)")
    try:
        spins = np.asarray(result, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}.solve returned something that is not a numeric array: {e}") from e
    if spins.ndim == 1:
        spins = spins[None, :]
    if spins.ndim != 2 or spins.shape[1] != width or spins.shape[0] == 0:
        raise ValueError(f"{source}.solve must return spins of shape (k >= 1, {width}) "
                         f"(n variables + 1 auxiliary spin), got shape {np.shape(result)}")
    if not np.isin(spins, (-1.0, 1.0)).all():
        bad = np.unique(spins[~np.isin(spins, (-1.0, 1.0))])[:5]
        raise ValueError(f"{source}.solve must return spins in {{-1, +1}}, got values such as {bad.tolist()}")
    return spins


# ---------------------------------------------------------------- loading kaiwu solvers safely
@contextlib.contextmanager
def no_stdin() -> Iterator[None]:
    """Run a block with an empty sys.stdin, so input() raises EOFError instead of waiting.

    Process-wide while it lasts (sys.stdin is global); it covers Python-level reads (input(),
    sys.stdin.readline), which is how the enterprise SDK asks for its licence.
    """
    saved = sys.stdin
    sys.stdin = io.StringIO("")
    try:
        yield
    finally:
        sys.stdin = saved


def _licence_error(name: str, exc: BaseException) -> KaiwuUnavailableError | None:
    """A KaiwuUnavailableError if `exc` looks like a licence prompt or licence failure."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, (EOFError, SystemExit)) or "licen" in text.lower():
        return KaiwuUnavailableError(
            f"kaiwu solver {name} is not licensed on this machine ({text}); it asked for a licence "
            "and stdin is closed so it cannot prompt. Run kaiwu.license.init(user_id=..., "
            "sdk_code=...) with your kaiwu credentials before training (see the SDK's documentation), "
            f"or {_ALTERNATIVES}.")
    return None


@contextlib.contextmanager
def _guarded(name: str) -> Iterator[None]:
    with no_stdin():
        try:
            yield
        except (Exception, SystemExit) as e:
            error = _licence_error(name, e)
            if error is None:
                raise
            raise error from e


class GuardedSolver:
    """Wraps a kaiwu solver so `solve` can never prompt: stdin is empty, licence errors converted."""

    def __init__(self, solver: Any, name: str | None = None) -> None:
        self.solver = solver
        self.name = name or type(solver).__name__

    def solve(self, ising_matrix: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        with _guarded(self.name):
            return self.solver.solve(ising_matrix, *args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        if attr == "solver":  # not yet set (copy, unpickling): avoid infinite recursion
            raise AttributeError(attr)
        return getattr(self.solver, attr)


def load_kaiwu_solver(dotted_name: str, **kwargs: Any) -> GuardedSolver:
    """Import and instantiate a solver class, e.g. "kaiwu.classical.SimulatedAnnealingOptimizer".

    Raises KaiwuUnavailableError when its module is missing (the enterprise SDK is an optional
    extra) or when it is not licensed. Import, construction and every solve run without stdin.
    """
    module_name, _, class_name = dotted_name.rpartition(".")
    if not module_name or not class_name:
        raise ValueError("expected a dotted name like 'kaiwu.classical.SimulatedAnnealingOptimizer', "
                         f"got {dotted_name!r}")
    try:
        with _guarded(dotted_name):
            module = importlib.import_module(module_name)
    except ImportError as e:
        raise KaiwuUnavailableError(
            f"cannot import {module_name} for the kaiwu solver {dotted_name} ({e}). The kaiwu "
            'enterprise SDK is an optional extra: pip install "qvae-mlops[kaiwu]" (CPython 3.10 '
            f"wheels only; it needs a licence). Otherwise {_ALTERNATIVES}.") from e
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"module {module_name} has no attribute {class_name!r}")
    with _guarded(dotted_name):
        solver = cls(**kwargs)
    return GuardedSolver(solver, dotted_name)


# ---------------------------------------------------------------- our Sampler -> kaiwu solver
def bipartition(couplings: np.ndarray) -> tuple[list[int], list[int]]:
    """Split the variables of a coupling matrix into two layers by BFS 2-colouring.

    Off-diagonal nonzero entries are edges. Isolated variables go to the first (visible) layer,
    except that one moves to the second if it would otherwise be empty. Raises ValueError if the
    graph has an odd cycle, i.e. the matrix is not RBM-structured under any ordering.
    """
    n = couplings.shape[0]
    adjacent = (couplings != 0) & ~np.eye(n, dtype=bool)
    colour = np.full(n, -1)
    for root in range(n):
        if colour[root] >= 0:
            continue
        colour[root] = 0
        queue = deque([root])
        while queue:
            i = queue.popleft()
            for j in np.flatnonzero(adjacent[i]):
                if colour[j] < 0:
                    colour[j] = 1 - colour[i]
                    queue.append(j)
                elif colour[j] == colour[i]:
                    raise ValueError(
                        f"the couplings graph is not bipartite (variables {i} and {j} are coupled and "
                        "lie on an odd cycle): it is not an RBM, so an RBM sampler cannot solve it")
    visible = [int(i) for i in np.flatnonzero(colour == 0)]
    hidden = [int(i) for i in np.flatnonzero(colour == 1)]
    if not hidden:
        isolated = [i for i in visible if not adjacent[i].any()]
        hidden = [isolated[-1]]
        visible.remove(isolated[-1])
    return visible, hidden


class SamplerIsingSolver(IsingSolver):
    """A kaiwu `IsingSolver` that samples an RBM-structured Ising matrix with one of our samplers.

    `_solve` discovers the two layers (any variable order), builds `RBM.from_ising` on the
    reordered matrix and returns `num_solutions` spin rows (auxiliary spin +1) in the original
    order. Note the objective: kaiwu maximises s^T J s, whereas a sampler at T = 1 draws s with
    probability proportional to exp(s^T J s); `AnnealingSampler(final_temperature=0.001)` makes
    it an optimiser. Pass a sampler, or a zero-argument factory to get a fresh sampler (e.g. new
    PCD chains) whenever the problem's structure changes.
    """

    def __init__(self, sampler: Sampler | Callable[[], Sampler], num_solutions: int = 100) -> None:
        super().__init__()
        if num_solutions < 1:
            raise ValueError(f"num_solutions must be >= 1, got {num_solutions}")
        if hasattr(sampler, "sample") and not isinstance(sampler, type):
            self.sampler: Sampler | None = sampler  # type: ignore[assignment]
            self._factory: Callable[[], Sampler] | None = None
        elif callable(sampler):  # a factory, a sampler class included
            self.sampler, self._factory = None, sampler
        else:
            raise TypeError("sampler must be a Sampler or a zero-argument callable returning one")
        self.num_solutions = num_solutions
        self._structure: tuple[int, ...] | None = None

    def _solve(self, ising_matrix: np.ndarray | None = None) -> np.ndarray:
        ising = np.asarray(ising_matrix, dtype=np.float64)
        if ising.ndim != 2 or ising.shape[0] != ising.shape[1] or ising.shape[0] < 3:
            raise ValueError(f"ising matrix must be square with at least 2 variables + 1 auxiliary "
                             f"spin, got shape {ising.shape}")
        n = ising.shape[0] - 1
        ising = (ising + ising.T) / 2.0  # s^T J s only sees the symmetric part
        np.fill_diagonal(ising, 0.0)  # s_i^2 = 1: the diagonal is a constant
        visible, hidden = bipartition(ising[:n, :n])
        order = visible + hidden
        rbm = RBM.from_ising(ising[np.ix_(order + [n], order + [n])], len(visible)).double()
        z = self._sampler_for(tuple(order) + (len(visible),)).sample(rbm, self.num_solutions)
        if tuple(z.shape) != (self.num_solutions, n):
            raise ValueError(f"sampler returned shape {tuple(z.shape)}, expected {(self.num_solutions, n)}")
        z_original = torch.empty_like(z)
        z_original[:, order] = z
        return binary_to_spins(z_original)

    def _sampler_for(self, structure: tuple[int, ...]) -> Sampler:
        if self._factory is not None and (self.sampler is None or structure != self._structure):
            self.sampler = self._factory()
        self._structure = structure
        assert self.sampler is not None
        return self.sampler


__all__ = [
    "KaiwuUnavailableError", "IsingSolverSampler", "SamplerIsingSolver", "GuardedSolver",
    "load_kaiwu_solver", "check_spins", "bipartition", "no_stdin",
]
