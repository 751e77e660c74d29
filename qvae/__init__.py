"""QVAE: a VAE with a Boltzmann-machine prior over binary latents.

`qvae.load_generator(uri)` loads a logged or registered model to generate digits (see
qvae.tracking.loading); it imports MLflow only when called, so the library itself does not need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qvae.tracking.loading import Generator


def load_generator(uri: str, device: Any = None) -> "Generator":
    """The QVAE generator at an MLflow model URI (runs:/, models:/NAME@ALIAS, models:/NAME/N, a path)."""
    from qvae.tracking.loading import load_generator as _load

    return _load(uri, device)


__all__ = ["load_generator"]
