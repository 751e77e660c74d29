"""The negative-phase sampler a config asks for: PCD, simulated annealing, a kaiwu solver, or PIMC."""

from __future__ import annotations

from qvae.config import Config
from qvae.priors.qbm import PIMCSampler
from qvae.priors.samplers import AnnealingSampler, PCDSampler, Sampler


def make_sampler(config: Config) -> Sampler:
    """The negative-phase sampler a config asks for (`sampler`, `sampler_chains`, ...)."""
    if config.sampler == "pcd":
        return PCDSampler(config.sampler_chains, config.sampler_sweeps, seed=config.seed)
    if config.sampler == "sa":
        return AnnealingSampler(config.sampler_chains, config.sampler_sweeps, config.sa_initial_temperature,
                                config.sa_final_temperature, seed=config.seed)
    if config.sampler == "kaiwu":  # imported here: kaiwu's own import is slow and only this sampler needs it
        from qvae.priors.kaiwu import IsingSolverSampler, load_kaiwu_solver

        return IsingSolverSampler(load_kaiwu_solver(config.kaiwu_solver), seed=config.seed)
    if config.sampler == "pimc":
        return PIMCSampler(config.sampler_chains, config.trotter_slices, config.sampler_sweeps, config.gamma,
                           seed=config.seed)
    raise ValueError(f"sampler must be one of pcd, sa, kaiwu, pimc; got {config.sampler!r}")
