"""Bad config values fail early, naming the field and the accepted range."""

import re

import pytest

from qvae.config import PRESET_FIELDS, Config, ConfigError
from qvae.settings import parse_field


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
    ({"binarize": "yes"}, r"binarize must be one of none, static, dynamic"),
    ({"device": "tpu"}, r"device must be one of auto, cpu, cuda, mps, cuda:N"),
    ({"train_size": 70_000}, r"train_size must be an integer in 0\.\.59999"),
    ({"train_size": 55_000}, r"train_size must be <= 60000 - validation_size = 50000 \(0: all of them\), got 55000"),
    ({"validation_size": 0}, r"validation_size must be an integer in 1\.\.59999, got 0"),
    ({"validation_size": 30_000, "batch_size": 40_000}, r"batch_size must be <= .*40000 > all 30000"),
    ({"train_size": 100, "batch_size": 256}, r"batch_size must be <= the number of training images"),
    ({"sa_final_temperature": 200.0}, r"sa_final_temperature must be <= sa_initial_temperature"),
    ({"log_z_betas": 1}, r"log_z_betas must be 0 \(skip log Z\) or in 2\.\.inf, got 1"),
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


def test_resume_may_change_only_epochs_device_and_cuda_graphs():
    saved = Config(epochs=2, device="cpu").to_dict()
    assert Config(epochs=5, device="cuda:1", cuda_graphs=False).resume_mismatches(saved) == []
    assert Config(epochs=5, dist_beta=5.0, seed=3).resume_mismatches(saved) == ["dist_beta", "seed"]
    logged = {k: str(v) for k, v in saved.items()}  # MLflow params are strings; a float may be written 1e-06
    assert Config(epochs=5).resume_mismatches({**logged, "kl_beta": "0.000001"}) == []
    older = {k: v for k, v in saved.items() if k != "trotter_slices"}  # a record from before a field existed
    assert Config(epochs=5).resume_mismatches(older) == []
    assert Config(epochs=5, trotter_slices=8).resume_mismatches(older) == ["trotter_slices"]


def test_check_resumable_names_the_field_or_the_epochs():
    saved = Config(epochs=2).to_dict()
    Config(epochs=3).check_resumable(saved, 2, "run abc")
    with pytest.raises(ConfigError,
                       match=r"equal run abc's except epochs, device, cuda_graphs; dist_beta: saved 10.0, given 5.0"):
        Config(epochs=3, dist_beta=5.0).check_resumable(saved, 2, "run abc")
    with pytest.raises(ConfigError, match=r"run abc is at epoch 2; epochs must be > 2 to continue it, got 2"):
        Config(epochs=2).check_resumable(saved, 2, "run abc")


def test_each_setting_is_declared_with_a_range_and_help():
    """Validation, flags and help text all come from the declarations (qvae.settings)."""
    import argparse
    import dataclasses

    from qvae.config import JobOptions, ScoreSettings
    from qvae.settings import META_KEY, add_flags, picked_flags

    for cls in (Config, ScoreSettings, JobOptions):
        for f in dataclasses.fields(cls):
            assert META_KEY in f.metadata and f.metadata["help"], (cls.__name__, f.name)
    assert {f.name for f in dataclasses.fields(ScoreSettings)} < {f.name for f in dataclasses.fields(JobOptions)}
    parser = argparse.ArgumentParser()
    add_flags(parser, Config, "config", prefix="cfg_")
    help_text = " ".join(parser.format_help().split())
    assert ("--train-size INT training images: the first of the training file's first 60000 - validation_size "
            "(default: 0; an integer in 0..59999; 0 means all)") in help_text
    args = parser.parse_args(["--lr", "0.01", "--num-visible", "100", "--num-hidden", "156"])
    assert picked_flags(args, "cfg_") == {"lr": 0.01, "num_visible": 100, "num_hidden": 156}
    assert Config(dist_beta=3).dist_beta == 3.0 and isinstance(Config(dist_beta=3).dist_beta, float)


@pytest.mark.parametrize("changes,pattern", [
    ({"fid_samples": 1}, r"fid_samples must be 0 \(skip\) or in 2\.\.500 \(the test images available\), got 1"),
    ({"tsne_points": 5}, r"tsne_points must be an integer in 10\.\.10000, got 5"),
    ({"tsne_final_points": 5}, r"tsne_final_points must be 0 \(none\) or in 10\.\.10000, got 5"),
    ({"fid_batch_size": 0}, r"fid_batch_size must be an integer in 1\.\.inf, got 0"),
    ({"progress": "yes"}, r"progress must be true or false"),
])
def test_job_options_are_checked_against_their_declarations(changes, pattern):
    from qvae.config import JobOptions

    with pytest.raises(ConfigError, match=pattern):
        JobOptions(**{"fid_samples": 0, **changes}).validate(Config(test_size=500))


def test_presets_supply_defaults_and_explicit_values_win(tmp_path):
    from qvae.cli import build_parser, config_from_args
    from qvae.config import PRESETS

    assert Config.from_preset("seed") == Config()  # the seed preset is the declared defaults
    likelihood = Config.from_preset("likelihood")
    assert (likelihood.kl_beta, likelihood.binarize) == (1.0, "dynamic") and PRESETS["likelihood"] == {
        "kl_beta": 1.0, "binarize": "dynamic", "iw_samples": 5, "lr": 6e-3, "lr_schedule": "cosine",
        "sampler_sweeps": 10, "smoothing": "power", "dist_beta": 30.0}
    assert Config.from_preset("likelihood", kl_beta=0.5).kl_beta == 0.5
    with pytest.raises(ConfigError, match="preset must be one of seed, likelihood, got 'best'"):
        Config.from_preset("best")
    parser = build_parser()
    as_mlflow_run = ["run", "--preset", "likelihood", "--kl-beta", "", "--binarize", "", "--epochs", "3"]
    config = config_from_args(parser.parse_args(as_mlflow_run))  # "" = not given: the preset's values
    assert (config.kl_beta, config.binarize, config.epochs) == (1.0, "dynamic", 3)
    config = config_from_args(parser.parse_args(["run", "--preset", "likelihood", "--kl-beta", "0.25"]))
    assert (config.kl_beta, config.binarize) == (0.25, "dynamic")
    file = tmp_path / "c.json"
    file.write_text('{"binarize": "static", "kl_beta": 0.1}')
    config = config_from_args(parser.parse_args(["run", "--preset", "likelihood", "--config", str(file),
                                                 "--kl-beta", "0.2"]))
    assert (config.kl_beta, config.binarize) == (0.2, "static")  # preset < file < flags
    assert config_from_args(parser.parse_args(["run"])) == Config()


# ---------------------------------------------------------------- gamma: one value, or one per latent unit
SMALL = dict(latent_dim=4, num_visible=2, num_hidden=2, sampler="pimc")


def test_per_unit_gamma_is_read_from_a_list_text_or_a_file(tmp_path):
    import numpy as np

    values = (0.5, 0.0, 1.25, 2.0)
    (tmp_path / "g.txt").write_text("0.5 0\n1.25, 2\n")
    (tmp_path / "g.json").write_text("[0.5, 0.0, 1.25, 2.0]")
    np.save(tmp_path / "g.npy", np.array(values))
    for given in (list(values), values, np.array(values), "0.5,0,1.25,2", "[0.5, 0.0, 1.25, 2.0]",
                  f"@{tmp_path / 'g.txt'}", f"@{tmp_path / 'g.json'}", f"@{tmp_path / 'g.npy'}"):
        assert Config(**SMALL, gamma=given).gamma == values, given
    assert Config(sampler="pimc", gamma=1).gamma == 1.0 and isinstance(Config(sampler="pimc", gamma=1).gamma, float)
    assert Config(sampler="pimc", gamma="0.5").gamma == 0.5  # one number: the same Γ for every unit
    c = Config(**SMALL, gamma=values)
    c.save(tmp_path / "c.json")
    assert Config.load(tmp_path / "c.json") == c  # a JSON list comes back as the same tuple
    assert Config(latent_dim=4, num_visible=2, num_hidden=2, gamma=(0.0,) * 4).gamma == (0.0,) * 4  # RBM: any sampler


@pytest.mark.parametrize("changes,pattern", [
    ({"gamma": (0.5, -1.0, 0.0, 0.0)}, r"gamma must be a finite number >= 0.0, or a list of them \(comma- or "
                                       r"space-separated, or @FILE\); a list: one value per latent unit, visible units "
                                       r"first, got -1.0 at index 1 \(of 4\)"),
    ({"gamma": (0.5, float("inf"), 0.0, 0.0)}, r"gamma must be .*, got inf at index 1 \(of 4\)"),
    ({"gamma": (0.5, 1.0, 0.0)}, r"gamma must be one value or one per latent unit \(latent_dim = 4, visible units "
                                 r"first\), got 3 values"),
    ({"gamma": "0.5,abc"}, r"gamma must be a finite number >= 0.0, or a list .*; expected numbers separated by "
                           r"commas or spaces; item 1 is 'abc'"),
    ({"gamma": "@/nonexistent/gamma.txt"}, r"gamma must be .*; cannot read /nonexistent/gamma.txt: No such file"),
    ({"gamma": ()}, r"gamma must be a finite number >= 0.0, or a list of them .*, got \(\)"),
    ({"gamma": (0.0, 0.0, 0.0, 0.5), "sampler": "pcd"}, r"gamma > 0 \(a quantum Boltzmann prior\) needs sampler=pimc; "
                                                       r"sampler=pcd .* got gamma=per unit \(4 values in 0\.\.0\.5\)"),
    ({"gamma": (0.0, 0.0, 0.0, 0.5), "prior": "gaussian"}, r"gamma must be 0 with prior=gaussian"),
])
def test_bad_per_unit_gamma_is_refused(changes, pattern):
    with pytest.raises(ConfigError, match=pattern):
        Config(**{**SMALL, **changes})


def test_a_resumed_run_compares_per_unit_gamma_with_its_checkpoint_and_its_params(tmp_path):
    """The checkpoint's values, the run param the job logged (the values, or their digest when too long
    for MLflow), or the -P text `mlflow run` logged (values or @file): equal values pass, others differ."""
    from qvae.gamma import MAX_PARAM_CHARS, as_param

    values = (0.5, 0.0, 1.25, 2.0)
    given = Config(**SMALL, gamma=values)
    saved = given.to_dict()
    logged = {k: str(as_param(v)) for k, v in saved.items()}
    assert logged["gamma"] == "0.5,0.0,1.25,2.0"
    (tmp_path / "g.txt").write_text("0.5 0 1.25 2")
    for gamma in (values, list(values), "0.5,0.0,1.25,2.0", "[0.5, 0, 1.25, 2]", f"@{tmp_path / 'g.txt'}"):
        assert given.resume_mismatches({**saved, "gamma": gamma}) == [], gamma
        assert given.resume_mismatches({**logged, "gamma": gamma if isinstance(gamma, str) else str(gamma)}) == []
    for gamma in ((0.5, 0.0, 1.25, 2.5), "0.5,0.0,1.25", "0.5", 0.5, "@/nonexistent", "not numbers"):
        assert given.resume_mismatches({**saved, "gamma": gamma}) == ["gamma"], gamma
    assert Config(**SMALL, gamma=0.5).resume_mismatches({**saved, "gamma": values}) == ["gamma"]
    many = tuple(i / 7 for i in range(512))  # 512 values written out: beyond MLflow's limit on a param
    wide = Config(sampler="pimc", latent_dim=512, num_visible=256, num_hidden=256, gamma=many)
    digest = as_param(wide.gamma)
    assert len(digest) < 100 < MAX_PARAM_CHARS and digest.startswith("512 per-unit values, sha256 ")
    assert wide.resume_mismatches({**wide.to_dict(), "gamma": digest}) == []
    assert wide.resume_mismatches({**wide.to_dict(), "gamma": as_param(many[:-1] + (1.0,))}) == ["gamma"]
    assert as_param(0.5) == 0.5  # a scalar's param is what it always was


def test_the_gamma_flag_reads_one_value_a_list_or_a_file(tmp_path):
    from qvae.cli import build_parser, config_from_args

    (tmp_path / "g.txt").write_text("1 0 0.5 0.25")
    parser = build_parser()
    flags = ["run", "--latent-dim", "4", "--num-visible", "2", "--num-hidden", "2", "--sampler", "pimc"]
    for text, gamma in (("0.5", 0.5), ("1,0,0.5,0.25", (1.0, 0.0, 0.5, 0.25)),
                        (f"@{tmp_path / 'g.txt'}", (1.0, 0.0, 0.5, 0.25))):
        assert config_from_args(parser.parse_args([*flags, "--gamma", text])).gamma == gamma
    assert config_from_args(parser.parse_args([*flags, "--gamma", ""])).gamma == 0.0  # "": not given


def test_params_mlflow_run_left_to_the_preset_read_as_the_presets_values():
    from qvae.config import params_with_preset

    logged = {"preset": "likelihood", "dist_beta": "''", "lr": "0.01", "kl_beta": "", "num_visible": "128"}
    assert params_with_preset(logged) == {"preset": "likelihood", "dist_beta": "30.0", "lr": "0.01", "kl_beta": "1.0",
                                          "num_visible": "128"}  # a given value (lr) stays as given
    assert params_with_preset({"dist_beta": "''"}) == {"dist_beta": "10.0"}  # no preset param: the seed's
    as_mlflow_logs = {name: "''" for name in PRESET_FIELDS} | {"preset": "likelihood"}
    assert Config.from_preset("likelihood").resume_mismatches(params_with_preset(as_mlflow_logs)) == []
    assert Config().resume_mismatches(params_with_preset(as_mlflow_logs)) != []  # the seed's config differs


def test_a_run_mlflow_run_logged_with_preset_placeholders_can_be_resumed(tracking_store):
    import mlflow

    from qvae.tracking.store import check_resume

    with mlflow.start_run() as run:  # the params as `mlflow run -P preset=likelihood` logs them
        mlflow.log_params({name: "''" for name in PRESET_FIELDS} | {"preset": "likelihood"})
        mlflow.log_params({k: v for k, v in Config.from_preset("likelihood").to_dict().items()
                           if k not in PRESET_FIELDS})
        mlflow.log_text("a checkpoint", "checkpoints/last.pt")
    assert check_resume(run.info.run_id, Config.from_preset("likelihood", epochs=30)) == "checkpoints/last.pt"
    with pytest.raises(ConfigError, match="dist_beta: logged 30.0, given 10.0"):  # the preset's, not ''
        check_resume(run.info.run_id, Config(epochs=30))


def test_a_fields_text_is_read_as_its_flag_reads_it():
    assert parse_field(Config, "cuda_graphs", "false") is False and parse_field(Config, "cuda_graphs", "1") is True
    assert parse_field(Config, "gamma", "0.5") == 0.5 and parse_field(Config, "gamma", "0.5 1") == (0.5, 1.0)
    assert parse_field(Config, "epochs", "7") == 7 and parse_field(Config, "lr", "3e-3") == 0.003
    assert parse_field(Config, "lr_schedule", "cosine") == "cosine"  # ranges and choices: the dataclass's check
    for field, text, accepted in [("epochs", "7.5", "an integer in 1..inf"), ("lr", "fast", "a finite number > 0.0"),
                                  ("cuda_graphs", "", "true or false"), ("gamma", "0.5 x", "a finite number >= 0.0")]:
        with pytest.raises(ConfigError, match=re.escape(f"{field} must be {accepted}")):
            parse_field(Config, field, text)
