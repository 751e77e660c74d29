"""Spin updates per second of path-integral Monte Carlo (`qvae.priors.qbm.PIMCSampler`) against PCD.

A 128x128 QBM (the default latent split) with P = 16 Trotter slices and 256 chains: one PIMC sweep
resamples chains x P x 256 spins, one PCD sweep chains x 256 (plus a final hidden layer per call).
Both update rules are timed: "worldline" (exact resampling of every unit's periodic path, the
default) and "checkerboard" (even/odd slices), and the Gamma = 0 fallback (classical Gibbs on one
slice, copied to all: counted as chains x 256 per sweep).

    python benchmarks/pimc.py [--devices cpu cuda] [--chains 256] [--slices 16] [--sweeps 4]
                              [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import os

import torch
from common import cpu_name, random_rbm, seconds_per_call

from qvae.priors.qbm import PIMCSampler
from qvae.priors.samplers import PCDSampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--visible", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--chains", type=int, default=256)
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--sweeps", type=int, default=4, help="sweeps per sample() call")
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    n, c, p, s = args.visible + args.hidden, args.chains, args.slices, args.sweeps
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"# PIMC vs PCD, RBM {args.visible}x{args.hidden}, {c} chains, {s} sweeps per call, Gamma {args.gamma} "
          f"| torch {torch.__version__} | {torch.get_num_threads()} CPU threads{load}")
    for device in args.devices:
        name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else (
            f"{cpu_name()}, {os.cpu_count()} cores")
        print(f"# {device}: {name}")
    print(f"{'device':7s} {'sampler':24s} {'s per call':>11s} {'spin updates/s':>15s} {'vs PCD':>7s}")
    for device in args.devices:
        rbm = random_rbm(args.visible, args.hidden, 0.1, device)
        runs = [  # (label, sampler, spin updates per call)
            ("PCD (classical)", PCDSampler(c, s, seed=0), c * (s * n + args.hidden)),
            (f"PIMC worldline P={p}", PIMCSampler(c, p, s, args.gamma, seed=0), c * p * n * s),
            (f"PIMC checkerboard P={p}", PIMCSampler(c, p, s, args.gamma, seed=0, update="checkerboard"),
             c * p * n * s),
            ("PIMC Gamma=0 (classical)", PIMCSampler(c, p, s, 0.0, seed=0), c * n * s),
        ]
        pcd_rate = None
        for label, sampler, updates in runs:
            seconds = seconds_per_call(lambda s=sampler, r=rbm: s.sample(r, c), args.repeats, device)
            rate = updates / seconds
            pcd_rate = pcd_rate or rate
            print(f"{device:7s} {label:24s} {seconds:11.5f} {rate:15.3e} {rate / pcd_rate:7.2f}", flush=True)


if __name__ == "__main__":
    main()
