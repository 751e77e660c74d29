"""One change at a time from the likelihood preset, kept when it helps: the ablation behind the preset.

Each row trains the QVAE with the configuration kept so far plus one change, scores it on the
validation split (the test split is never read here: what this chooses becomes a preset), and
keeps the change when the validation NLL drops by more than `--margin` nats. The last kept
configuration is the candidate for the `likelihood` preset; `compare.py --budget` then scores it
once on the test split against the Gaussian VAE.

    python benchmarks/ablate.py --epochs 10 --train-size 10000 --validation-size 2000 \
        --nll-samples 200 --nll-images 500 --fid-samples 1000 --output-dir outputs/ablate

`--changes` lists the changes in order as NAME=field:value[,field:value] (default: CHANGES below).
Prints one row per change (validation NLL +- stderr, val ELBO at the chosen epoch, val FID, class
entropy of the samples, seconds per epoch, kept or not) with the machine and settings; writes
DIR/results.json after each row ("complete": false until the last), so a killed ablation keeps the rows it scored.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import as_stored, hardware, write_report

from qvae.config import Config, ConfigError, ScoreSettings
from qvae.data.mnist import load_mnist_for
from qvae.metrics.scores import final_scores
from qvae.settings import add_flags, parse_field, picked_flags
from qvae.train import train

# Tried in this order, each on top of what was kept: DVAE#'s objective and optimiser settings, then the
# negative phase, a KL warm-up and the smoothing's sharpness.
CHANGES: dict[str, dict[str, Any]] = {
    "iw1 (relaxed prior, 1 sample)": {"iw_samples": 1},
    "iw5 (importance-weighted, k=5)": {"iw_samples": 5},
    "lr 3e-3 (DVAE#)": {"lr": 3e-3},
    "RBM weight decay 1e-4 (DVAE#)": {"weight_decay": 1e-4},
    "KL warm-up, 30% of epochs": {"kl_warmup_epochs": -30},  # negative: a percentage of the epochs
    "1000 negative chains (DVAE#)": {"sampler_chains": 1000},
    "dist_beta 20": {"dist_beta": 20.0},
}
SHARED = ("epochs", "train_size", "validation_size", "batch_size", "device", "seed", "data_dir")


def parse_assignments(text: str, flag: str = "--base") -> dict[str, Any]:
    """field:value[,field:value] into {field: value}, each value read as its field's flag reads it; an unknown
    field is a ConfigError naming `flag`, the option the text came from."""
    defaults = Config().to_dict()
    values: dict[str, Any] = {}
    for assignment in text.split(","):
        field, _, value = assignment.partition(":")
        if field not in defaults:
            raise ConfigError(f"{flag}: unknown config field {field!r} in {text!r}")
        values[field] = parse_field(Config, field, value)
    return values


def parse_changes(text: str) -> dict[str, dict[str, Any]]:
    """NAME=field:value[,field:value];... into {NAME: {field: value}} (see parse_assignments)."""
    changes: dict[str, dict[str, Any]] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, _, assignments = item.partition("=")
        changes[name.strip()] = parse_assignments(assignments, "--changes")
    return changes


def resolved(change: dict[str, Any], epochs: int) -> dict[str, Any]:
    """A change with its percentages of the epochs (negative kl_warmup_epochs) made concrete."""
    out = dict(change)
    if out.get("kl_warmup_epochs", 0) < 0:
        out["kl_warmup_epochs"] = max(1, round(-out["kl_warmup_epochs"] * epochs / 100))
    return out


def score(config: Config, settings: ScoreSettings, progress: bool) -> dict[str, Any]:
    """Train `config`, choose its epoch on validation and score it there."""
    data = load_mnist_for(config)
    trained = train(config, data, progress=progress)
    scores = final_scores(trained.best_model(), data, settings, split="validation", seed=config.seed,
                          progress=progress)
    chosen = trained.chosen_metrics()
    nll = scores.get("nll")
    return {"val_nll": nll.nll if nll else None, "val_nll_stderr": nll.stderr if nll else None,
            "val_elbo": chosen.get("val_elbo"), "best_epoch": trained.best_epoch,
            "val_fid": scores["metrics"].get("val_fid"), "val_class_entropy": scores["metrics"].get(
                "val_class_entropy"),
            "seconds_per_epoch": statistics.median(h["epoch_seconds"] for h in trained.history),
            "device": str(trained.device)}


def scored_configs(report: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(the full config, the row) of every row of an earlier results.json, each config rebuilt from the report's
    base and the changes kept before that row; a field the report predates counts as its declared default."""
    defaults = as_stored(Config())
    kept: dict[str, Any] = {}
    out = []
    for row in report["rows"]:
        out.append(({**defaults, **report["base"], **kept, **row["values"]}, row))
        if row["kept"]:
            kept.update(row["values"])
    return out


def reused_baseline(base: Config, settings: ScoreSettings, path: Path) -> dict[str, Any] | None:
    """The scores of a row of `path` (an earlier results.json) trained with exactly `base` and scored with exactly
    `settings`, or None. The runs are deterministic on one machine (an ablation's baseline reproduced the earlier
    one's figures to the last digit), so its scores are what training `base` again would give."""
    report = json.loads(path.read_text())
    if report["settings"] != vars(settings):
        return None
    wanted = as_stored(base)
    return next((dict(row) for config, row in scored_configs(report) if config == wanted), None)


def why_not_reused(base: Config, settings: ScoreSettings, path: Path) -> str:
    """Why no row of `path` is `base` scored with `settings`: the settings that differ, else the fields in which
    the nearest row's config differs (so that a mistyped flag is seen before hours of training, not after)."""
    report = json.loads(path.read_text())
    given = vars(settings)
    if report["settings"] != given:
        fields = sorted(k for k in {*report["settings"], *given} if report["settings"].get(k) != given.get(k))
        return "its rows were scored with other settings: " + "; ".join(
            f"{k}: {report['settings'].get(k)!r} there, {given.get(k)!r} here" for k in fields)
    wanted = as_stored(base)

    def differing(config: dict[str, Any]) -> list[str]:
        return sorted(k for k in wanted if config.get(k) != wanted[k])

    config, row = min(scored_configs(report), key=lambda pair: len(differing(pair[0])))
    return f"the nearest row, {row['change']!r}, differs in " + "; ".join(
        f"{k}: {config.get(k)!r} there, {wanted[k]!r} here" for k in differing(config))


def check_reusable(base: Config, settings: ScoreSettings, path: Path) -> None:
    """Refuse (ConfigError) a --reuse-baseline file that cannot be read or has no row for this baseline."""
    try:
        if reused_baseline(base, settings, path) is None:
            raise ConfigError(f"--reuse-baseline: no row of {path} is this baseline: "
                              + why_not_reused(base, settings, path))
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(f"--reuse-baseline: {path} is not an ablation's results.json ({err!r})") from err


def run(base: Config, changes: dict[str, dict[str, Any]], settings: ScoreSettings, margin: float,
        progress: bool, reuse: Path | None = None,
        on_row: Callable[[list[dict[str, Any]]], None] = lambda rows: None) -> list[dict[str, Any]]:
    """The baseline's row, then one row per change (each on top of the changes kept before it); `on_row` gets
    the rows so far after each one."""
    rows = []
    kept: dict[str, Any] = {}
    best = reused_baseline(base, settings, reuse) if reuse is not None else None
    if best is None:
        print("training the baseline ...", file=sys.stderr)
        best = score(base, settings, progress)
        name = "baseline"
    else:
        print(f"the baseline's scores: from {reuse} (the same config and settings)", file=sys.stderr)
        name = f"baseline (scores of {best['change']!r} in {reuse.parent.name})"
        best = {k: v for k, v in best.items() if k not in ("change", "values", "kept")}
    rows.append({"change": name, "values": {}, "kept": True, **best})
    on_row(rows)
    for name, change in changes.items():
        values = resolved(change, base.epochs)
        print(f"training + {name} {values} ...", file=sys.stderr)
        result = score(base.replace(**{**kept, **values}), settings, progress)
        better = result["val_nll"] is not None and result["val_nll"] < best["val_nll"] - margin
        if better:
            kept.update(values)
            best = result
        rows.append({"change": name, "values": values, "kept": better, **result})
        on_row(rows)
    return rows


def table(rows: list[dict[str, Any]], base: Config, settings: ScoreSettings, hw: str) -> str:
    def fmt(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    start = {k: v for k, v in base.to_dict().items() if Config.from_preset("likelihood", **{
        name: getattr(base, name) for name in SHARED}).to_dict()[k] != v}
    lines = [f"# ablation from the likelihood preset{f' + {start}' if start else ''} on {rows[0]['device']} ({hw}) | "
             f"torch {torch.__version__}",
             f"# {base.epochs} epochs on {base.train_size or 50000} training images, chosen and scored on "
             f"{base.validation_size} validation images (the test split is not read) | batch {base.batch_size}, "
             f"seed {base.seed}",
             f"# val NLL: K={settings.nll_samples} on {settings.nll_images or base.validation_size} images, AIS log Z "
             f"{settings.nll_ais_chains} x {settings.nll_ais_betas} | val FID and class entropy: "
             f"{settings.fid_samples} samples | a change is kept when the val NLL drops by > its margin"]
    header = f"{'change':34} {'val NLL':>16} {'val ELBO':>9} {'val FID':>8} {'classes':>8} {'s/epoch':>8}  kept"
    lines.append(header)
    for r in rows:
        nll = "-" if r["val_nll"] is None else f"{r['val_nll']:.2f} +- {r['val_nll_stderr']:.2f}"
        classes = None if r["val_class_entropy"] is None else r["val_class_entropy"] + 0.0  # no "-0.000"
        lines.append(f"{r['change'][:34]:34} {nll:>16} {fmt(r['val_elbo'], '.2f'):>9} {fmt(r['val_fid'], '.2f'):>8} "
                     f"{fmt(classes, '.3f'):>8} {r['seconds_per_epoch']:8.2f}  "
                     f"{'yes' if r['kept'] else 'no'}")
    kept = {k: v for r in rows if r["kept"] for k, v in r["values"].items()}
    lines.append(f"# kept on top of the likelihood preset{f' + {start}' if start else ''}: {kept or 'nothing'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_flags(parser, Config, "the runs (the rest: the likelihood preset)", prefix="cfg_", only=SHARED)
    add_flags(parser, ScoreSettings, "validation scores (0 skips one)", prefix="score_")
    parser.add_argument("--changes", default="", help="NAME=field:value[,field:value];... (default: CHANGES)")
    parser.add_argument("--base", default="", help="field:value[,field:value] on top of the likelihood preset: "
                        "where the changes start (e.g. what an earlier ablation kept)")
    parser.add_argument("--reuse-baseline", type=Path, metavar="RESULTS_JSON",
                        help="an earlier ablation's results.json: when one of its rows trained exactly this "
                        "baseline with exactly these score settings, take its scores instead of training again")
    parser.add_argument("--margin", type=float, default=0.1, help="nats of val NLL a change must gain to be kept")
    parser.add_argument("--output-dir", help="where results.json goes (default: a temporary dir)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        given = picked_flags(args, "cfg_")
        if "data_dir" not in given and os.environ.get("QVAE_DATA_DIR"):
            given["data_dir"] = os.environ["QVAE_DATA_DIR"]
        base = Config.from_preset("likelihood", **given)
        if args.base:
            base = base.replace(**parse_assignments(args.base))
        settings = ScoreSettings(**picked_flags(args, "score_"))
        settings.validate_scores(base.validation_size, "validation")
        if not settings.nll_samples:
            raise ConfigError("nll_samples must be >= 1 here: the validation NLL decides what is kept")
        changes = parse_changes(args.changes) if args.changes else CHANGES
        for change in changes.values():
            base.replace(**resolved(change, base.epochs))  # every change valid before any training
        if args.reuse_baseline is not None:
            check_reusable(base, settings, args.reuse_baseline)
    except ConfigError as err:
        parser.error(str(err))
    started = time.perf_counter()
    out = Path(args.output_dir) if args.output_dir else Path(tempfile.mkdtemp(prefix="qvae-ablate-"))
    out.mkdir(parents=True, exist_ok=True)

    def write(rows: list[dict[str, Any]]) -> dict[str, Any]:
        """DIR/results.json with the rows so far."""
        report = {"base": base.to_dict(), "settings": vars(settings), "rows": rows,
                  "hardware": hardware(torch.device(rows[0]["device"])), "seconds": time.perf_counter() - started,
                  "complete": len(rows) == len(changes) + 1}
        write_report(out, report)
        return report

    rows = run(base, changes, settings, args.margin, progress=not args.no_progress, reuse=args.reuse_baseline,
               on_row=write)
    report = write(rows)
    hw = report["hardware"]
    print(table(rows, base, settings, hw))
    print(f"wrote {out / 'results.json'} ({report['seconds']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
