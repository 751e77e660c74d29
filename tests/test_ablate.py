"""benchmarks/ablate.py's bookkeeping: typed changes, which earlier row a baseline reuses, a report kept by row."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import ablate  # noqa: E402

from qvae.config import Config, ConfigError, ScoreSettings  # noqa: E402


def test_changes_are_typed_by_the_config_and_checked():
    assert ablate.parse_changes("cos=lr_schedule:cosine;power=smoothing:power,dist_beta:40") == {
        "cos": {"lr_schedule": "cosine"}, "power": {"smoothing": "power", "dist_beta": 40.0}}
    with pytest.raises(ConfigError, match="unknown config field 'lr_shedule'"):
        ablate.parse_changes("cos=lr_shedule:cosine")


def test_a_value_is_read_as_its_flag_reads_it_and_a_bad_one_names_the_field():
    assert ablate.parse_changes("eager=cuda_graphs:false") == {"eager": {"cuda_graphs": False}}  # not bool("false")
    with pytest.raises(ConfigError, match=r"mean_field_iterations must be an integer in 1\.\.100; got 'abc'"):
        ablate.parse_changes("few=mean_field_iterations:abc")
    with pytest.raises(ConfigError, match="cuda_graphs must be true or false; got 'maybe'"):
        ablate.parse_changes("eager=cuda_graphs:maybe")


def report_of(base: Config, settings: ScoreSettings) -> dict:
    """An earlier ablation: baseline, a kept change (lr), a dropped one (dist_beta 20), then one on top of lr
    (values none of which the likelihood preset already has)."""
    row = lambda name, values, kept, nll: {"change": name, "values": values, "kept": kept, "val_nll": nll}  # noqa: E731
    return json.loads(json.dumps({"base": base.to_dict(), "settings": vars(settings), "rows": [
        row("baseline", {}, True, 101.0), row("lr", {"lr": 0.002}, True, 100.0),
        row("sharp", {"dist_beta": 20.0}, False, 140.0), row("sweeps", {"sampler_sweeps": 20}, False, 100.5)]}))


def test_a_baseline_reuses_only_the_row_trained_with_exactly_its_config_and_settings(tmp_path):
    base, settings = Config.from_preset("likelihood", epochs=3), ScoreSettings(nll_samples=10)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(report_of(base, settings)))
    assert ablate.reused_baseline(base, settings, path)["val_nll"] == 101.0
    assert ablate.reused_baseline(base.replace(lr=0.002), settings, path)["val_nll"] == 100.0
    # dist_beta 20 was tried on top of lr 0.006, not of the preset's lr: its row is not this config's
    assert ablate.reused_baseline(base.replace(dist_beta=20.0), settings, path) is None
    assert ablate.reused_baseline(base.replace(lr=0.002, dist_beta=20.0), settings, path)["val_nll"] == 140.0
    # the sweeps row came after the dropped dist_beta: on top of lr only
    assert ablate.reused_baseline(base.replace(lr=0.002, sampler_sweeps=20), settings, path)["val_nll"] == 100.5
    assert ablate.reused_baseline(base, ScoreSettings(nll_samples=20), path) is None  # scored differently


def test_a_field_an_earlier_report_predates_counts_as_its_default(tmp_path):
    base, settings = Config.from_preset("likelihood", epochs=3), ScoreSettings(nll_samples=10)
    report = report_of(base, settings)
    del report["base"]["kl_warmup_epochs"]  # written before the field existed
    path = tmp_path / "results.json"
    path.write_text(json.dumps(report))
    assert ablate.reused_baseline(base, settings, path)["val_nll"] == 101.0
    assert ablate.reused_baseline(base.replace(kl_warmup_epochs=1), settings, path) is None


@pytest.mark.slow
def test_results_are_written_after_every_row_so_a_killed_ablation_keeps_them(mnist_dir, tmp_path):
    flags = ["--epochs", "1", "--train-size", "512", "--validation-size", "200", "--device", "cpu",
             "--data-dir", str(mnist_dir), "--nll-samples", "2", "--nll-images", "20", "--nll-ais-chains", "20",
             "--nll-ais-betas", "20", "--fid-samples", "0", "--no-progress", "--output-dir", str(tmp_path),
             "--changes", "lr 3e-3=lr:0.003;lr 1e-3=lr:0.001"]
    script = Path(ablate.__file__)
    proc = subprocess.Popen([sys.executable, str(script), *flags], cwd=script.parents[1],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results, first = tmp_path / "results.json", None
    deadline = time.monotonic() + 300
    while first is None and proc.poll() is None and time.monotonic() < deadline:
        first = json.loads(results.read_text()) if results.exists() else None
        time.sleep(0.02)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    # on disk while the next rows trained: the baseline alone, marked incomplete
    assert first is not None and [r["change"] for r in first["rows"]] == ["baseline"] and not first["complete"]
    final = json.loads(results.read_text())
    assert [r["change"] for r in final["rows"]] == ["baseline", "lr 3e-3", "lr 1e-3"] and final["complete"]
    assert final["rows"][0] == first["rows"][0]


def test_a_baseline_that_cannot_be_reused_is_refused_naming_what_differs(tmp_path, capsys):
    base, settings = Config.from_preset("likelihood", epochs=3), ScoreSettings(nll_samples=10)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(report_of(base, settings)))
    ablate.check_reusable(base, settings, path)  # its own baseline: accepted
    nearest = r"nearest row, 'baseline', differs in data_dir: 'data' there, 'elsewhere' here$"
    with pytest.raises(ConfigError, match=nearest):
        ablate.check_reusable(base.replace(data_dir="elsewhere"), settings, path)
    with pytest.raises(ConfigError, match=r"other settings: nll_samples: 10 there, 20 here$"):
        ablate.check_reusable(base, ScoreSettings(nll_samples=20), path)
    (tmp_path / "other.json").write_text("{}")
    for foreign in (tmp_path / "other.json", tmp_path / "missing.json"):
        with pytest.raises(ConfigError, match="is not an ablation's results.json"):
            ablate.check_reusable(base, settings, foreign)
    # from the command line: a usage error before any data is read or any training starts
    with pytest.raises(SystemExit) as refused:
        ablate.main(["--epochs", "3", "--nll-samples", "10", "--data-dir", str(tmp_path / "no-mnist"),
                     "--reuse-baseline", str(path), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "no row of" in err and "data_dir: 'data' there" in err, err
    assert not (tmp_path / "out").exists()
