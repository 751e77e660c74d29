"""Does a long importance-weighted NLL keep its memory flat? Peak resident memory and seconds of one
`log_likelihoods` call, with the C heap's freed memory handed back every N batches and never.

    python benchmarks/nll_memory.py outputs/compare_e100_lr3/gaussian-likelihood/last.pt \
        --images 2000 --nll-samples 5000 --release-every 0,16

Each setting runs in a fresh process (what glibc keeps depends on the process's history), on the
checkpoint's best-on-validation model and the first `--images` images of `--split`. What glibc keeps
depends on the images and on the threads beside the loop too (docs/results.md: on this project's CPU
machine the Gaussian VAE of compare_e100_lr3 grew to 4-8 GB over 1 000-2 000 test images at K = 5 000,
and 10 000 test images were killed by the kernel). Scoring only: nothing here chooses a model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from common import hardware, load_chosen_model

from qvae.data.mnist import load_mnist_for, model_inputs
from qvae.heap import resident_bytes
from qvae.metrics.nll import log_likelihoods, prior_log_z


def resident_gb() -> float:
    return (resident_bytes() or 0) / 2**30


class PeakSampler(threading.Thread):
    """Resident memory every 0.2 s. A thread beside the loop also stands for those the real jobs have
    (tqdm's monitor, MLflow's logging): the growth appeared with them, not in a lone thread."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = resident_gb()

    def run(self) -> None:
        while True:
            self.peak = max(self.peak, resident_gb())
            time.sleep(0.2)


def measure(args: argparse.Namespace, release_every: int) -> dict[str, float]:
    """One call's peak resident memory (GiB), seconds and mean NLL, in this process."""
    device = torch.device(args.device)
    model, config, _ = load_chosen_model(args.checkpoint, device, args.data_dir)
    model.eval()
    data = load_mnist_for(config)
    images = data.test_x if args.split == "test" else data.val_x
    x = model_inputs(images[: args.images].to(device), config.binarize)
    generator = torch.Generator(device).manual_seed(0)
    log_z = None
    if getattr(model.latent_prior, "needs_log_z", False):
        log_z, _, _ = prior_log_z(model, args.ais_chains, args.ais_betas, generator)
    sampler = PeakSampler()
    before = sampler.peak
    sampler.start()
    started = time.perf_counter()
    ll = log_likelihoods(model, x, args.nll_samples, log_z, generator, progress=not args.no_progress,
                         release_every=release_every)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_gb_before": before, "peak_gb": max(sampler.peak, resident_gb()),
            "mean_nll": -ll.mean().item()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a training checkpoint (compare.py's DIR/<model>/last.pt)")
    parser.add_argument("--images", type=int, default=2000, help="images scored, the first of the split")
    parser.add_argument("--split", choices=("test", "validation"), default="test")
    parser.add_argument("--nll-samples", type=int, default=5000)
    parser.add_argument("--release-every", default="0,16", help="comma-separated batch counts; 0 = never")
    parser.add_argument("--ais-chains", type=int, default=1000)
    parser.add_argument("--ais-betas", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)  # one setting, JSON out
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure(args, args.child)))
        return 0
    if resident_bytes() is None:
        parser.error("resident memory is read from /proc/self/statm: this benchmark runs on Linux only")
    try:
        settings = [int(s) for s in args.release_every.split(",")]
    except ValueError:
        parser.error(f"--release-every must be comma-separated integers >= 0, got {args.release_every!r}")
    if any(s < 0 for s in settings) or args.images < 1 or args.nll_samples < 1:
        parser.error("--release-every must be >= 0, --images and --nll-samples >= 1")
    print(f"# {args.checkpoint}: {args.images} {args.split} images, K={args.nll_samples}, {hardware(args.device)}")
    print(f"{'release every':>14} {'peak GiB':>8} {'(at start)':>10} {'seconds':>8} {'mean NLL':>9}")
    for every in settings:
        child = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--child", str(every)]
        done = subprocess.run(child, stdout=subprocess.PIPE, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        label = "never" if every == 0 else f"{every} batch{'es' if every > 1 else ''}"
        print(f"{label:>14} {row['peak_gb']:8.2f} {row['peak_gb_before']:10.2f} {row['seconds']:8.1f} "
              f"{row['mean_nll']:9.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
