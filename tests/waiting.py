"""Waiting on events, not on the clock: a trial state, a logged metric, a file, a port, a log line.

A test waits until what it needs has happened; the timeout only bounds a hang, so it is generous
(a loaded 2-core CI machine can be ten times slower than a quiet one) and never decides a result.
"""

from __future__ import annotations

import subprocess
import time
from typing import Callable, TypeVar

T = TypeVar("T")
GENEROUS_TIMEOUT_S = 600.0


def wait_until(condition: Callable[[], T], what: str, *, process: subprocess.Popen | None = None,
               timeout: float = GENEROUS_TIMEOUT_S, poll: float = 0.2) -> T:
    """Poll `condition()` until it returns something truthy, and return that.

    Fails with `what` when `process` (the one expected to make it happen) exits first, or when
    nothing happened within `timeout` seconds.
    """
    give_up = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            output = process.stdout.read()[-3000:] if process.stdout else ""
            raise AssertionError(f"{what}: the process exited with {process.returncode} first\n{output}")
        if time.monotonic() > give_up:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(poll)

