"""Stopping when asked: Ctrl-C (SIGINT) and SIGTERM end a run the same orderly way.

SIGTERM is what a scheduler, `docker stop`, Kubernetes or a preempted cloud VM sends. By default
it kills Python at once, leaving the MLflow run RUNNING for ever. With `stop_on_sigterm()` it
raises `Terminated`, a KeyboardInterrupt: the run in progress ends KILLED (MLflow's status for a
run a person or a system stopped), the tuning coordinator still registers its best finished
trial, and the command exits 143 (128 + SIGTERM) saying how to continue.

A signal's exception can be lost: when it arrives while Python runs a weakref callback, a
`__del__` or a garbage-collector callback (an import's module-lock cleanup, say), Python prints
"Exception ignored in ..." and carries on as if nothing had happened. `stop_on_sigterm()` also
keeps such a lost interrupt, and the long loops call `raise_if_interrupted()` at each step, so
the run still stops, at the next safe point.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any, Callable

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM

_lost: KeyboardInterrupt | None = None  # an interrupt Python swallowed, still to be raised


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated("received SIGTERM")


def _keep_lost_interrupts(previous: Callable[[Any], object]) -> Callable[[Any], object]:
    """An unraisable-exception hook that keeps a swallowed KeyboardInterrupt (Terminated included)
    for `raise_if_interrupted`, and hands every other exception to `previous`."""

    def hook(unraisable: Any) -> None:
        global _lost
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            _lost = unraisable.exc_value
            print(f"{type(_lost).__name__} ({_lost or 'Ctrl-C'}) arrived inside a clean-up callback; "
                  "stopping at the next step", file=sys.stderr)
            return
        previous(unraisable)

    hook.keeps_lost_interrupts = True  # type: ignore[attr-defined]
    return hook


def stop_on_sigterm() -> None:
    """From now on SIGTERM raises Terminated in the main thread (where it arrives in Python), and an
    interrupt Python swallows is kept for `raise_if_interrupted`."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    if not getattr(sys.unraisablehook, "keeps_lost_interrupts", False):
        sys.unraisablehook = _keep_lost_interrupts(sys.unraisablehook)


def raise_if_interrupted() -> None:
    """Raise the interrupt (Ctrl-C or SIGTERM) Python swallowed since the last call, if any."""
    global _lost
    lost, _lost = _lost, None
    if lost is not None:
        raise lost


def exit_code(interrupt: KeyboardInterrupt) -> int:
    return EXIT_TERMINATED if isinstance(interrupt, Terminated) else EXIT_INTERRUPTED
