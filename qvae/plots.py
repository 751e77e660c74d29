"""Pictures people look at: image grids, training curves, t-SNE of the latent space (PNG, GIF)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure  # not pyplot: no global figure state, so a worker thread may draw
from matplotlib.lines import Line2D
from PIL import Image
from torchvision.utils import make_grid


def grid_image(images: torch.Tensor, nrow: int = 8, side: int = 28, scale: int = 2) -> Image.Image:
    """A grayscale grid of flattened images (N, side*side) in [0, 1], upscaled `scale` times."""
    images = images.detach().float().cpu().clamp(0, 1).reshape(-1, 1, side, side)
    grid = make_grid(images, nrow=nrow, padding=2, pad_value=1.0)[0]
    pixels = (grid.numpy() * 255).round().astype(np.uint8)
    picture = Image.fromarray(pixels, mode="L")
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    path = Path(path)
    grid_image(images, nrow).save(path)
    return path


def save_training_curves(history: Sequence[dict[str, float]], path: str | Path,
                         names: Sequence[str] = ("loss", "cost", "kl", "elbo", "kl_upper_bound", "q_elbo")) -> Path:
    """One panel per term present, train and validation together, epochs on the x axis.

    (A QBM prior logs the bounds `kl_upper_bound` / `q_elbo` where an RBM logs `kl` / `elbo`.)
    """
    names = [n for n in names if any(n in h for h in history)]
    cols = 2
    rows = max(1, math.ceil(len(names) / cols))
    fig = Figure(figsize=(5 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    epochs = list(range(1, len(history) + 1))
    for ax, name in zip(axes.flat, names):
        for key, style in ((name, "-o"), (f"val_{name}", "--s")):
            values = [h.get(key, math.nan) for h in history]
            if any(math.isfinite(v) for v in values):
                ax.plot(epochs, values, style, markersize=3, label=key)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


# --- t-SNE of latent features: per-epoch frames, a training GIF, a final picture -----------------

TSNE_PCA_DIMS = 50  # "fast": t-SNE on the top principal components (denoises, speeds up k-NN)
_TSNE_ITERATIONS = {"fast": 500, "high": 1000}  # sklearn's minimum is 250 (its exploration phase)
_TSNE_ANGLE = {"fast": 0.8, "high": 0.5}  # Barnes-Hut accuracy: 0.8 halves the time on MNIST
_TSNE_CONTINUE_ITERATIONS = 300  # "fast" from a previous frame: already near an optimum
Limits = tuple[tuple[float, float], tuple[float, float]]


def _as_array(values: np.ndarray | torch.Tensor, dtype: type = np.float32) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def _pca(features: np.ndarray, dims: int) -> np.ndarray:
    """Top `dims` principal components (exact SVD: deterministic, cheap for N x 256)."""
    from sklearn.decomposition import PCA

    if features.shape[1] <= dims or features.shape[0] <= dims:
        return features
    return PCA(n_components=dims, svd_solver="full").fit_transform(features).astype(np.float32)


def tsne_embedding(features: np.ndarray | torch.Tensor, *, init: np.ndarray | None = None,
                   seed: int = 0, perplexity: float = 30, max_iter: int | None = None,
                   quality: str = "fast") -> np.ndarray:
    """2-D Barnes-Hut t-SNE of `features` (N, D) -> (N, 2) float32, deterministic per `seed`.

    quality "fast" (per-epoch frames): top 50 principal components, 500 iterations, coarse
    Barnes-Hut angle 0.8; "high" (final picture): full features, 1000 iterations, angle 0.5.
    Without `init` the layout starts from PCA (sklearn's, scaled to std 1e-4), which keeps the
    global structure. With `init` (the previous frame's embedding, same rows in the same order)
    the optimisation continues from it at its own scale and without early exaggeration, so
    consecutive GIF frames drift instead of jumping or rotating; "fast" then needs only 300
    iterations. Perplexity is capped at (N - 1) / 3 so small sets work.
    """
    from sklearn.manifold import TSNE

    if quality not in _TSNE_ITERATIONS:
        raise ValueError(f"quality must be 'fast' or 'high', got {quality!r}")
    x = _as_array(features)
    x = x.reshape(len(x), -1)
    if len(x) < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {len(x)}")
    if quality == "fast":
        x = _pca(x, TSNE_PCA_DIMS)
    n = len(x)
    options: dict = {"init": "pca", "max_iter": max_iter or _TSNE_ITERATIONS[quality]}
    if init is not None:
        start = _as_array(init).copy()
        if start.shape != (n, 2):
            raise ValueError(f"init must have shape ({n}, 2), got {start.shape}")
        options = {
            "init": start,
            "early_exaggeration": 1.0,  # clusters are already formed: don't blow them up again
            "learning_rate": max(n / 48, 50.0),  # sklearn's "auto" rate for exaggeration 12
            "max_iter": max_iter or (_TSNE_CONTINUE_ITERATIONS if quality == "fast"
                                     else _TSNE_ITERATIONS[quality]),
        }
    tsne = TSNE(n_components=2, perplexity=min(perplexity, (n - 1) / 3), method="barnes_hut",
                angle=_TSNE_ANGLE[quality], random_state=seed, **options)
    return tsne.fit_transform(x).astype(np.float32)


def embedding_limits(embeddings: Sequence[np.ndarray], margin: float = 0.05) -> Limits:
    """Square axis limits (x, y) that hold every embedding, so all GIF frames share one frame."""
    points = np.concatenate([np.asarray(e).reshape(-1, 2) for e in embeddings])
    low, high = points.min(axis=0), points.max(axis=0)
    center = (low + high) / 2
    half = max(float((high - low).max()) / 2, 1e-6) * (1 + margin)
    return ((center[0] - half, center[0] + half), (center[1] - half, center[1] + half))


def _draw_embedding(ax: Axes, embedding: np.ndarray, labels: np.ndarray, title: str,
                    limits: Limits | None, point_size: float) -> None:
    """Scatter coloured by digit with a fixed 0..9 legend (same in every frame)."""
    colors = matplotlib.colormaps["tab10"].colors
    ax.scatter(embedding[:, 0], embedding[:, 1], c=np.asarray(colors)[labels % 10],
               s=point_size, linewidths=0, rasterized=True)
    handles = [Line2D([], [], marker="o", linestyle="", color=colors[d], label=str(d))
               for d in range(10)]
    ax.legend(handles=handles, title="digit", loc="center left", bbox_to_anchor=(1.01, 0.5),
              frameon=False, handletextpad=0.2)
    if limits is not None:
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
    ax.set_aspect("equal", adjustable="box" if limits is not None else "datalim")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)


def _save_embedding(embedding: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                    path: str | Path, title: str, limits: Limits | None,
                    figsize: tuple[float, float]) -> Path:
    points = _as_array(embedding).reshape(-1, 2)
    digits = _as_array(labels, np.int64).reshape(-1)
    if len(digits) != len(points):
        raise ValueError(f"{len(points)} points but {len(digits)} labels")
    fig = Figure(figsize=figsize)
    ax = fig.subplots()
    point_size = float(np.clip(6000 / max(len(points), 1), 1.0, 12.0))
    _draw_embedding(ax, points, digits, title, limits, point_size)
    fig.subplots_adjust(left=0.03, right=0.85, bottom=0.03, top=0.93)  # fixed: same pixels
    fig.savefig(path, dpi=110)
    return Path(path)


def save_tsne_frame(embedding: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                    path: str | Path, *, title: str, limits: Limits | None = None) -> Path:
    """One GIF frame (605 x 550 PNG): the embedding coloured by digit, e.g. title "epoch 3".

    Pass the same `limits` (see `embedding_limits`) to every frame so the GIF does not jitter.
    """
    return _save_embedding(embedding, labels, path, title, limits, figsize=(5.5, 5.0))


def save_tsne(features: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
              path: str | Path, *, title: str, quality: str = "high", seed: int = 0) -> Path:
    """The final t-SNE picture (968 x 880 PNG) of `features`, computed at `quality`."""
    embedding = tsne_embedding(features, seed=seed, quality=quality)
    return _save_embedding(embedding, labels, path, title, None, figsize=(8.8, 8.0))


def _load_rgb(path: str | Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def assemble_gif(frames: Sequence[str | Path], path: str | Path, *,
                 seconds_per_frame: float = 0.8, loop: int | None = 0,
                 last_frame_seconds: float | None = None) -> Path:
    """Animated GIF from PNG frames, each resized to the first one's size.

    The last frame stays `last_frame_seconds` (default 3 x seconds_per_frame) so the final state
    can be read before the GIF loops; `loop=0` loops forever, None plays once. Note that Pillow
    merges identical consecutive frames into one longer frame.
    """
    if not frames:
        raise ValueError("assemble_gif needs at least one frame")
    if seconds_per_frame <= 0:
        raise ValueError(f"seconds_per_frame must be > 0, got {seconds_per_frame}")
    images = [_load_rgb(f) for f in frames]
    size = images[0].size
    images = [im if im.size == size else im.resize(size, Image.LANCZOS) for im in images]
    last = 3 * seconds_per_frame if last_frame_seconds is None else last_frame_seconds
    durations = [round(1000 * seconds_per_frame)] * (len(images) - 1) + [round(1000 * last)]
    extra = {} if loop is None else {"loop": loop}
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=durations, disposal=1, **extra)
    return Path(path)


def write_pictures(model: Any, images: torch.Tensor, history: list[dict[str, float]], out: Path,
                   seed: int = 0, n: int = 64) -> dict[str, Path]:
    """original.png, reconstruction.png, generated.png (8x8 grids) and training_curves.png.

    The originals are the first `n` of the grey `images` in the form the model reads them
    (binarised for a binarised model): what the reconstructions start from."""
    from qvae.data.mnist import model_inputs

    model.eval()
    device = model.train_bias.device
    gen = torch.Generator(device=device).manual_seed(seed)
    originals = model_inputs(images[:n].to(device), model.config.binarize)
    paths = {
        "original": save_grid(originals, out / "original.png"),
        "reconstruction": save_grid(model.reconstruct(originals, gen), out / "reconstruction.png"),
        "generated": save_grid(model.generate(n, generator=gen), out / "generated.png"),
    }
    if history:
        paths["training_curves"] = save_training_curves(history, out / "training_curves.png")
    return paths
