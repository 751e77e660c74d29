"""Loading a logged or registered QVAE generator from any MLflow model URI (tracking layer).

    gen = load_generator("models:/qvae-mnist@champion")      # or runs:/<id>/model, models:/qvae-mnist/3, a path
    images = gen.generate(64, seed=0)                          # (64, 1, 28, 28) in [0, 1]

The model is loaded through MLflow's pyfunc loader (the same artifacts REST serving uses) and
moved to the requested device, so a model trained on a GPU generates on a CPU and vice versa.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import torch

from qvae.models.build import MODEL_CLASSES
from qvae.models.qvae import QVAE, image_seeds
from qvae.train import resolve_device

BYTES_PER_IMAGE_BUDGET = 4 * 784 * 4  # the float32 result plus generation's working copies


class ModelNotFoundError(LookupError):
    """The URI names a registered model, version or alias that does not exist."""


@dataclass
class Generator:
    """A loaded QVAE that draws digit images from its prior."""

    model: QVAE
    uri: str

    @property
    def device(self) -> torch.device:
        return self.model.train_bias.device

    @property
    def default_sweeps(self) -> int:
        """The Gibbs burn-in the model was evaluated with (its logged FID used it)."""
        return self.model.config.generate_sweeps

    def to(self, device: str | torch.device) -> "Generator":
        self.model.to(resolve_device(str(device)))
        return self

    def generate(self, n: int, seed: int | None = None, sweeps: int | None = None) -> torch.Tensor:
        """n images (n, 1, 28, 28) in [0, 1]; the same seed and sweeps give the same images.

        `sweeps` is the prior's block-Gibbs burn-in per image (default: `default_sweeps`); every
        image is its own independent chain. Without a seed a random one is drawn.
        """
        limit = max_images(self.device)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= limit:
            raise ValueError(f"number of images must be an integer in 1..{limit} "
                             f"(the limit is what fits in free memory on {self.device}), got {n!r}")
        if sweeps is not None and sweeps < 0:
            raise ValueError(f"sweeps must be >= 0, got {sweeps}")
        seed = secrets.randbelow(2**31) if seed is None else seed
        images = self.model.generate_from_seeds(image_seeds(seed, n), sweeps=sweeps)
        side = int(round(self.model.config.input_dim ** 0.5))
        return images.reshape(n, 1, side, side)


def max_images(device: torch.device) -> int:
    """How many images one call may generate: half the free memory of the device, capped."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            free = 8 * 2**30
    return int(max(1, min(10_000_000, free // 2 // BYTES_PER_IMAGE_BUDGET)))


def load_generator(uri: str, device: str | torch.device | None = None) -> Generator:
    """The QVAE generator logged at `uri` (any MLflow model URI or local path), on `device`.

    Unknown registered models, versions or aliases raise ModelNotFoundError listing what exists.
    A model logged by an incompatible qvae version says which version it needs.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    check_registry_uri(uri)
    try:
        pyfunc_model = mlflow.pyfunc.load_model(uri)
    except MlflowException as err:
        raise ModelNotFoundError(f"cannot load {uri!r}: {err.message}") from err
    python_model = pyfunc_model.unwrap_python_model()
    model = getattr(python_model, "model", None)
    if not isinstance(model, MODEL_CLASSES):
        raise TypeError(f"{uri!r} is not a QVAE generator logged by this project "
                        f"(its python model is {type(python_model).__name__})")
    generator = Generator(model.eval(), uri)
    return generator.to(device) if device is not None else generator


def check_registry_uri(uri: str) -> None:
    """For models:/NAME@ALIAS and models:/NAME/VERSION, fail with the registry's contents if absent."""
    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/([^/]+))?/?", uri)
    if not match:
        return
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name, alias, version = match.groups()
    if alias is None and version is None and re.fullmatch(r"m-[0-9a-f]{32}", name):
        return  # MLflow 3's models:/<model_id>: a logged model, not a registered one
    client = MlflowClient()
    try:
        registered = client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        names = sorted(m.name for m in client.search_registered_models())
        raise ModelNotFoundError(f"no registered model named {name!r}; registered models: "
                                 f"{', '.join(names) or 'none'}") from None
    if alias is not None and alias not in registered.aliases:
        known = ", ".join(f"@{a} -> version {v}" for a, v in sorted(registered.aliases.items())) or "none"
        raise ModelNotFoundError(f"model {name!r} has no alias {alias!r}; its aliases: {known}")
    if version is not None and version not in ("latest",):
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        if not version.isdigit() or int(version) not in versions:
            raise ModelNotFoundError(f"model {name!r} has no version {version!r}; its versions: "
                                     f"{', '.join(map(str, versions)) or 'none'}")


def write_images(images: torch.Tensor, path: Path, fmt: str) -> Path:
    """Save images (N, 1, H, W) as a PNG grid, a .npy array or a folder of PNGs."""
    import math

    import numpy as np

    from qvae.plots import grid_image

    if fmt == "npy":
        np.save(path, images.cpu().numpy().astype(np.float32))
    elif fmt == "png":
        grid_image(images.reshape(len(images), -1), nrow=math.ceil(math.sqrt(len(images)))).save(path)
    elif fmt == "png-dir":
        from PIL import Image

        path.mkdir(parents=True, exist_ok=True)
        pixels = (images[:, 0].cpu().clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        for i, image in enumerate(pixels):
            Image.fromarray(image, mode="L").save(path / f"{i:05d}.png")
    else:
        raise ValueError(f"format must be png, npy or png-dir, got {fmt!r}")
    return path
