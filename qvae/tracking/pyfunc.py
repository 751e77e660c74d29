"""The MLflow pyfunc model that generates MNIST digits from a trained QVAE ("models from code").

MLflow executes this file when the model is loaded; `set_model` at the bottom hands it the
generator. The weights (`weights.pt`) and the config (`config.json`) travel as model artifacts,
and the `qvae` package travels as code, so a logged model loads in a fresh process with nothing
but MLflow and torch.

Input: a table with a `seed` column, one image per row (the same seed always gives the same
image, whatever else is in the request). Params: `num_images` (> 0: that many images for the
request seed seed[0], i.e. image seeds seed[0] * 2^32 + i, as `qvae generate --seed` and
`Generator.generate(n, seed)` draw them), `sweeps` (Gibbs burn-in of the prior, default: the
trained config's `generate_sweeps`). Output: float32 array (N, 784) of intensities in [0, 1].
"""

from __future__ import annotations

import os
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

MAX_IMAGES_PER_CALL = 100_000
MODEL_FORMAT_VERSION = 1


class QVAEGenerator(PythonModel):
    """Loads the QVAE on the best device (`QVAE_DEVICE` overrides) and draws images."""

    def load_context(self, context: Any) -> None:
        import json

        import torch

        from qvae.config import Config
        from qvae.models.build import build_model
        from qvae.train import resolve_device

        meta = json.loads(open(context.artifacts["config"]).read())
        version = meta.get("format_version")
        if version != MODEL_FORMAT_VERSION:
            raise RuntimeError(
                f"this QVAE model was logged with format version {version}; this qvae understands "
                f"version {MODEL_FORMAT_VERSION} (install the qvae-mlops release that logged it)")
        self.device = resolve_device(os.environ.get("QVAE_DEVICE", "auto"))
        config = Config.from_dict({**meta["config"], "device": str(self.device)})
        self.model = build_model(config)  # the QVAE, or the Gaussian baseline for prior=gaussian
        state = torch.load(context.artifacts["weights"], map_location=self.device, weights_only=True)
        self.model.load_state_dict(state)
        self.model.to(self.device).eval()

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        """Images for the request's seeds (MLflow checks `model_input` against the logged signature)."""
        try:
            seeds = seeds_from_input(model_input, params or {})
            sweeps = (params or {}).get("sweeps")
            if sweeps is not None and int(sweeps) < 0:
                raise ValueError(f"sweeps must be >= 0 (the prior's Gibbs burn-in), got {sweeps}")
        except (TypeError, ValueError) as err:  # the request's fault: HTTP 400 with our message, no stack trace
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None
        images = self.model.generate_from_seeds(seeds, sweeps=None if sweeps is None else int(sweeps))
        return images.cpu().numpy().astype(np.float32)


def seeds_from_input(model_input: Any, params: dict[str, Any]) -> list[int]:
    """The list of per-image seeds a request asks for, validated."""
    if hasattr(model_input, "columns"):
        if "seed" not in model_input.columns:
            raise ValueError(f"input needs a 'seed' column, got columns {list(model_input.columns)}")
        seeds = [int(s) for s in model_input["seed"].tolist()]
    elif isinstance(model_input, dict) and "seed" in model_input:
        seeds = [int(s) for s in np.atleast_1d(model_input["seed"]).tolist()]
    else:
        seeds = [int(s) for s in np.atleast_1d(np.asarray(model_input)).reshape(-1).tolist()]
    num_images = int(params.get("num_images") or 0)
    if num_images < 0 or num_images > MAX_IMAGES_PER_CALL:
        raise ValueError(f"num_images must be in 0..{MAX_IMAGES_PER_CALL} (0: one image per seed), got {num_images}")
    if num_images:
        from qvae.models.qvae import image_seeds

        seeds = image_seeds(seeds[0] if seeds else 0, num_images)
    if not 1 <= len(seeds) <= MAX_IMAGES_PER_CALL:
        raise ValueError(f"number of images must be in 1..{MAX_IMAGES_PER_CALL}, got {len(seeds)}")
    if any(not 0 <= s < 2**63 for s in seeds):
        raise ValueError("seeds must be in 0..2^63-1")
    return seeds


mlflow.models.set_model(QVAEGenerator())
