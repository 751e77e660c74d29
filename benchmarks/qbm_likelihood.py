"""The clamped path-integral estimate of log p_Γ(z) against exact quantum mechanics, and its cost.

For QBMs small enough for dense matrices (up to 12 qubits) it prints, per (size, Γ, P):
- max |error| of the AIS estimate of log p_P(z) against the exact P-slice value (dense (D T)^P),
  over every z (or a random subset of --max-states states), and the largest standard error;
- the Trotter bias log p_P(z) - log p(z) against dense quantum mechanics (max |.| and its mean, with
  sign: negative means the P-slice likelihood is lower than the true one), over the same z;
- seconds per z of the estimator (chains x betas stated) on this device.
The RBM weights are N(0, scale^2), scale 0.5 by default (couplings of order one).

    python benchmarks/qbm_likelihood.py [--sizes 2:2 4:4 6:6] [--gammas 0.5 1 2] [--slices 4 8 16]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import hardware, random_rbm

from qvae.priors.qbm_exact import exact_qbm_z_distribution, exact_trotter_log_partition, exact_trotter_z_distribution
from qvae.priors.qbm_likelihood import estimate_log_prob
from qvae.priors.rbm import all_binary_states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["2:2", "4:4", "6:6"], help="nv:nh pairs (nv + nh <= 12)")
    parser.add_argument("--gammas", nargs="+", type=float, default=[0.5, 1.0, 2.0])
    parser.add_argument("--slices", nargs="+", type=int, default=[4, 8, 16])
    parser.add_argument("--chains", type=int, default=64)
    parser.add_argument("--betas", type=int, default=200)
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--max-states", type=int, default=256, help="z per model (a random subset beyond it)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    hw = hardware(args.device)
    print(f"# log p_Γ(z): clamped path-integral AIS ({args.chains} chains x {args.betas} betas per z) vs dense QM "
          f"| weights N(0, {args.scale}^2) | {args.device} ({hw}) | torch {torch.__version__}")
    print(f"{'size':>6s} {'Γ':>4s} {'P':>3s} {'z':>5s} {'max|AIS - P-slice|':>18s} {'max stderr':>10s} "
          f"{'max|Trotter bias|':>17s} {'mean bias':>9s} {'s per z':>8s}")
    for size in args.sizes:
        nv, nh = map(int, size.split(":"))
        rbm = random_rbm(nv, nh, args.scale, "cpu", seed=nv * 100 + nh)
        states = all_binary_states(nv + nh, dtype=torch.float64)
        pick = torch.randperm(len(states), generator=torch.Generator().manual_seed(0))[:args.max_states]
        z = states[pick]
        for gamma in args.gammas:
            quantum = exact_qbm_z_distribution(rbm, gamma)[pick].log()
            for slices in args.slices:
                trotter = exact_trotter_z_distribution(rbm, gamma, slices)[pick].log()
                log_z = exact_trotter_log_partition(rbm, gamma, slices)
                start = time.perf_counter()
                result = estimate_log_prob(rbm.to(args.device), z.to(args.device), gamma, slices, log_z,
                                           chains=args.chains, betas=args.betas,
                                           generator=torch.Generator(device=args.device).manual_seed(1))
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                seconds = (time.perf_counter() - start) / len(z)
                rbm.to("cpu")
                error = (result.log_prob.cpu() - trotter).abs()
                bias = trotter - quantum
                print(f"{size:>6s} {gamma:4g} {slices:3d} {len(z):5d} {error.max().item():18.4f} "
                      f"{result.stderr.max().item():10.4f} {bias.abs().max().item():17.4f} "
                      f"{bias.mean().item():9.4f} {seconds:8.4f}", flush=True)


if __name__ == "__main__":
    main()
