"""The numbers of a fixed-seed run and of a one-trial study are those recorded in tests/fixtures.

Bit for bit (the same machine type and torch version as CI): a refactoring that claims to change
no number proves it here. See tests/fixed_seed.py for the settings and how to record them anew.
"""

from __future__ import annotations

import pytest

from tests.fixed_seed import fixture, run_metrics, trial_metrics


def test_the_fixed_seed_run_reproduces_its_recorded_numbers(mnist_dir):
    assert run_metrics(mnist_dir) == fixture("fixed_seed_run")


def test_the_fixed_seed_trial_reproduces_its_recorded_numbers(mnist_dir):
    assert trial_metrics(mnist_dir) == fixture("fixed_seed_trial")


@pytest.mark.slow
def test_the_fixed_seed_run_with_fid_reproduces_its_recorded_numbers(mnist_dir, inception_cache, monkeypatch):
    monkeypatch.setenv("QVAE_CACHE_DIR", str(inception_cache))
    assert run_metrics(mnist_dir, fid=True) == fixture("fixed_seed_run_fid")
