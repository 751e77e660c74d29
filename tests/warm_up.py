"""`python -m tests.warm_up MNIST_ROOT CACHE_DIR`: the reference digit classifier into the cache.

Started in the background by tests/conftest.py (warm_up_the_reference_classifier) through the very
function the main job's class scores use, so it trains what they would look up, under the same lock.
"""

from __future__ import annotations

import logging
import os
import sys

from qvae.metrics.scores import standard_classifier

if __name__ == "__main__":
    os.nice(10)  # the tests come first: this takes the CPU time they leave
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    standard_classifier(sys.argv[1], sys.argv[2], progress=False)
