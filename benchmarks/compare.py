"""The seed preset vs the likelihood preset, QVAE (RBM 128x128 prior) vs a Gaussian-prior VAE, on one budget.

Every model gets the same encoder/decoder widths (784-512-256), data, epochs, batch size,
optimiser and seed; the preset sets kl_beta and binarize, the prior the latent space. The protocol
is the main job's: validation chooses the checkpoint, the test split scores it once. Prints one
side-by-side table: FID, FID on 64 features, KID, class entropy of the samples, importance-weighted
test NLL (+- stderr), test ELBO, latent-probe accuracy, prior_kl_uniform at the chosen epoch and
seconds per epoch, with the device and settings.

    python benchmarks/compare.py --epochs 20 --device cuda --nll-samples 1000 --probe-epochs 100 \
        --output-dir outputs/compare
    python benchmarks/compare.py --evaluate-only outputs/compare --device cpu   # e.g. FID later, elsewhere
    python benchmarks/compare.py --budget 480 --epochs 200 --device cuda --nll-samples 5000   # same wall time

--budget SECONDS gives every model the same wall time (and at most --epochs): each trains until the
end of the epoch that reaches it; it compares the likelihood presets of the two priors unless --models
says otherwise, and the table adds the epochs each one got.

--base field:value[,field:value] changes every model's preset the same way (e.g. --base lr:0.003 for 100-epoch
runs; a field only a Boltzmann prior reads leaves the Gaussian VAE as it is; the flags above win over it).

--models picks some of them (default: all four). --output-dir keeps each model's checkpoints (DIR/<model>/last.pt) and
DIR/results.json (rewritten as each model is scored); --resume continues an interrupted comparison in that DIR with the
same flags: a model already scored there with the same config and settings is kept, one with a checkpoint continues
from it (bit for bit, as if never stopped; a --budget counts the epochs already trained), the rest train from the
start. --evaluate-only DIR recomputes the scores from those checkpoints (so models
trained on a GPU machine without the Inception weights can get their FID on another machine).
The flags are the declared settings (qvae.config): the Config fields both models share, and the
ScoreSettings (with their defaults: the test NLL and the latent probe are off unless asked for, as
above with the seed's protocol). Needs only torch, torchvision, numpy, torchmetrics, tqdm (no MLflow,
no Optuna).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from ablate import parse_assignments
from common import as_stored, hardware, load_chosen_model, write_report

from qvae.config import N_TEST, PRESETS, Config, ConfigError, ScoreSettings
from qvae.data.mnist import load_mnist_for
from qvae.metrics.scores import final_scores, score_details
from qvae.settings import add_flags, picked_flags
from qvae.train import LAST_CHECKPOINT, StopTraining, chosen_metrics, load_resumable, resolve_device, train

MODELS = {"qvae-seed": "QVAE, seed preset", "gaussian-seed": "Gaussian, seed preset",
          "qvae-likelihood": "QVAE, likelihood", "gaussian-likelihood": "Gaussian, likelihood"}
BUDGET_MODELS = ("qvae-likelihood", "gaussian-likelihood")  # the question of --budget: which prior, same budget
SPECS = {name: (name.split("-")[1], "boltzmann" if name.startswith("qvae") else "gaussian") for name in MODELS}
# The Config fields a comparison sets (the same for every model); the preset supplies kl_beta and binarize.
SHARED = ("epochs", "train_size", "validation_size", "test_size", "device", "seed", "data_dir")


def base_config(args: argparse.Namespace) -> Config:
    """The shared config: the flags given, $QVAE_DATA_DIR for data_dir if set, the declared defaults."""
    given = picked_flags(args, "cfg_")
    if "data_dir" not in given and os.environ.get("QVAE_DATA_DIR"):
        given["data_dir"] = os.environ["QVAE_DATA_DIR"]
    return Config(**given)


def chosen_models(args: argparse.Namespace) -> list[str]:
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise ConfigError(f"models must be a comma-separated list of {', '.join(MODELS)}; got {args.models!r}")
    return names


def configs(args: argparse.Namespace) -> dict[str, Config]:
    """Each chosen model's config: its preset, then --base, then the shared flags, then its prior."""
    shared = picked_flags(args, "cfg_") | {"data_dir": base_config(args).data_dir}
    base = parse_assignments(args.base) if args.base else {}
    if "prior" in base:
        raise ConfigError("--base: the prior is each model's own; choose the models with --models")
    return {name: Config.from_preset(SPECS[name][0], **{**base, **shared, "prior": SPECS[name][1]})
            for name in chosen_models(args)}


def settings_from(args: argparse.Namespace) -> ScoreSettings:
    """The score settings given (validated against the test images available)."""
    settings = ScoreSettings(**picked_flags(args, "score_"))
    settings.validate_scores(base_config(args).test_size or N_TEST)
    return settings


class Budget:
    """Stops training at the end of the first epoch that reaches `seconds` of wall time (None: never), counting
    `spent` seconds already trained (a resumed run's earlier epochs)."""

    def __init__(self, seconds: float | None, spent: float = 0.0) -> None:
        self.seconds, self.spent, self.started = seconds, spent, time.perf_counter()

    def elapsed(self) -> float:
        return self.spent + time.perf_counter() - self.started

    def exhausted(self) -> bool:
        return self.seconds is not None and self.elapsed() >= self.seconds

    def on_epoch_end(self, report: Any) -> None:
        if self.exhausted():
            raise StopTraining


def kept_record(previous: dict[str, Any], settings: dict[str, Any], name: str, config: Config) -> dict[str, Any] | None:
    """`name`'s record in DIR's earlier report when it was trained with exactly `config` and scored with exactly
    `settings` (then resuming has nothing left to do for it), else None."""
    record = previous.get("models", {}).get(name)
    if record is None or previous.get("settings") != settings:
        return None
    return record if record["config"] == as_stored(config) else None


def check_resumable(args: argparse.Namespace, out: Path) -> None:
    """--resume: every checkpoint in `out` continues (or, trained to its end, is scored) with the config the flags
    give; else a ConfigError naming the fields, before any training."""
    for name, config in configs(args).items():
        path = out / name / LAST_CHECKPOINT
        if not path.exists():
            continue
        state, used = load_resumable(path)
        if state["epoch"] < config.epochs:
            config.check_resumable(state["config"], state["epoch"], str(used))
            continue
        # trained to its end: only the scores are missing, and they must be the scores of these flags' model
        differ = config.resume_mismatches(state["config"]) + (
            ["epochs"] if int(state["config"]["epochs"]) != config.epochs else [])
        if differ:
            detail = ", ".join(f"{k}: saved {state['config'].get(k)}, given {getattr(config, k)}" for k in differ)
            raise ConfigError(f"--resume: {used} finished training with another config; {detail}")


def train_and_score(args: argparse.Namespace, out: Path, report_settings: dict[str, Any]) -> dict[str, Any]:
    """Train and score each model, writing DIR/results.json after each one; with --resume, what DIR already holds
    is kept or continued (see the module's docstring)."""
    settings = settings_from(args)
    previous = json.loads((out / "results.json").read_text()) if args.resume and (out / "results.json").exists() \
        else {}
    results: dict[str, Any] = {}
    data = None
    for name, config in configs(args).items():
        kept = kept_record(previous, report_settings, name, config) if args.resume else None
        if kept is not None:
            print(f"{MODELS[name]}: trained and scored in {out} already, kept", file=sys.stderr)
            results[name] = kept
            continue
        data = load_mnist_for(config) if data is None else data
        checkpoint = out / name / LAST_CHECKPOINT
        state, used = load_resumable(checkpoint) if args.resume and checkpoint.exists() else (None, None)
        budget = Budget(args.budget, sum(h["epoch_seconds"] for h in state["history"]) if state else 0.0)
        if state is not None and (state["epoch"] >= config.epochs or budget.exhausted()):
            print(f"{MODELS[name]}: trained in {out} already (epoch {state['epoch']}), scoring it", file=sys.stderr)
            model, _, _ = load_chosen_model(used, resolve_device(config.device), config.data_dir)
            device, history, best_epoch = str(next(model.parameters()).device), state["history"], state["best_epoch"]
            train_seconds = budget.spent
        else:
            limit = f" or {args.budget:.0f} s" if args.budget else ""
            start = f", continuing {used} after epoch {state['epoch']}" if state else ""
            print(f"training {MODELS[name]} for {config.epochs} epochs{limit}{start} ...", file=sys.stderr)
            trained = train(config, data, checkpoint_dir=out / name, progress=not args.no_progress, callbacks=[budget],
                            resume_from=used)
            model, device, history, best_epoch = trained.best_model(), trained.device, trained.history, \
                trained.best_epoch
            train_seconds = budget.elapsed()
        started = time.perf_counter()
        scores = final_scores(model, data, settings, seed=config.seed, progress=not args.no_progress)
        results[name] = entry(config, history, best_epoch, scores, device, hardware(torch.device(device)),
                              time.perf_counter() - started)
        results[name].update(train_seconds=train_seconds, epochs_trained=len(history))
        write_report(out, {"settings": report_settings, "models": results})  # a restart keeps the models done
    return results


def entry(config: Config, history: list[dict[str, float]], best_epoch: int | None, scores: dict[str, Any],
          device: str, hw: str, eval_seconds: float) -> dict[str, Any]:
    chosen = chosen_metrics(history, best_epoch)
    record = {"config": config.to_dict(), "train_device": device, "train_hardware": hw,
              "eval_device": device, "eval_hardware": hw, "eval_seconds": eval_seconds,
              "seconds_per_epoch": statistics.median([h["epoch_seconds"] for h in history]) if history else None,
              "best_epoch": best_epoch, "chosen_epoch": chosen, "metrics": scores["metrics"],
              "scored_on": {}}
    computed = {"fid": "fid" in scores["metrics"], "nll": "nll" in scores, "probe": "probe" in scores}
    record["scored_on"] = {k: f"{device} ({hw})" for k, done in computed.items() if done}
    record.update(score_details(scores))
    return record


def evaluate_only(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    """Scores recomputed from DIR/<model>/last.pt; training facts kept from DIR/results.json."""
    settings = settings_from(args)
    previous = json.loads((directory / "results.json").read_text()) if (directory / "results.json").exists() else {}
    results: dict[str, Any] = {}
    here = base_config(args)
    device = resolve_device(here.device)
    for name in chosen_models(args):
        path = directory / name / LAST_CHECKPOINT
        if not path.exists():
            print(f"skipping {name}: no {path}", file=sys.stderr)
            continue
        model, config, state = load_chosen_model(path, device, here.data_dir)  # the best-on-validation weights
        data = load_mnist_for(config)
        started = time.perf_counter()
        scores = final_scores(model, data, settings, seed=here.seed, progress=not args.no_progress)
        record = entry(config, state["history"], state.get("best_epoch"), scores, str(device), hardware(device),
                       time.perf_counter() - started)
        old = previous.get("models", {}).get(name, {})
        for key in ("train_device", "train_hardware", "seconds_per_epoch", "train_seconds", "epochs_trained"):
            if key in old:  # training facts: the training run's, not this rescore's
                record[key] = old[key]
        # scores skipped now (0) keep their earlier values, e.g. the GPU's NLL when only FID is added here
        record["metrics"] = {**old.get("metrics", {}), **record["metrics"]}
        record["scored_on"] = {**old.get("scored_on", {}), **record["scored_on"]}
        for key in ("nll", "probe"):
            if key not in record and key in old:
                record[key] = old[key]
        results[name] = record
    return results


def merged_settings(current: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """The settings behind the scores in the report: earlier ones for the scores skipped now."""
    merged = dict(current)
    groups = {"fid_samples": ("fid_samples", "fid_batch_size"), "probe_epochs": ("probe_epochs",),
              "nll_samples": ("nll_samples", "nll_images", "nll_ais_chains", "nll_ais_betas")}
    for switch, keys in groups.items():
        if not current.get(switch) and previous.get(switch):
            merged.update({k: previous[k] for k in keys if k in previous})
    if previous.get("base"):  # the checkpoints were trained with it
        merged["base"] = previous["base"]
    return merged


def table(report: dict[str, Any]) -> str:
    models = report["models"]
    names = [n for n in MODELS if n in models]

    def cell(name: str, fmt: str, *keys: str) -> str:
        m = models[name]["metrics"]
        return fmt.format(*(m[k] for k in keys)) if all(k in m for k in keys) else "-"

    def chosen(name: str, key: str, fmt: str) -> str:
        epoch = models[name].get("chosen_epoch") or models[name].get("final_epoch", {})
        return fmt.format(epoch[key]) if key in epoch else "-"

    def nll(name: str) -> str:
        n = models[name].get("nll")
        return f"{n['nll']:.2f} +- {n['stderr']:.2f}{' (bound)' if n['bound'] else ''}" if n else "-"

    rows = [
        ("FID (2048 features)", lambda n: cell(n, "{:.2f}", "fid")),
        ("FID (64 features)", lambda n: cell(n, "{:.3f}", "fid_64")),
        ("KID", lambda n: cell(n, "{:.4f} +- {:.4f}", "kid", "kid_std")),
        ("class entropy, nats (max 2.303)", lambda n: cell(n, "{:.3f}", "class_entropy")),
        ("test NLL, nats", nll),
        ("test ELBO, nats", lambda n: cell(n, "{:.2f}", "test_elbo")),
        ("latent accuracy", lambda n: cell(n, "{:.2%}", "latent_accuracy")),
        ("prior_kl_uniform, nats", lambda n: chosen(n, "prior_kl_uniform", "{:.2f}")),
        ("chosen epoch (best val ELBO)", lambda n: str(models[n].get("best_epoch"))),
        ("val ELBO (chosen epoch), nats", lambda n: chosen(n, "val_elbo", "{:.2f}")),
        ("seconds per epoch (median)", lambda n: f"{models[n]['seconds_per_epoch']:.2f}"),
        ("epochs trained / training seconds", lambda n: f"{models[n].get('epochs_trained', '-')} / "
                                                        f"{models[n].get('train_seconds', float('nan')):.0f}"),
    ]
    first = models[names[0]]
    c, s = first["config"], report["settings"]
    widths = "-".join(str(w) for w in [c["input_dim"], *[c["hidden_dim"]] * c.get("hidden_layers", 1), c["latent_dim"]])
    lines = [
        f"# presets x priors | {c['epochs']} epochs on {c['train_size'] or 60000 - c.get('validation_size', 10000)} "
        f"MNIST images (validation {c.get('validation_size', 10000)}, chooses the checkpoint), "
        f"{widths}, batch {c['batch_size']}, lr {c['lr']}, seed {c['seed']}"
        " | presets: " + "; ".join(f"{name}: {', '.join(f'{k} {v}' for k, v in values.items()) or 'the defaults'}"
                                    for name, values in PRESETS.items())
        + (f" | on top of each preset: {s['base']}" if s.get("base") else ""),
        f"# trained on {first['train_device']} ({first['train_hardware']}); scored: "
        + "; ".join(f"{k} on {v}" for k, v in first.get("scored_on", {}).items())
        + f" | torch {torch.__version__} | python {platform.python_version()}",
        f"# FID/KID: {s['fid_samples']} generated vs {s['fid_samples']} test images | NLL: K={s['nll_samples']} on "
        f"{s['nll_images'] or c['test_size'] or 10000} test images, "
        f"AIS log Z {s['nll_ais_chains']} chains x {s['nll_ais_betas']} betas"
        f" | probe: {s['probe_epochs']} epochs | s/epoch includes the validation pass (and the QVAE's AIS log Z)",
    ]
    if s.get("budget_seconds"):
        lines.append(f"# budget: every model trains until the end of the epoch that reaches "
                     f"{s['budget_seconds']:.0f} s of wall time, or {c['epochs']} epochs")
    width = max(len(r[0]) for r in rows)
    lines.append(f"{'':{width}}  " + "  ".join(f"{MODELS[n]:>22}" for n in names))
    for label, fn in rows:
        lines.append(f"{label:{width}}  " + "  ".join(f"{fn(n):>22}" for n in names))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_flags(parser, Config, "both models (the rest: the seed's config)", prefix="cfg_", only=SHARED)
    add_flags(parser, ScoreSettings, "scores (0 skips one)", prefix="score_")
    parser.add_argument("--models", default="", help=f"some of {', '.join(MODELS)} (default: all; with --budget "
                        f"{','.join(BUDGET_MODELS)})")
    parser.add_argument("--budget", type=float, help="the same wall time for every model: each trains until the end "
                        "of the epoch that reaches this many seconds (or --epochs)")
    parser.add_argument("--base", default="", help="field:value[,field:value] on top of every model's preset, e.g. "
                        "lr:0.003 (a field only a Boltzmann prior reads leaves the Gaussian VAE as it is)")
    parser.add_argument("--output-dir", help="keep checkpoints and results.json here (default: a temporary dir)")
    parser.add_argument("--evaluate-only", metavar="DIR", help="score the checkpoints saved in DIR; no training")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted comparison in --output-dir "
                        "(same flags): keep the models scored there, continue the checkpoints, train the rest")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.models = args.models or ",".join(BUDGET_MODELS if args.budget else MODELS)
    try:  # bad settings: one line naming the setting and its range, before any training
        settings = {**vars(settings_from(args)), "seed": base_config(args).seed, "budget_seconds": args.budget,
                    "base": args.base or None}
        if args.evaluate_only and args.base:
            raise ConfigError("--base: --evaluate-only scores checkpoints with the configs they were trained with")
        configs(args)  # every model's config valid, --base included
        if args.budget is not None and not args.budget > 0:
            raise ConfigError(f"budget must be > 0 seconds, got {args.budget}")
        if args.resume and (args.evaluate_only or not args.output_dir):
            raise ConfigError("--resume continues the comparison in --output-dir DIR (and trains: not with "
                              "--evaluate-only)")
        if args.resume:
            check_resumable(args, Path(args.output_dir))
    except ConfigError as err:
        parser.error(str(err))
    if args.evaluate_only:
        out = Path(args.evaluate_only)
        models = evaluate_only(args, out)
        previous = out / "results.json"
        if previous.exists():
            settings = merged_settings(settings, json.loads(previous.read_text()).get("settings", {}))
    else:
        out = Path(args.output_dir) if args.output_dir else Path(tempfile.mkdtemp(prefix="qvae-compare-"))
        models = train_and_score(args, out, settings)
    report = {"settings": settings, "models": models}
    if not models:
        print(f"no checkpoints found under {out}", file=sys.stderr)
        return 1
    write_report(out, report)
    print(table(report))
    print(f"wrote {out / 'results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
