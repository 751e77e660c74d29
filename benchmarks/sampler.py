"""Negative-phase samplers side by side: time of one call on a 128x128 RBM, and accuracy.

Accuracy is the total-variation distance of each sampler's output to the exact Boltzmann
distribution of a 6x6 RBM (4096 states, enumerated). kaiwu's example anneals T 100 -> 0.001
(alpha 0.95, 10 sweeps per temperature, 100 reads): an optimiser, hence its large TV.
dwave-samplers (C++ single-spin Metropolis) is timed when installed (`pip install dwave-samplers`).

    python benchmarks/sampler.py [--device cpu|cuda] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import platform

import numpy as np
import torch
from common import random_rbm, seconds_per_call

from qvae.priors.rbm import RBM, exact_distribution
from qvae.priors.samplers import AnnealingSampler, PCDSampler, geometric_temperatures, kaiwu_temperatures

KAIWU_SCHEDULE = kaiwu_temperatures(100.0, 0.95, 0.001, 10)  # 2250 sweeps
TV_SAMPLES = 20_000


def tv(samples: torch.Tensor, exact: torch.Tensor) -> float:
    weights = 2 ** torch.arange(samples.shape[1] - 1, -1, -1)
    index = (samples.cpu().round().long() * weights).sum(1)
    counts = torch.bincount(index, minlength=exact.numel()).double()
    return 0.5 * (counts / counts.sum() - exact).abs().sum().item()


def dwave_sampler():
    try:
        import dimod
        from dwave.samplers import SimulatedAnnealingSampler
    except ImportError:
        return None

    def sample(rbm: RBM, reads: int, temperatures: list[float], sweeps_per_t: int = 1) -> torch.Tensor:
        w = rbm.weight.detach().double().cpu().numpy()
        b = torch.cat([rbm.visible_bias, rbm.hidden_bias]).detach().double().cpu().numpy()
        nv = rbm.num_visible
        quadratic = {(i, nv + j): -w[i, j] for i in range(nv) for j in range(w.shape[1])}
        bqm = dimod.BinaryQuadraticModel(dict(enumerate(-b)), quadratic, 0.0, dimod.BINARY)
        result = SimulatedAnnealingSampler().sample(
            bqm, num_reads=reads, beta_schedule_type="custom", num_sweeps_per_beta=sweeps_per_t,
            beta_schedule=[1.0 / t for t in temperatures], seed=0)
        return torch.from_numpy(result.record.sample[:, np.argsort(result.variables)].astype(np.float32))

    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = args.device
    big = random_rbm(128, 128, scale=0.05, device=device, seed=0)
    small = random_rbm(6, 6, scale=0.7, device=device, seed=3)
    exact = exact_distribution(small.cpu()).float()
    small = small.to(device)
    dwave = dwave_sampler()

    rows: list[tuple[str, str, float, float]] = []
    reference = torch.multinomial(exact.double(), TV_SAMPLES, replacement=True,
                                  generator=torch.Generator().manual_seed(0))
    reference_states = ((reference[:, None] >> torch.arange(11, -1, -1)) & 1).float()
    rows.append(("exact iid draws (noise floor)", f"{TV_SAMPLES} draws from the enumeration", math.nan,
                 tv(reference_states, exact)))
    pcd = PCDSampler(256, 4, seed=0)
    pcd_tv = PCDSampler(TV_SAMPLES, 4, seed=0)
    for _ in range(25):  # 100 sweeps of burn-in, as during training the chains persist
        tv_samples = pcd_tv.sample(small, TV_SAMPLES)
    rows.append(("PCD (ours, the default)", "256 chains x 4 sweeps",
                 seconds_per_call(lambda: pcd.sample(big, 256), args.repeats, device), tv(tv_samples, exact)))
    sa1 = AnnealingSampler(256, 100, 100.0, 1.0, seed=0)
    rows.append(("SA to T=1 (ours)", "256 reads, 100 sweeps, T 100->1",
                 seconds_per_call(lambda: sa1.sample(big, 256), args.repeats, device),
                 tv(AnnealingSampler(TV_SAMPLES, 100, 100.0, 1.0, seed=1).sample(small, TV_SAMPLES), exact)))
    sak = AnnealingSampler(100, temperatures=KAIWU_SCHEDULE, seed=0)
    rows.append(("SA, kaiwu schedule (ours)", "100 reads, 2250 sweeps, T 100->0.001",
                 seconds_per_call(lambda: sak.sample(big, 100), args.repeats, device),
                 tv(AnnealingSampler(TV_SAMPLES, temperatures=KAIWU_SCHEDULE, seed=1).sample(small, TV_SAMPLES),
                    exact)))
    if dwave is not None:
        kaiwu_ts = sorted(set(KAIWU_SCHEDULE), reverse=True)
        rows.append(("dwave-samplers SA, kaiwu schedule", "100 reads, 2250 sweeps, T 100->0.001",
                     seconds_per_call(lambda: dwave(big.cpu(), 100, kaiwu_ts, 10), max(1, args.repeats // 2), "cpu"),
                     tv(dwave(small.cpu(), TV_SAMPLES, kaiwu_ts, 10), exact)))
        to_one = geometric_temperatures(100.0, 1.0, 100)
        rows.append(("dwave-samplers SA to T=1", "256 reads, 100 sweeps, T 100->1",
                     seconds_per_call(lambda: dwave(big.cpu(), 256, to_one), args.repeats, "cpu"),
                     tv(dwave(small.cpu(), TV_SAMPLES, to_one), exact)))
    else:
        rows.append(("dwave-samplers SA", "not installed (pip install dwave-samplers)", math.nan, math.nan))

    print(f"# negative-phase samplers | torch {torch.__version__} | device {device} "
          f"({torch.cuda.get_device_name() if device == 'cuda' else platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads)")
    print(f"# time: median of {args.repeats} calls on a 128x128 RBM; TV: {TV_SAMPLES} samples of a 6x6 RBM "
          "vs exact (compare with the noise floor row)")
    print(f"{'sampler':36s} {'setting':40s} {'s/call':>9s} {'TV 6x6':>8s}")
    for name, setting, seconds, distance in rows:
        print(f"{name:36s} {setting:40s} {seconds:9.4f} {distance:8.3f}")


if __name__ == "__main__":
    main()
