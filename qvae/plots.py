"""Pictures people look at: image grids and training curves (PNG)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: runs in CI and on servers without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402


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
                         names: Sequence[str] = ("loss", "cost", "kl", "elbo")) -> Path:
    """One panel per term, train and validation together, epochs on the x axis."""
    names = [n for n in names if any(n in h for h in history)]
    cols = 2
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
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
    plt.close(fig)
    return Path(path)
