"""Seconds per training epoch of the default config (the seed's) on full MNIST.

An epoch here is everything `qvae train` does per epoch: 235 Adam steps with the PCD negative
phase, the validation pass over the 10 000 test images, and the AIS log Z estimate. The
kaiwu-pytorch-plugin example reports 33-57 s per epoch on a CPU for the same architecture.

    python benchmarks/epoch_time.py [--epochs 3] [--device cpu|cuda] [--sampler pcd|sa]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from qvae.config import Config
from qvae.data import load_mnist
from qvae.train import estimate_log_z, evaluate, train

KAIWU_EXAMPLE_SECONDS = "33-57"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sampler", default="pcd")
    parser.add_argument("--data-dir", default=os.environ.get("QVAE_DATA_DIR", "data"))
    args = parser.parse_args()

    config = Config(epochs=args.epochs, device=args.device, sampler=args.sampler, data_dir=args.data_dir)
    data = load_mnist(config.data_dir)
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
    estimate_log_z(model.prior, config, gen)
    sync()
    log_z_seconds = time.perf_counter() - start

    hardware = torch.cuda.get_device_name() if device.startswith("cuda") else (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads")
    steady = per_epoch[1:] or per_epoch
    print(f"# epoch time, default config (784-512-256, RBM 128x128, batch 256, sampler {config.sampler}) "
          f"on 60 000 MNIST images | torch {torch.__version__} | {device} ({hardware})")
    print(f"{'':34s} {'this project':>14s} {'kaiwu example':>14s}")
    print(f"{'seconds per epoch (median, 2nd+)':34s} {statistics.median(steady):14.2f} {KAIWU_EXAMPLE_SECONDS:>14s}")
    print(f"{'  of which validation pass':34s} {val_seconds:14.2f} {'-':>14s}")
    print(f"{'  of which AIS log Z':34s} {log_z_seconds:14.2f} {'-':>14s}")
    print(f"{'every epoch':34s} {' '.join(f'{s:.2f}' for s in per_epoch):>14s}")
    print(f"final val_elbo {result.history[-1].get('val_elbo', float('nan')):.2f} nats, "
          f"val_cost {result.history[-1]['val_cost']:.2f}")


if __name__ == "__main__":
    main()
