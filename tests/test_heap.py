"""qvae.heap: freed C-heap memory really goes back to the OS (resident memory read from /proc)."""

from __future__ import annotations

import ctypes
import mmap
import sys

import pytest

from qvae.heap import release_freed_memory, resident_bytes

CHUNK, CHUNKS = 100 * 1024, 2000  # 200 MB in chunks below glibc's mmap threshold: they live on the heap


def glibc() -> ctypes.CDLL:
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.argtypes, libc.malloc.restype = [ctypes.c_size_t], ctypes.c_void_p
    libc.free.argtypes, libc.free.restype = [ctypes.c_void_p], None
    libc.memset.argtypes, libc.memset.restype = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t], ctypes.c_void_p
    return libc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim is Linux's")
def test_freed_heap_memory_that_malloc_keeps_goes_back_to_the_os():
    """The case the NLL loop hit: memory freed below a chunk still in use stays resident until trimmed."""
    libc = glibc()
    chunks = [libc.malloc(CHUNK) for _ in range(CHUNKS)]
    pin = libc.malloc(CHUNK)  # still in use at the heap's top: free() alone cannot shrink the heap
    for chunk in chunks:
        libc.memset(chunk, 1, CHUNK)  # touched, so resident
    before = resident_bytes()
    for chunk in chunks:
        libc.free(chunk)
    kept = resident_bytes()
    assert release_freed_memory()
    released = resident_bytes()
    libc.free(pin)
    assert kept > before - 50 * 2**20, "glibc returned the memory by itself: this test shows nothing"
    assert kept - released > 150 * 2**20, f"{kept / 2**20:.0f} MB before the trim, {released / 2**20:.0f} after"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/statm is Linux's")
def test_resident_bytes_sees_pages_touched_and_unmapped():
    """Against the kernel's own accounting of a fresh anonymous mapping (untouched pages are not resident),
    whatever the C heap already holds."""
    size = 200 * 2**20
    start = resident_bytes()
    region = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):
        region[offset] = 1
    touched = resident_bytes()
    region.close()
    unmapped = resident_bytes()
    assert touched - start > 190 * 2**20, (start, touched)
    assert touched - unmapped > 190 * 2**20, (touched, unmapped)
