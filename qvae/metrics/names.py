"""What a score is called on each split: one rule for every metric the final scores log.

On the test split (read once, by the final scores) FID, KID, the latent probe and class coverage
keep their established names (fid, kid, latent_accuracy, class_entropy, ...) and everything else is
`test_*` (test_elbo, test_nll). On the validation split (a tuning trial's scores, which choose)
every name is `val_*` (val_fid, val_nll, ...).
"""

from __future__ import annotations

TEST_NAMES = ("fid", "fid_64", "kid", "kid_std", "fid_samples", "latent_accuracy", "class_entropy", "class_confidence")


def split_name(name: str, split: str) -> str:
    """A score's metric name on `split` ("test" or "validation"); `name` is its test-split name or a bare term."""
    if split == "test":
        return name if name in TEST_NAMES or name.startswith("test_") else f"test_{name}"
    return "val_" + name.removeprefix("test_")
