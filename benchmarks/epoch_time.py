"""Seconds per training epoch of the default config (the seed's) on full MNIST, RBM vs QBM prior.

An epoch here is everything `qvae train` does per epoch: 235 Adam steps with the negative phase,
the validation pass over the 10 000 test images, and the log Z estimate (AIS; for the QBM, AIS of
the P-slice path integral). Each run is `sampler:gamma`: `pcd:0` is the classical default,
`pimc:1` the QBM with a transverse field of 1 sampled by path-integral Monte Carlo (P =
--slices). docs/results.md compares the figures with the kaiwu-pytorch-plugin example's epoch.

    python benchmarks/epoch_time.py [--epochs 3] [--device cpu|cuda] [--runs pcd:0 pimc:1] [--slices 16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from common import hardware

from qvae.config import Config
from qvae.data.mnist import load_mnist
from qvae.priors.build import log_z_method
from qvae.train import elbo_key, evaluate, train

KAIWU_EXAMPLE_SECONDS = "33-57"


def time_run(config: Config, data) -> dict[str, object]:
    result = train(config, data, progress=False)
    per_epoch = [h["epoch_seconds"] for h in result.history]
    model, device = result.model, result.device
    gen = torch.Generator(device=device).manual_seed(0)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    evaluate(model, result.sampler, data.test_x.to(device), config.batch_size, gen)
    sync()
    val_seconds = time.perf_counter() - start
    start = time.perf_counter()
    model.latent_prior.log_z(config.log_z_chains, config.log_z_betas, gen)
    sync()
    last = result.history[-1]
    key = elbo_key(last, "val_")
    return {"device": device, "epochs": per_epoch, "median": statistics.median(per_epoch[1:] or per_epoch),
            "val": val_seconds, "log_z": time.perf_counter() - start, "elbo": f"{key} {last[key]:.2f}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runs", nargs="+", default=["pcd:0", "pimc:1"], help="sampler:gamma pairs")
    parser.add_argument("--slices", type=int, default=16, help="Trotter slices P of the pimc runs")
    parser.add_argument("--data-dir", default=os.environ.get("QVAE_DATA_DIR", "data"))
    args = parser.parse_args()

    data = load_mnist(args.data_dir)
    rows = []
    for run in args.runs:
        sampler, gamma = run.split(":")
        config = Config(epochs=args.epochs, device=args.device, sampler=sampler, gamma=float(gamma),
                        trotter_slices=args.slices, data_dir=args.data_dir)
        rows.append((f"{sampler} gamma={float(gamma):g}" + (f" P={args.slices}" if sampler == "pimc" else ""),
                     log_z_method(config), time_run(config, data)))

    device = rows[0][2]["device"]
    hw = hardware(str(device))
    print(f"# epoch time, default config (784-512-256, 128+128 latent, batch 256, 256 chains x 4 sweeps) "
          f"on 60 000 MNIST images, {args.epochs} epochs | torch {torch.__version__} | {device} ({hw})")
    print(f"# kaiwu-pytorch-plugin example (RBM, kaiwu SA, CPU): {KAIWU_EXAMPLE_SECONDS} s per epoch")
    print(f"{'prior / sampler':24s} {'s/epoch':>8s} {'valid s':>8s} {'log Z s':>8s} {'log Z by':>16s}  "
          f"{'every epoch':24s} final")
    for label, method, r in rows:
        every = " ".join(f"{s:.1f}" for s in r["epochs"])
        print(f"{label:24s} {r['median']:8.2f} {r['val']:8.2f} {r['log_z']:8.2f} {method:>16s}  {every:24s} "
              f"{r['elbo']}")


if __name__ == "__main__":
    main()
