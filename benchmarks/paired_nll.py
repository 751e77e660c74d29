"""Is one model's test NLL really lower than another's? The paired difference on the same test images.

Each model's NLL carries a standard error over images of ~0.6 nats on 2 000 images, mostly from how
hard each digit is, which both models share. The per-image difference cancels it:

    python benchmarks/paired_nll.py outputs/compare_budget --models qvae-likelihood,gaussian-likelihood \
        --nll-samples 1000 --nll-images 2000 --device cpu

reads the best-on-validation weights of DIR/<model>/last.pt (as compare.py writes them), estimates
log p(x) of the same test images for each (importance-weighted, K samples; a Boltzmann prior's log Z by
AIS, or the one compare.py logged in DIR/results.json), and prints both NLLs and their difference, the
first minus the second, ± its paired standard error. Scoring only: nothing here chooses a model.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from common import hardware, load_chosen_model

from qvae.data.mnist import load_mnist_for, model_inputs
from qvae.metrics.nll import log_likelihoods, prior_log_z
from qvae.train import LAST_CHECKPOINT, resolve_device


def per_image_log_likelihoods(directory: Path, name: str, args: argparse.Namespace) -> torch.Tensor:
    device = resolve_device(args.device)
    model, config, _ = load_chosen_model(directory / name / LAST_CHECKPOINT, device, args.data_dir)
    model.eval()
    data = load_mnist_for(config)
    x = model_inputs(data.test_x[: args.nll_images].to(device), config.binarize)  # as test_nll reads them
    log_z = None
    if getattr(model.latent_prior, "needs_log_z", False):
        logged = json.loads((directory / "results.json").read_text())["models"].get(name, {}).get("nll") or {}
        log_z = logged.get("log_z")
        if log_z is None:
            log_z, _, _ = prior_log_z(model, args.ais_chains, args.ais_betas, torch.Generator(device).manual_seed(0))
    generator = torch.Generator(device).manual_seed(args.seed)
    return log_likelihoods(model, x, args.nll_samples, log_z, generator, progress=not args.no_progress).cpu()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--models", default="qvae-likelihood,gaussian-likelihood")
    parser.add_argument("--nll-samples", type=int, default=1000)
    parser.add_argument("--nll-images", type=int, default=2000)
    parser.add_argument("--ais-chains", type=int, default=1000, help="AIS of log Z when results.json has none")
    parser.add_argument("--ais-betas", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",")]
    if len(names) != 2:
        parser.error(f"models must name two models, got {args.models!r}")
    ll = {name: per_image_log_likelihoods(args.directory, name, args) for name in names}
    difference = (-ll[names[0]]) - (-ll[names[1]])
    n = len(difference)
    print(f"# {n} test images, K={args.nll_samples}, {hardware(torch.device(args.device))}")
    for name in names:
        nll = -ll[name]
        print(f"{name:24} NLL {nll.mean():8.3f} +- {nll.std() / math.sqrt(n):.3f} (over images)")
    print(f"{names[0]} - {names[1]}: {difference.mean():+.3f} +- {difference.std() / math.sqrt(n):.3f} nats "
          f"(paired over the same images; log Z's own error not included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
