"""QVAE: a VAE with a Boltzmann-machine prior over binary latents."""
