"""Pictures: t-SNE embeddings, frames, the training GIF, image grids and training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
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
    jobs that makes it many times slower (measured in docs/results.md), and 300 points gain
    nothing from threads. One thread keeps these tests fast anywhere."""
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


def test_gif_holds_one_frame_per_input_frame_in_order(tmp_path: Path) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 0)]
    frames = []
    for i, colour in enumerate(colours):
        picture = Image.new("RGB", (40, 30), colour)
        picture.putpixel((i, 0), (0, 0, 0))  # where the frame came from, in its own pixels
        frames.append(tmp_path / f"frame_{i}.png")
        picture.save(frames[-1])
    with Image.open(assemble_gif(frames, tmp_path / "order.gif")) as im:
        assert im.n_frames == len(colours)
        for i, colour in enumerate(colours):
            im.seek(i)
            frame = np.asarray(im.convert("RGB"))
            assert frame.shape == (30, 40, 3)
            assert tuple(frame[15, 20]) == colour
            marks = [x for x in range(len(colours)) if tuple(frame[0, x]) == (0, 0, 0)]
            assert marks == [i]


def test_assemble_gif_needs_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        assemble_gif([], tmp_path / "empty.gif")


TAB10 = [tuple(round(255 * c) for c in plt.get_cmap("tab10").colors[d]) for d in range(10)]


def _pixels_of(picture: np.ndarray, colour: tuple[int, ...], tolerance: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) pixel coordinates whose RGB is within `tolerance` (summed) of `colour`."""
    ys, xs = np.nonzero(np.abs(picture.astype(int) - np.array(colour)).sum(-1) <= tolerance)
    return xs, ys


def _axes_box(picture: np.ndarray) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) pixel columns/rows of the axes' black frame."""
    dark = picture.max(-1) < 80
    cols = np.nonzero(dark.sum(0) > 0.5 * picture.shape[0])[0]
    rows = np.nonzero(dark.sum(1) > 0.5 * picture.shape[1])[0]
    return int(cols.min()), int(cols.max()), int(rows.min()), int(rows.max())


@pytest.fixture(scope="module")
def two_clusters() -> tuple[np.ndarray, np.ndarray]:
    """100 + 100 points around two centres 40 apart in 64-D (unit noise): far apart in any view."""
    rng = np.random.default_rng(3)
    centre = np.zeros(64)
    centre[:4] = 20.0
    labels = np.repeat([0, 1], 100)
    return (np.where(labels[:, None] == 0, -centre, centre) + rng.normal(size=(200, 64))).astype(np.float32), labels


def _separated(points: np.ndarray, labels: np.ndarray) -> bool:
    """Every point lies on its own side of the hyperplane halfway between the two centroids,
    with a margin wider than a tenth of the centroids' distance."""
    c0, c1 = points[labels == 0].mean(0), points[labels == 1].mean(0)
    direction = (c1 - c0) / np.linalg.norm(c1 - c0)
    side = (points - (c0 + c1) / 2) @ direction
    margin = 0.1 * float(np.linalg.norm(c1 - c0)) / 2
    return bool((side[labels == 0] < -margin).all() and (side[labels == 1] > margin).all())


def test_tsne_keeps_two_well_separated_clusters_apart(two_clusters) -> None:
    features, labels = two_clusters
    assert _separated(features, labels)  # the premise, in the features
    for quality in ("fast", "high"):
        embedding = tsne_embedding(features, seed=0, quality=quality)
        assert _separated(embedding, labels), quality


def test_tsne_frame_draws_each_point_where_the_embedding_puts_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[-10.0, 3.0], [10.0, -3.0]])
    labels = np.repeat([0, 1], 100)
    embedding = (centres[labels] + rng.normal(size=(200, 2))).astype(np.float32)
    limits = embedding_limits([embedding])
    path = save_tsne_frame(embedding, labels, tmp_path / "frame.png", title="epoch 1", limits=limits)
    with Image.open(path) as im:
        picture = np.asarray(im.convert("RGB"))
    left, right, top, bottom = _axes_box(picture)
    (x0, x1), (y0, y1) = limits
    for digit in (0, 1):
        xs, ys = _pixels_of(picture, TAB10[digit])
        inside = (xs > left) & (xs < right) & (ys > top) & (ys < bottom)  # not the legend's marker
        xs, ys = xs[inside], ys[inside]
        assert len(xs) > 100
        points = embedding[labels == digit]
        expected_x = left + (points[:, 0].mean() - x0) / (x1 - x0) * (right - left)
        expected_y = bottom - (points[:, 1].mean() - y0) / (y1 - y0) * (bottom - top)
        assert abs(xs.mean() - expected_x) < 5 and abs(ys.mean() - expected_y) < 5
        # every drawn point of this digit lies within the bounding box of its points (+ a marker radius)
        px = left + (points[:, 0] - x0) / (x1 - x0) * (right - left)
        assert px.min() - 6 < xs.min() and xs.max() < px.max() + 6
    for digit in range(2, 10):  # digits absent from the data: their legend marker, nothing in the axes
        xs, ys = _pixels_of(picture, TAB10[digit])
        assert (xs > right).sum() > 10
        assert not ((xs > left + 1) & (xs < right - 1) & (ys > top + 1) & (ys < bottom - 1)).any()


def test_final_tsne_picture_shows_the_clusters_apart(tmp_path: Path, two_clusters) -> None:
    features, labels = two_clusters
    path = save_tsne(features, labels, tmp_path / "tsne.png", title="latent space", quality="fast")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == FINAL_SIZE
        picture = np.asarray(im.convert("RGB"))
    left, right, top, bottom = _axes_box(picture)
    pixels, digits = [], []
    for digit in (0, 1):
        xs, ys = _pixels_of(picture, TAB10[digit])
        inside = (xs > left) & (xs < right) & (ys > top) & (ys < bottom)
        assert inside.sum() > 100
        pixels.append(np.stack([xs[inside], ys[inside]], 1).astype(float))
        digits.append(np.full(inside.sum(), digit))
    assert _separated(np.concatenate(pixels), np.concatenate(digits))


def test_grid_puts_each_image_in_its_cell(tmp_path: Path) -> None:
    """10 images of 8 per row: image i at row i // 8, column i % 8 of 30-pixel cells (2 of white
    padding), each pixel upscaled to 2 x 2; the empty cells and the padding are white."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 784), generator=gen).float() / 255
    path = save_grid(images, tmp_path / "grid.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "L" and im.size == (2 * (8 * 30 + 2), 2 * (2 * 30 + 2))
        grid = np.asarray(im)
    expected = np.full((2 * 30 + 2, 8 * 30 + 2), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        row, col = divmod(i, 8)
        expected[2 + 30 * row:30 + 30 * row, 2 + 30 * col:30 + 30 * col] = (image.reshape(28, 28) * 255).round().numpy()
    np.testing.assert_array_equal(grid, expected.repeat(2, axis=0).repeat(2, axis=1))


def test_grid_clamps_values_outside_0_1(tmp_path: Path) -> None:
    images = torch.cat([torch.full((1, 784), -3.0), torch.full((1, 784), 7.0)])
    with Image.open(save_grid(images, tmp_path / "grid.png", nrow=2)) as im:
        grid = np.asarray(im)
    assert (grid[4:60, 4:60] == 0).all() and (grid[4:60, 64:120] == 255).all()


def _curves(history: list[dict[str, float]], path: Path, monkeypatch: pytest.MonkeyPatch) -> list:
    """save_training_curves(history, path), returning its figure's axes as it was saved."""
    from matplotlib.figure import Figure

    figures, savefig = [], Figure.savefig

    def keep(fig, *args, **kwargs):  # keep the figure for inspection
        figures.append(fig)
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    save_training_curves(history, path)
    monkeypatch.undo()
    assert len(figures) == 1
    return figures[0].axes


def test_training_curves_plot_each_term_against_the_epochs(tmp_path: Path, monkeypatch) -> None:
    history = [{"loss": 3.0 - e, "val_loss": 3.2 - e, "cost": 2.0 - e, "kl": 1.0 + e, "elbo": e - 3.0,
                "val_elbo": e - 3.5, "epoch_seconds": 9.0} for e in range(3)]
    axes = _curves(history, tmp_path / "curves.png", monkeypatch)
    panels = [ax for ax in axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["loss", "cost", "kl", "elbo"]  # no epoch_seconds panel
    for ax in panels:
        name = ax.get_title()
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {key for key in (name, f"val_{name}") if key in history[0]}
        for key, line in lines.items():
            assert list(line.get_xdata()) == [1, 2, 3]
            assert list(line.get_ydata()) == [h[key] for h in history]
        low, high = ax.get_ylim()
        assert low <= min(min(line.get_ydata()) for line in lines.values())
        assert high >= max(max(line.get_ydata()) for line in lines.values())
        assert [t.get_text() for t in ax.get_legend().get_texts()] == list(lines)


def test_training_curves_of_a_quantum_prior_show_the_bounds(tmp_path: Path, monkeypatch) -> None:
    history = [{"loss": 2.0, "cost": 1.0, "kl_upper_bound": 0.5, "q_elbo": -1.5, "val_q_elbo": -1.6}] * 2
    axes = _curves(history, tmp_path / "curves.png", monkeypatch)
    assert [ax.get_title() for ax in axes if ax.get_title()] == ["loss", "cost", "kl_upper_bound", "q_elbo"]


def test_training_curves_picture_follows_the_history(tmp_path: Path) -> None:
    def history(scale: float) -> list[dict[str, float]]:
        return [{"loss": scale * (3.0 - e), "val_loss": 3.2 - e, "cost": 2.0 - e, "kl": 1.0, "elbo": e - 3}
                for e in range(3)]

    def pixels(path: Path) -> np.ndarray:
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == (1100, 704)
            return np.asarray(im.convert("RGB"))

    a = pixels(save_training_curves(history(1.0), tmp_path / "a.png"))
    again = pixels(save_training_curves(history(1.0), tmp_path / "again.png"))
    other = pixels(save_training_curves(history(2.0), tmp_path / "other.png"))
    np.testing.assert_array_equal(a, again)  # the same history draws the same picture
    changed = np.nonzero((a != other).any(-1))
    assert len(changed[0]) > 100
    assert changed[1].max() < a.shape[1] / 2 and changed[0].max() < a.shape[0] / 2  # only the loss panel
