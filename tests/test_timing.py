"""Phase timings, FLOP counts and utilisation, and the background worker (timing.py, flops.py, background.py)."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from qvae.background import BackgroundWork
from qvae.config import Config
from qvae.flops import PEAK_ENV, cpu_peak_flops, epoch_flops, linear_macs, peak_flops, utilisation
from qvae.models.build import build_model
from qvae.timing import PhaseTimer, is_wall_clock


def test_phase_timer_charges_each_phase_its_own_time():
    timer = PhaseTimer("cpu")
    with timer.phase("data"):
        time.sleep(0.05)
    with timer.phase("train"):
        time.sleep(0.1)
    with timer.phase("data"):  # a phase entered twice adds up
        time.sleep(0.05)
    timer.add("tsne", 3.0, beside=True)
    m = timer.metrics()
    assert list(m) == ["time_data", "time_train", "time_tsne", "time_total"]
    assert 0.1 <= m["time_data"] < m["time_total"] and 0.1 <= m["time_train"] < m["time_total"]
    table = timer.table()
    assert "tsne (overlapped)" in table and "train" in table and "wall clock" in table


def test_wall_clock_metrics_are_recognised():
    assert all(is_wall_clock(k) for k in ("epoch_seconds", "flops_utilisation", "time_fid", "system/gpu_0_utilization"))
    assert not any(is_wall_clock(k) for k in ("loss", "val_elbo", "fid", "test_nll"))


def test_flops_are_counted_from_the_layer_sizes():
    """The default model: encoder 784-512-256 and decoder 256-512-784, a 128 x 128 RBM (hand count)."""
    model = build_model(Config())
    macs = 784 * 512 + 512 * 256 + 256 * 512 + 512 * 784
    assert linear_macs(model) == macs
    pair = 2 * 128 * 128
    steps = -(-50_000 // 256)
    expected = (6 * macs * 50_000 + 2 * macs * 10_000 + steps * 2 * (4 + 1) * 256 * pair + 3 * pair * 50_000
                + 300 * 256 * 3 * pair)
    assert epoch_flops(model, 50_000, 10_000) == expected
    qbm = build_model(Config(sampler="pimc", gamma=1.0, trotter_slices=16))
    assert epoch_flops(qbm, 50_000, 10_000) > epoch_flops(model, 50_000, 10_000)  # 16 slices per chain
    gaussian = build_model(Config(prior="gaussian"))
    assert epoch_flops(gaussian, 100, 10) == 6 * linear_macs(gaussian) * 100 + 2 * linear_macs(gaussian) * 10


def test_peak_and_utilisation(monkeypatch):
    assert cpu_peak_flops(threads=2) == 2 * cpu_peak_flops(threads=1) > 0
    monkeypatch.setenv(PEAK_ENV, "1e12")
    assert peak_flops(torch.device("cpu")) == 1e12
    assert utilisation(5e11, 2.0, 1e12) == pytest.approx(0.25)
    assert utilisation(1.0, 1.0, None) is None


def test_background_work_runs_in_order_beside_the_caller():
    done, threads = [], set()

    def job(i):
        time.sleep(0.01)
        done.append(i)
        threads.add(threading.current_thread().name)

    with BackgroundWork(enabled=True) as work:
        for i in range(5):
            work.submit(job, i)
        assert len(done) < 5  # submit returned before the jobs ran
    assert done == [0, 1, 2, 3, 4]
    assert threads and all(name.startswith("qvae-cpu-work") for name in threads)
    assert work.busy >= 0.05


def test_background_work_inline_runs_at_once_in_the_caller():
    done = []
    with BackgroundWork(enabled=False) as work:
        work.submit(done.append, threading.current_thread().name)
        assert done == [threading.current_thread().name]


def test_a_failed_job_surfaces_in_the_caller_and_drops_the_queue():
    def boom():
        raise ValueError("frame failed")

    ran = []
    with pytest.raises(ValueError, match="frame failed"):
        with BackgroundWork(enabled=True) as work:
            work.submit(boom)
            work.wait()
    with pytest.raises(KeyboardInterrupt):
        with BackgroundWork(enabled=True) as work:
            work.submit(time.sleep, 0.2)
            for i in range(3):
                work.submit(ran.append, i)
            raise KeyboardInterrupt  # the running job finishes, the queued ones are cancelled
    assert ran == []
