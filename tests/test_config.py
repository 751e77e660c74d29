"""Bad config values fail early, naming the field and the accepted range."""

import pytest

from qvae.config import Config, ConfigError


def test_defaults_are_the_seed():
    c = Config()
    assert (c.input_dim, c.hidden_dim, c.latent_dim, c.num_visible, c.num_hidden) == (784, 512, 256, 128, 128)
    assert (c.dist_beta, c.kl_beta, c.weight_decay, c.batch_size, c.epochs, c.lr) == (10, 1e-6, 0.01, 256, 20, 1e-3)
    assert (c.activation, c.seed, c.device) == ("tanh", 0, "auto")


@pytest.mark.parametrize("changes,pattern", [
    ({"hidden_dim": 0}, r"hidden_dim must be an integer in 1\.\."),
    ({"latent_dim": -3}, r"latent_dim must be an integer in 1\.\."),
    ({"num_visible": 100}, r"num_visible \+ num_hidden must equal latent_dim"),
    ({"dist_beta": 0.0}, r"dist_beta must be a finite number > 0"),
    ({"dist_beta": float("nan")}, r"dist_beta"),
    ({"kl_beta": -1e-3}, r"kl_beta must be a finite number >= 0"),
    ({"epochs": 0}, r"epochs must be an integer in 1\.\."),
    ({"batch_size": 1.5}, r"batch_size must be an integer"),
    ({"lr": 0}, r"lr must be a finite number > 0"),
    ({"sampler": "magic"}, r"sampler must be one of pcd, sa, kaiwu"),
    ({"activation": "sin"}, r"activation must be one of"),
    ({"binarize": "yes"}, r"binarize must be one of none, dynamic, static"),
    ({"device": "tpu"}, r"device must be one of auto, cpu, cuda, mps, cuda:N"),
    ({"train_size": 70_000}, r"train_size must be an integer in 0\.\.60000"),
    ({"train_size": 100, "batch_size": 256}, r"batch_size must be <= the number of training images"),
    ({"sa_final_temperature": 200.0}, r"sa_final_temperature must be <= sa_initial_temperature"),
    ({"log_z_betas": 1}, r"log_z_betas must be an integer in 2\.\."),
])
def test_invalid_values_are_refused(changes, pattern):
    with pytest.raises(ConfigError, match=pattern):
        Config(**changes)


def test_unknown_fields_are_refused_and_round_trip(tmp_path):
    with pytest.raises(ConfigError, match="unknown config field"):
        Config.from_dict({"latent_dims": 3})
    c = Config(num_visible=64, num_hidden=192, device="cuda:1")
    c.save(tmp_path / "c.json")
    assert Config.load(tmp_path / "c.json") == c
