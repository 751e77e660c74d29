"""Seconds and picture quality of the project's t-SNE (scikit-learn Barnes-Hut) against openTSNE (FFT).

The latent-space pictures (`qvae.plots.tsne_embedding`) run sklearn's Barnes-Hut t-SNE once per
epoch ("fast", continued from the previous frame's layout) and once at the end ("high"). openTSNE's
FFT-accelerated interpolation is said to be much faster on 10 000+ points; this measures whether it
is, on this machine, at equal picture quality. Points: the first N MNIST test images, pixels reduced
to 50 principal components once (every method gets that same input; PCA time is not counted).

Methods (same seed, same thread count; sklearn's OpenMP and joblib limited by threadpoolctl):
  sklearn fast / high         tsne_embedding(x, quality=...) (500 it. angle 0.8 / 1000 it. angle 0.5)
  sklearn fast, continued     tsne_embedding(x, init=previous, quality="fast") (300 it., no exaggeration)
  openTSNE default            TSNE(initialization="pca", negative_gradient_method="fft"), 250 + 500 it.
  openTSNE continued          the same from initialization=previous, early_exaggeration_iter=0, n_iter=300
"previous" is the sklearn-fast layout for both continued runs (the frame the project would continue).

Quality, on the same N points for every method: kNN preservation (mean share of each point's 10
nearest neighbours in the 50-d input that are among its 10 nearest in 2-D), 10-fold cross-validated
accuracy of a 10-NN classifier on the 2-D layout (digit labels), each library's own final KL figure
(not comparable across libraries: different P and approximations), and one exact KL with a common P
(openTSNE's exact-kNN perplexity affinities) and the exact Student-t Q of every layout.

openTSNE is not a dependency of the project (this measurement is why): `pip install openTSNE` first.

    python benchmarks/tsne_speed.py [--n 10000] [--threads 2] [--repeats 1] [--data-dir data]
                                    [--save-png outputs/tsne_speed]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
import sklearn
import sklearn.manifold
import torch
from common import hardware
from joblib import parallel_config
from scipy import sparse
from sklearn.decomposition import PCA
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from threadpoolctl import threadpool_limits

from qvae.data.mnist import load_mnist
from qvae.plots import TSNE_PCA_DIMS, tsne_embedding

try:
    import openTSNE
except ImportError:  # not a project dependency
    raise SystemExit("benchmarks/tsne_speed.py compares against openTSNE, which the project does not install: "
                     "pip install openTSNE") from None

NEIGHBOURS = 10


class _RecordingTSNE(sklearn.manifold.TSNE):
    """sklearn's TSNE that keeps each fitted instance, so its `kl_divergence_` can be read back."""

    fitted: list[sklearn.manifold.TSNE] = []

    def fit_transform(self, X, y=None):  # noqa: N803 (sklearn's name)
        _RecordingTSNE.fitted.append(self)
        return super().fit_transform(X, y)


def sklearn_run(x: np.ndarray, threads: int, **kwargs) -> tuple[np.ndarray, float]:
    """`tsne_embedding(x, **kwargs)` on `threads` threads: (layout, sklearn's kl_divergence_)."""
    with mock.patch.object(sklearn.manifold, "TSNE", _RecordingTSNE), threadpool_limits(threads), \
            parallel_config(n_jobs=threads):
        layout = tsne_embedding(x, **kwargs)
    return layout, float(_RecordingTSNE.fitted[-1].kl_divergence_)


def opentsne_run(x: np.ndarray, threads: int, seed: int, **kwargs) -> tuple[np.ndarray, float]:
    """openTSNE's FFT t-SNE (perplexity 30, PCA init unless `kwargs` say otherwise): (layout, its KL)."""
    options = {"perplexity": 30, "initialization": "pca", "negative_gradient_method": "fft", **kwargs}
    with threadpool_limits(threads):
        embedding = openTSNE.TSNE(n_jobs=threads, random_state=seed, **options).fit(x)
    return np.asarray(embedding, dtype=np.float32), float(embedding.kl_divergence)


def timed(fn: Callable[[], tuple[np.ndarray, float]], repeats: int) -> tuple[float, np.ndarray, float]:
    """Median seconds of `repeats` calls, and the last call's (layout, KL)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        layout, kl = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), layout, kl


def neighbour_sets(points: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """(N, k) indices of each point's k nearest other points (exact, Euclidean)."""
    return NearestNeighbors(n_neighbors=k).fit(points).kneighbors(return_distance=False)  # no X: self left out


def knn_preservation(reference: np.ndarray, layout: np.ndarray) -> float:
    """Mean share of each point's reference neighbours that are also its neighbours in `layout`."""
    ours = neighbour_sets(layout)
    shared = [len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(reference, ours)]
    return float(np.mean(shared)) / reference.shape[1]


def knn_accuracy(points: np.ndarray, labels: np.ndarray, seed: int, folds: int = 10) -> float:
    """`folds`-fold cross-validated accuracy of a 10-NN classifier on `points`."""
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(KNeighborsClassifier(NEIGHBOURS), points, labels, cv=split).mean())


def exact_kl(p: sparse.csr_matrix, layout: np.ndarray, chunk: int = 1000) -> float:
    """KL(P || Q) with the sparse joint P (sums to 1) and the exact Student-t Q of `layout`."""
    y = layout.astype(np.float64)
    z = 0.0
    for start in range(0, len(y), chunk):
        d2 = ((y[start:start + chunk, None, :] - y[None, :, :]) ** 2).sum(-1)
        z += float((1.0 / (1.0 + d2)).sum()) - min(chunk, len(y) - start)  # minus the diagonal's ones
    p = p.tocoo()
    d2 = ((y[p.row] - y[p.col]) ** 2).sum(-1)
    log_q = -np.log1p(d2) - np.log(z)
    return float((p.data * (np.log(p.data) - log_q)).sum())


def save_pngs(layouts: dict[str, np.ndarray], labels: np.ndarray, out_dir: Path) -> None:
    """One scatter per layout, coloured by digit, and all of them side by side (all.png)."""
    import matplotlib
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    colors = np.asarray(matplotlib.colormaps["tab10"].colors)[labels % 10]

    def draw(ax, name: str, layout: np.ndarray) -> None:
        ax.scatter(layout[:, 0], layout[:, 1], c=colors, s=1.5, linewidths=0)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])

    for name, layout in layouts.items():
        fig = Figure(figsize=(5, 5))
        draw(fig.subplots(), name, layout)
        fig.tight_layout()
        fig.savefig(out_dir / f"{name.replace(' ', '_').replace(',', '')}.png", dpi=110)
    fig = Figure(figsize=(4 * len(layouts), 4))
    for ax, (name, layout) in zip(fig.subplots(1, len(layouts)), layouts.items()):
        draw(ax, name, layout)
    fig.tight_layout()
    fig.savefig(out_dir / "all.png", dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="the first N MNIST test images")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=1, help="timings per method (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=os.environ.get("QVAE_DATA_DIR", "data"))
    parser.add_argument("--save-png", type=Path, default=None, metavar="DIR", help="write each layout as a PNG")
    args = parser.parse_args()

    data = load_mnist(args.data_dir, test_size=args.n)
    pixels, labels = data.test_x.numpy(), data.test_y.numpy()
    with threadpool_limits(args.threads):
        x = PCA(n_components=TSNE_PCA_DIMS, svd_solver="full").fit_transform(pixels).astype(np.float32)
    t = args.threads
    seed = args.seed
    logging.getLogger("openTSNE").setLevel(logging.ERROR)  # its "init variance" warning: continuing is the point

    results: dict[str, tuple[float, np.ndarray, float]] = {}
    results["sklearn fast"] = timed(lambda: sklearn_run(x, t, seed=seed, quality="fast"), args.repeats)
    previous = results["sklearn fast"][1]
    results["sklearn high"] = timed(lambda: sklearn_run(x, t, seed=seed, quality="high"), args.repeats)
    results["sklearn fast, continued"] = timed(
        lambda: sklearn_run(x, t, seed=seed, quality="fast", init=previous), args.repeats)
    results["openTSNE default"] = timed(lambda: opentsne_run(x, t, seed), args.repeats)
    results["openTSNE continued"] = timed(
        lambda: opentsne_run(x, t, seed, initialization=previous, early_exaggeration_iter=0, n_iter=300),
        args.repeats)

    reference = neighbour_sets(x)
    p = openTSNE.affinity.PerplexityBasedNN(x, perplexity=30, method="exact", n_jobs=t, random_state=seed).P
    p = p / p.sum()

    print(f"# t-SNE of the first {len(x)} MNIST test images (pixels -> PCA {TSNE_PCA_DIMS}) | {hardware('cpu')} | "
          f"{t} t-SNE threads | median of {args.repeats} | torch {torch.__version__} | sklearn {sklearn.__version__} "
          f"| openTSNE {openTSNE.__version__}")
    print(f"# reference: 10-NN accuracy on the 50-d input {knn_accuracy(x, labels, seed):.3f}; "
          f"KL (own) is each library's own final estimate, KL (exact) uses one common P")
    print(f"| method | seconds | kNN preservation ({NEIGHBOURS}) | {NEIGHBOURS}-NN accuracy | KL (own) | KL (exact) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (seconds, layout, kl) in results.items():
        print(f"| {name} | {seconds:.1f} | {knn_preservation(reference, layout):.3f} | "
              f"{knn_accuracy(layout, labels, seed):.3f} | {kl:.3f} | {exact_kl(p, layout):.3f} |")
    if args.save_png is not None:
        save_pngs({name: r[1] for name, r in results.items()}, labels, args.save_png)
        print(f"# pictures: {args.save_png}/")


if __name__ == "__main__":
    main()
