"""Stopping when asked: Ctrl-C (SIGINT) and SIGTERM end a run the same orderly way.

SIGTERM is what a scheduler, `docker stop`, Kubernetes or a preempted cloud VM sends. By default
it kills Python at once, leaving the MLflow run RUNNING for ever. With `stop_on_sigterm()` it
raises `Terminated`, a KeyboardInterrupt: the run in progress ends KILLED (MLflow's status for a
run a person or a system stopped), the tuning coordinator still registers its best finished
trial, and the command exits 143 (128 + SIGTERM) saying how to continue.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated("received SIGTERM")


def stop_on_sigterm() -> None:
    """From now on SIGTERM raises Terminated in the main thread (where it arrives in Python)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def exit_code(interrupt: KeyboardInterrupt) -> int:
    return EXIT_TERMINATED if isinstance(interrupt, Terminated) else EXIT_INTERRUPTED
