"""The reference digit classifier of `qvae.metrics.classes`: training time, accuracy, class scores.

Trains the shipped `Recipe` (or variants: --epochs, --seeds) on the 50 000 training images, without
the cache, and prints one row per recipe: training seconds, accuracy on the validation split (the
held-out set `reference_classifier` checks) and on the test split (grey, and one Bernoulli sample of
it), then `class_entropy` / `class_confidence` of the real test images, of the test 3s alone, and
of uniform noise. The row "true labels" gives the entropies of the labels themselves.

    python benchmarks/classifier.py --data-dir DIR [--epochs 4 ...] [--seeds 0 ...] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import torch
from common import cpu_name

from qvae.data.mnist import load_mnist
from qvae.metrics.classes import Recipe, accuracy, class_scores, count_entropy, train_classifier

VALIDATION_SIZE = 10_000  # the training file's last images


def splits(data_dir: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train (first 50 000 training-file images), validation (last 10 000) and test images and labels."""
    data = load_mnist(data_dir)
    if hasattr(data, "val_x"):
        train, val = (data.train_x, data.train_y), (data.val_x, data.val_y)
    else:  # a loader without a validation split: the whole training file
        n = len(data.train_x) - VALIDATION_SIZE
        train, val = (data.train_x[:n], data.train_y[:n]), (data.train_x[n:], data.train_y[n:])
    return {"train": train, "validation": val, "test": (data.test_x, data.test_y)}


def scores(entropy: float, confidence: float | None = None) -> str:
    return f"{entropy:5.3f} / " + ("  -  " if confidence is None else f"{confidence:5.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="where MNIST's raw files are (MNIST/raw/)")
    parser.add_argument("--epochs", type=int, nargs="+", default=[Recipe().epochs])
    parser.add_argument("--seeds", type=int, nargs="+", default=[Recipe().seed])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads while training (0: torch's choice)")
    args = parser.parse_args()
    data = splits(args.data_dir)
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = data["train"], data["validation"], data["test"]
    threes = test_x[test_y == 3]
    binary_test = torch.bernoulli(test_x, generator=torch.Generator().manual_seed(0))
    noise = torch.rand(1000, 784, generator=torch.Generator().manual_seed(0))

    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"# digit classifier on {len(train_x)} training images | torch {torch.__version__} | "
          f"{args.threads or torch.get_num_threads()} training threads of {os.cpu_count()} ({cpu_name()}){load}")
    print("# accuracy on validation / test / binarised test; class_entropy / class_confidence (nats / mean top p)")
    header = (f"{'recipe':22s} {'train s':>8s} {'val acc':>8s} {'test acc':>8s} {'bin acc':>8s}  "
              f"{'test images':>13s}  {'test 3s':>13s}  {'noise':>13s}")
    print(header)
    truth = torch.bincount(test_y, minlength=10)
    print(f"{'true labels':22s} {'':8s} {'':8s} {'':8s} {'':8s}  {scores(count_entropy(truth)):>13s}  "
          f"{scores(0.0):>13s}", flush=True)
    for epochs in args.epochs:
        for seed in args.seeds:
            recipe = dataclasses.replace(Recipe(), epochs=epochs, seed=seed)
            start = time.perf_counter()
            classifier = train_classifier(train_x, train_y, recipe, sys.stderr.isatty(), args.threads or None)
            seconds = time.perf_counter() - start
            test, three, rand = (class_scores(classifier, x) for x in (test_x, threes, noise))
            print(f"{f'epochs={epochs} seed={seed}':22s} {seconds:8.1f} {accuracy(classifier, val_x, val_y):8.4f} "
                  f"{accuracy(classifier, test_x, test_y):8.4f} {accuracy(classifier, binary_test, test_y):8.4f}  "
                  + "  ".join(f"{scores(s['class_entropy'], s['class_confidence']):>13s}" for s in (test, three, rand)),
                  flush=True)


if __name__ == "__main__":
    main()
