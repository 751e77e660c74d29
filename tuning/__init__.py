"""Optuna studies over the QVAE's latent split, dist_beta and kl_beta, tracked in MLflow."""
