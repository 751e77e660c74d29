"""qvae.stopping: SIGTERM stops a run even when Python swallows its exception.

Python drops an exception raised in a weakref callback, a `__del__` or a garbage-collector callback
("Exception ignored in ..."). A signal that arrives while one runs (an import's module-lock clean-up,
seen in CI) used to be lost that way: the run trained on and finished, exit 0, as if never told
to stop. These tests make a real SIGTERM arrive inside a real weakref callback.
"""

from __future__ import annotations

import signal
import sys
import weakref

import pytest

from qvae.config import Config
from qvae.stopping import Terminated, raise_if_interrupted, stop_on_sigterm
from qvae.timing import PhaseTimer
from qvae.train import load_checkpoint, train
from tests.test_train import SMALL


class _Referent:
    pass


@pytest.fixture
def sigterm_handled(monkeypatch):
    """`stop_on_sigterm()` as the CLIs install it, undone afterwards."""
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    previous = signal.getsignal(signal.SIGTERM)
    stop_on_sigterm()
    yield
    signal.signal(signal.SIGTERM, previous)
    try:
        raise_if_interrupted()  # leave nothing pending for the next test
    except KeyboardInterrupt:
        pass


def sigterm_inside_a_weakref_callback() -> list[str]:
    """Deliver SIGTERM while Python runs a weakref callback; return what ran after it in the callback
    and after it in the caller (proof that the exception did not propagate)."""
    ran: list[str] = []

    def callback(_):
        signal.raise_signal(signal.SIGTERM)  # the handler runs here, inside the callback
        ran.append("callback went on")  # not reached: the handler raised

    referent = _Referent()
    ref = weakref.ref(referent, callback)  # noqa: F841 (kept alive so the callback fires)
    del referent  # CPython frees it now and calls the callback
    ran.append("caller went on")
    return ran


def test_python_swallows_the_exception_and_raise_if_interrupted_raises_it_once(sigterm_handled, capsys):
    assert sigterm_inside_a_weakref_callback() == ["caller went on"]  # lost to Python, not to us
    assert "Terminated" in capsys.readouterr().err  # said when it happened
    with pytest.raises(Terminated):
        raise_if_interrupted()
    raise_if_interrupted()  # once: nothing is pending any more


def test_a_lost_sigterm_stops_training_before_the_next_step_with_the_last_epoch_checkpointed(
        sigterm_handled, small_data, tmp_path):
    epochs_ended = []

    class LoseASigtermAfterTheFirstEpoch:
        def on_epoch_end(self, report):
            epochs_ended.append(report.epoch)
            if report.epoch == 1:
                sigterm_inside_a_weakref_callback()

    with pytest.raises(Terminated):
        train(Config(epochs=3, **SMALL), small_data, checkpoint_dir=tmp_path, progress=False,
              callbacks=[LoseASigtermAfterTheFirstEpoch()])
    assert epochs_ended == [1]
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1  # resumable from there


def test_a_lost_sigterm_stops_a_job_at_its_next_phase(sigterm_handled):
    timer, entered = PhaseTimer(), []
    with pytest.raises(Terminated):
        with timer.phase("fid"):
            entered.append("fid")
            sigterm_inside_a_weakref_callback()
        with timer.phase("nll"):
            entered.append("nll")
    assert entered == ["fid"]
