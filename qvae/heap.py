"""Handing freed heap memory back to the operating system (glibc's `malloc_trim`).

A long loop over many medium-sized tensors (the importance-weighted NLL: thousands of batches of a
few megabytes each) can leave glibc's allocator holding gigabytes it has freed but not returned.
The process's resident memory then climbs until the kernel kills it, although no Python object
outlives its batch (measured in docs/results.md: 0.75 -> 7.9 GB over 2 000 test images at
K = 5 000). `release_freed_memory()` asks glibc to return what it holds; without glibc (macOS,
Windows, musl) it does nothing. `resident_bytes()` reads the resident memory that shows it.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from typing import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl and other C libraries
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Return the C heap's freed memory to the OS; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def resident_bytes() -> int | None:
    """This process's resident memory now, in bytes, from Linux's /proc; None where there is no /proc.

    Unlike `resource.getrusage`'s peak, it falls when memory goes back to the OS, which is what a
    release has to show.
    """
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except OSError:
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")
