"""Images per second of the FID Inception feature extraction (`qvae.metrics.fid.InceptionFeatures`).

One forward pass yields every feature size that FID/KID read (2048 and 64 by default), so this is
the per-image cost of `compute_fid` on each side; the real side is cached after its first call.
Inputs are MNIST-sized (28x28, resized to 299x299 inside), timed from CPU tensors, so a GPU
figure includes the host-to-device copy.

    python benchmarks/fid_throughput.py [--batch-sizes 32 64] [--batches 2] [--devices cpu cuda]
                                        [--threads N] [--cache-dir DIR]   # default $QVAE_CACHE_DIR or ~/.cache/qvae
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from common import cpu_name

from qvae.metrics.fid import InceptionFeatures, default_cache_dir


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{cpu_name()}, {os.cpu_count()} cores"


def images_per_second(extractor: InceptionFeatures, device: str, batch_size: int, batches: int) -> float:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    images = torch.rand(batch_size * batches, 784, generator=torch.Generator().manual_seed(0))
    sync()
    start = time.perf_counter()
    for i in range(batches):
        extractor(images[i * batch_size:(i + 1) * batch_size])
    sync()
    return batch_size * batches / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batches", type=int, default=2, help="timed batches per batch size")
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--dims", type=int, nargs="+", default=[2048, 64])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--cache-dir", default=None, help="where the Inception weights are (fetched if absent)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cache_dir = args.cache_dir or default_cache_dir()

    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"# FID Inception feature extraction, features {args.dims}, 28x28 -> 299x299 | torch "
          f"{torch.__version__} | {torch.get_num_threads()} CPU threads{load}")
    for device in args.devices:
        print(f"# {device}: {device_name(device)}")
    print(f"{'device':8s} {'batch':>6s} {'images/s':>10s} {'min per 10k images':>19s}")
    for device in args.devices:
        extractor = InceptionFeatures(dims=args.dims, device=device, cache_dir=cache_dir)
        extractor(torch.rand(4, 784))  # warm-up: first-call allocations, TorchScript profiling
        for batch_size in args.batch_sizes:
            rate = images_per_second(extractor, device, batch_size, args.batches)
            print(f"{device:8s} {batch_size:6d} {rate:10.2f} {10_000 / rate / 60:19.1f}", flush=True)

if __name__ == "__main__":
    main()
