"""Which digits a model generates: a reference MNIST classifier applied to its samples.

FID says how far the samples are from MNIST, not whether every digit appears: a model that draws
only 7s and 9s well can score a fair FID. A small CNN trained once on the training split (never on
validation or test images) labels the samples; `class_entropy` is the entropy of the labels'
histogram (nats: log 10 = 2.303 when all ten digits are equally common, 0 for a single digit),
`class_confidence` the mean top probability (about 0.99 on real digits, 0.1 on noise).

The classifier is trained on grey and binarised digits, as the models produce both, shifted by a
pixel or two, and on noise images with a uniform target, so that unreadable samples get a low
confidence rather than a confident arbitrary label. Their argmax labels are then arbitrary too:
read `class_entropy` together with `class_confidence`.

`reference_classifier` caches it under the cache folder, keyed by the training images and labels,
this module's source and the recipe, so that a changed recipe, code or data trains a new one.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock, Timeout
from matplotlib.figure import Figure
from torch import Tensor, nn
from tqdm import tqdm  # noqa: E402

log = logging.getLogger(__name__)
NUM_CLASSES = 10
UNIFORM_ENTROPY = math.log(NUM_CLASSES)  # class_entropy when all ten digits are equally common
HISTOGRAM_SIZE = (6.0, 3.5)  # inches; at HISTOGRAM_DPI: 600 x 350 pixels
HISTOGRAM_DPI = 100


@dataclass(frozen=True)
class Recipe:
    """How the reference classifier is trained (its repr is part of the cache key).

    The defaults reach about 99.4 % on the validation split and 99.5 % on the test split (99.0 % on
    binarised test digits) when trained on the 50 000 training images: `benchmarks/classifier.py`,
    about 100 s on one thread of 2 busy cores (3 epochs: about 99.3 %, 60 s).
    """

    epochs: int = 5
    batch_size: int = 128
    lr: float = 3e-3  # Adam's peak rate on a one-cycle schedule (warm-up over the first quarter)
    max_shift: int = 2  # pixels: each image is moved by up to this much in x and y
    binarised: float = 0.5  # share of the images replaced by a Bernoulli sample of their pixels
    junk: float = 0.125  # noise images added per digit image, trained towards the uniform distribution
    seed: int = 0
    min_accuracy: float = 0.99  # on the held-out images given to `reference_classifier`


def _conv(channels_in: int, channels_out: int) -> list[nn.Module]:
    return [nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False), nn.BatchNorm2d(channels_out),
            nn.ReLU(), nn.MaxPool2d(2)]


class DigitClassifier(nn.Module):
    """Three 3x3 convolutions (16, 32, 64 channels) with batch norm and max pooling, a 128-unit layer.

    Small enough to train in under two minutes on one CPU core, wide enough for 99 % on MNIST.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(*_conv(1, 16), *_conv(16, 32), *_conv(32, 64))  # 28 -> 14 -> 7 -> 3
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 3 * 3, 128, bias=False), nn.BatchNorm1d(128),
                                  nn.ReLU(), nn.Linear(128, NUM_CLASSES))

    def forward(self, images: Tensor) -> Tensor:
        """Logits for N images given as N x 784 or N x 1 x 28 x 28 pixels in [0, 1]."""
        return self.head(self.features(images.reshape(-1, 1, 28, 28)))


@torch.no_grad()
def predict(classifier: nn.Module, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Class probabilities (N x 10, on the CPU) of `images`, computed on the classifier's device."""
    classifier.eval()
    device = next(classifier.parameters()).device
    if not len(images):
        return torch.empty(0, NUM_CLASSES)
    return torch.cat([F.softmax(classifier(images[i:i + batch_size].to(device).float()), dim=1).cpu()
                      for i in range(0, len(images), batch_size)])


def accuracy(classifier: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Share of `images` whose most probable class is their label."""
    return (predict(classifier, images).argmax(1) == labels.cpu()).float().mean().item()


def train_classifier(images: Tensor, labels: Tensor, recipe: Recipe = Recipe(), progress: bool = True,
                     threads: int | None = 1) -> DigitClassifier:
    """A DigitClassifier trained on the CPU on `images` (N x 784 in [0, 1]) and their labels.

    Deterministic given `recipe.seed` (and the thread count), and the global torch RNG is left as it
    was: the weights are drawn inside `fork_rng`, the batches from a generator of our own. Torch
    uses `threads` CPU threads meanwhile (None: its setting): one by default, as these small
    convolutions gain little from more and run several times slower when two contend for busy cores.
    """
    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train(images, labels, recipe, progress)
    finally:
        torch.set_num_threads(saved_threads)


def _train(images: Tensor, labels: Tensor, recipe: Recipe, progress: bool) -> DigitClassifier:
    images, labels = images.detach().cpu().float().reshape(len(images), -1), labels.detach().cpu().long()
    steps = recipe.epochs * math.ceil(len(images) / recipe.batch_size)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(recipe.seed)  # CPU only: torch.manual_seed would reseed CUDA too
        classifier = DigitClassifier()
    generator = torch.Generator().manual_seed(recipe.seed)
    optimiser = torch.optim.Adam(classifier.parameters(), lr=recipe.lr)
    # at least 5 steps: with 4, OneCycleLR's warm-up would end at step 0 and divide by zero
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, recipe.lr, total_steps=max(steps, 5), pct_start=0.25)
    classifier.train()
    with tqdm(total=steps, desc="digit classifier", unit="batch", disable=not progress, leave=False) as bar:
        for _ in range(recipe.epochs):
            order = torch.randperm(len(images), generator=generator)
            for start in range(0, len(images), recipe.batch_size):
                index = order[start:start + recipe.batch_size]
                x, targets = _training_batch(images[index], labels[index], recipe, generator)
                loss = F.cross_entropy(classifier(x), targets)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                bar.update()
    return classifier.eval()


def _training_batch(images: Tensor, labels: Tensor, recipe: Recipe, generator: torch.Generator
                    ) -> tuple[Tensor, Tensor]:
    """(images, target distributions) of one batch: digits, some binarised, shifted; then noise."""
    binary = torch.rand(len(images), 1, generator=generator) < recipe.binarised
    images = shifted(torch.where(binary, torch.bernoulli(images, generator=generator), images),
                     recipe.max_shift, generator)
    targets = F.one_hot(labels, NUM_CLASSES).float()
    n_junk = round(len(images) * recipe.junk)
    if n_junk:
        # uniform noise of random brightness, half of it binarised: nothing like a digit
        noise = torch.rand(n_junk, 784, generator=generator) * torch.rand(n_junk, 1, generator=generator)
        binary = torch.rand(n_junk, 1, generator=generator) < 0.5
        noise = torch.where(binary, torch.bernoulli(noise, generator=generator), noise)
        images = torch.cat([images, noise])
        targets = torch.cat([targets, torch.full((n_junk, NUM_CLASSES), 1 / NUM_CLASSES)])
    return images, targets


def shifted(images: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """N x 784 images, each moved by its own random offset of at most `max_shift` pixels per axis
    (zeros fill in), so that the classifier does not depend on the exact centring of generated digits."""
    if not max_shift:
        return images
    n, pixels = len(images), torch.arange(28)
    padded = F.pad(images.reshape(n, 28, 28), (max_shift,) * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    rows, cols = (dy[:, None] + pixels)[:, :, None], (dx[:, None] + pixels)[:, None, :]
    return padded[torch.arange(n)[:, None, None], rows, cols].reshape(n, -1)


def cache_key(train_images: Tensor, train_labels: Tensor, recipe: Recipe) -> str:
    """Changes with the training images (as 8-bit grey levels) and labels, this module's code and the recipe."""
    digest = hashlib.sha256()
    pixels = (train_images.detach().cpu().float().numpy() * 255).round().astype(np.uint8)
    digest.update(np.ascontiguousarray(pixels).data)
    digest.update(np.ascontiguousarray(train_labels.detach().cpu().numpy().astype(np.int64)).data)
    digest.update(Path(__file__).read_bytes())
    digest.update(repr(recipe).encode())
    return digest.hexdigest()[:16]


def reference_classifier(train_images: Tensor, train_labels: Tensor, held_out_images: Tensor,
                         held_out_labels: Tensor, cache_dir: str | os.PathLike[str], recipe: Recipe = Recipe(),
                         progress: bool = True) -> DigitClassifier:
    """The cached classifier for these training images and recipe, trained (under three minutes) if missing.

    Kept in `cache_dir/digit-classifier/<key>.pt`. A newly trained one must reach
    `recipe.min_accuracy` on the held-out images (the validation split: this chooses nothing, so it
    may see them) or it is refused with a RuntimeError and not cached. Processes that need it at
    the same time (a study's workers on a fresh machine) train it once: the others wait for it.
    """
    path = Path(cache_dir) / "digit-classifier" / f"{cache_key(train_images, train_labels, recipe)}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path.with_suffix(".lock"))  # stays: unlinking it would race a waiter
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process to train the reference digit classifier (%s)", path)
        lock.acquire()
    try:
        if path.is_file():
            classifier = DigitClassifier()
            classifier.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return classifier.eval()
        return _train_and_cache(train_images, train_labels, held_out_images, held_out_labels, recipe, progress, path)
    finally:
        lock.release()


def _train_and_cache(train_images: Tensor, train_labels: Tensor, held_out_images: Tensor, held_out_labels: Tensor,
                     recipe: Recipe, progress: bool, path: Path) -> DigitClassifier:
    log.info("training the reference digit classifier on %d images (to be cached at %s)", len(train_images), path)
    classifier = train_classifier(train_images, train_labels, recipe, progress)
    held_out = accuracy(classifier, held_out_images, held_out_labels)
    if not held_out >= recipe.min_accuracy:
        raise RuntimeError(f"the reference digit classifier reached an accuracy of {held_out:.4f} on "
                           f"{len(held_out_labels)} held-out images, below the recipe's min_accuracy "
                           f"{recipe.min_accuracy}: not cached")
    log.info("reference digit classifier: held-out accuracy %.4f", held_out)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(classifier.state_dict(), tmp)
    os.replace(tmp, path)  # atomic: a reader that takes no lock sees no file or a whole one
    return classifier


def count_entropy(counts: Sequence[int] | Tensor) -> float:
    """Entropy in nats of the distribution that `counts` (one per class) are a sample of; 0 if empty."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    share = counts[counts > 0] / counts.sum().clamp(min=1)
    return float(-(share * share.log()).sum())


def class_scores(classifier: nn.Module, images: Tensor) -> dict[str, float | list[int]]:
    """`class_entropy` (nats) of the classifier's labels of `images`, `class_confidence` (mean top
    probability) and `class_counts` (how many images it labels 0, 1, ..., 9)."""
    if not len(images):
        raise ValueError("class_scores needs at least one image")
    probabilities = predict(classifier, images)
    counts = torch.bincount(probabilities.argmax(1), minlength=NUM_CLASSES)
    return {"class_entropy": count_entropy(counts), "class_confidence": probabilities.max(1).values.mean().item(),
            "class_counts": counts.tolist()}


def class_histogram(counts: Sequence[int], path: str | os.PathLike[str], title: str = "") -> Path:
    """A PNG bar chart (600 x 350 pixels) of the ten digits' counts, with their entropy in the title."""
    if len(counts) != NUM_CLASSES:
        raise ValueError(f"class_histogram needs {NUM_CLASSES} counts, got {len(counts)}")
    fig = Figure(figsize=HISTOGRAM_SIZE)  # not pyplot: safe from a worker thread
    ax = fig.subplots()
    ax.bar(range(NUM_CLASSES), counts, color="tab:blue")
    ax.axhline(sum(counts) / NUM_CLASSES, color="grey", linestyle="--", linewidth=1, label="uniform")
    ax.set_xticks(range(NUM_CLASSES))
    ax.set_xlabel("digit (reference classifier's label)")
    ax.set_ylabel("samples")
    ax.legend(loc="upper right")
    entropy = f"class entropy {count_entropy(counts):.3f} nats (uniform: {UNIFORM_ENTROPY:.3f})"
    ax.set_title(f"{title}: {entropy}" if title else entropy)
    fig.tight_layout()
    fig.savefig(path, dpi=HISTOGRAM_DPI)
    return Path(path)
