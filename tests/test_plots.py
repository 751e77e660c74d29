"""Pictures: t-SNE embeddings, frames, the training GIF, image grids and training curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial import procrustes
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

from qvae.plots import (
    assemble_gif,
    embedding_limits,
    save_grid,
    save_training_curves,
    save_tsne,
    save_tsne_frame,
    tsne_embedding,
)

FRAME_SIZE = (605, 550)  # 5.5 x 5.0 in at 110 dpi
FINAL_SIZE = (968, 880)  # 8.8 x 8.0 in at 110 dpi


@pytest.fixture(scope="module", autouse=True)
def one_openmp_thread():
    """Barnes-Hut t-SNE syncs its OpenMP threads every iteration: on a CPU shared with other
    jobs that is ~30x slower (0.7 s -> 22 s for 300 points here), and 300 points gain nothing
    from threads. One thread keeps these tests fast anywhere."""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture(scope="module")
def clusters() -> tuple[np.ndarray, np.ndarray]:
    """300 points in 10 well-separated Gaussian clusters in 64-D, labels 0..9."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(10, 64)) * 4.0
    labels = np.arange(300) % 10
    return (centers[labels] + rng.normal(size=(300, 64))).astype(np.float32), labels


@pytest.fixture(scope="module")
def embedding(clusters: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return tsne_embedding(clusters[0], seed=0)


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum(axis=1).mean()))


def test_embedding_separates_clusters(clusters, embedding) -> None:
    assert embedding.shape == (300, 2) and embedding.dtype == np.float32
    accuracy = cross_val_score(KNeighborsClassifier(5), embedding, clusters[1], cv=5).mean()
    assert accuracy > 0.9


def test_high_quality_separates_clusters_and_takes_tensors(clusters) -> None:
    features, labels = clusters
    high = tsne_embedding(torch.from_numpy(features), quality="high", seed=0)
    assert high.shape == (300, 2)
    assert cross_val_score(KNeighborsClassifier(5), high, labels, cv=5).mean() > 0.9


def test_embedding_is_deterministic_for_a_seed(clusters, embedding) -> None:
    again = tsne_embedding(clusters[0], seed=0)
    # Bitwise equal on this machine; the tolerance covers OpenMP reduction order on big ones.
    np.testing.assert_allclose(again, embedding, rtol=0, atol=1e-4 * float(embedding.std()))


def test_init_keeps_the_previous_frame_when_features_barely_move(clusters, embedding) -> None:
    features, _ = clusters
    moved = features + 0.05 * np.random.default_rng(1).normal(size=features.shape).astype(
        np.float32)
    continued = tsne_embedding(moved, init=embedding, seed=0)
    scratch = tsne_embedding(moved, seed=0)
    # Same shape up to rotation/scale (Procrustes) and, in raw coordinates, no rotation/jump.
    assert procrustes(embedding, continued)[2] < 0.01
    assert procrustes(embedding, continued)[2] < procrustes(embedding, scratch)[2] / 10
    assert _rms(embedding, continued) < 0.25 * float(embedding.std(axis=0).mean())
    assert _rms(embedding, continued) < _rms(embedding, scratch) / 3


def test_bad_arguments_are_errors(clusters, embedding) -> None:
    with pytest.raises(ValueError, match="quality"):
        tsne_embedding(clusters[0], quality="best")
    with pytest.raises(ValueError, match="init"):
        tsne_embedding(clusters[0], init=embedding[:10])


def test_embedding_limits_hold_every_embedding(embedding) -> None:
    (x0, x1), (y0, y1) = embedding_limits([embedding, 2 * embedding])
    both = np.concatenate([embedding, 2 * embedding])
    assert x0 < both[:, 0].min() and both[:, 0].max() < x1
    assert y0 < both[:, 1].min() and both[:, 1].max() < y1
    assert x1 - x0 == pytest.approx(y1 - y0)  # square: equal aspect without distortion


def test_frames_and_gif(tmp_path: Path, clusters, embedding) -> None:
    labels = torch.from_numpy(clusters[1])
    steps = [embedding, 1.1 * embedding, 1.2 * embedding]
    limits = embedding_limits(steps)
    frames = [save_tsne_frame(e, labels, tmp_path / f"frame_{i}.png", title=f"epoch {i + 1}",
                              limits=limits) for i, e in enumerate(steps)]
    for frame in frames:
        with Image.open(frame) as im:
            assert im.format == "PNG" and im.size == FRAME_SIZE
    Image.new("RGB", (300, 200), "white").save(tmp_path / "odd.png")  # resized to the first
    frames.append(tmp_path / "odd.png")

    gif = assemble_gif(frames, tmp_path / "tsne.gif", seconds_per_frame=0.5)
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.is_animated and im.n_frames == len(frames)
        assert im.size == FRAME_SIZE and im.info.get("loop") == 0
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
    assert durations == [500, 500, 500, 1500]  # the last frame is held 3 x longer


def test_assemble_gif_needs_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        assemble_gif([], tmp_path / "empty.gif")


def test_final_tsne_picture(tmp_path: Path, clusters) -> None:
    path = save_tsne(clusters[0], clusters[1], tmp_path / "tsne.png", title="latent space")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == FINAL_SIZE


def test_save_grid_still_works(tmp_path: Path) -> None:
    path = save_grid(torch.rand(16, 784), tmp_path / "grid.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (2 * (8 * 30 + 2), 2 * (2 * 30 + 2))


def test_save_training_curves_still_works(tmp_path: Path) -> None:
    history = [{"loss": 3.0 - e, "val_loss": 3.2 - e, "cost": 2.0 - e, "kl": 1.0, "elbo": e - 3}
               for e in range(3)]
    path = save_training_curves(history, tmp_path / "curves.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (1100, 704)
