"""Eager vs CUDA-graph training steps and latent probe, side by side on one device.

For each prior (`pcd:0` the classical default, `pimc:1` the QBM with P slices) it trains the default
config for --epochs epochs twice, with cuda_graphs off and on, from the same seed, and prints the
seconds per epoch (median of epochs 2.., so the capture is not counted), the flops_utilisation, and
how far the two runs' per-epoch losses and final weights are apart (0 when the replayed graph
computes exactly what the eager steps compute). Then the latent probe of the seed's protocol
(MLP, batch 64, lr 1e-3) on the trained encoder's features: eager and graph for --probe-eager-epochs
(same steps, so the accuracies compare), and graph for --probe-epochs (the protocol's 100): seconds
and test accuracy. On a CPU both columns are the eager path (graphs are CUDA-only).

    python benchmarks/step_graph.py [--epochs 3] [--runs pcd:0 pimc:1] [--probe-epochs 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from common import hardware

from qvae.config import Config
from qvae.data.mnist import load_mnist, model_inputs
from qvae.metrics.probe import latent_features, train_probe
from qvae.timing import is_wall_clock, synchronize
from qvae.train import train


def epoch_seconds(result) -> float:
    per_epoch = [h["epoch_seconds"] for h in result.history]
    return statistics.median(per_epoch[1:] or per_epoch)


def compare(config: Config, data) -> dict[str, object]:
    runs = {graphs: train(Config(**{**config.to_dict(), "cuda_graphs": graphs}), data, progress=False)
            for graphs in (False, True)}
    eager, graph = runs[False], runs[True]
    numbers = lambda h: {k: v for k, v in h.items() if not is_wall_clock(k)}  # noqa: E731
    loss_gap = max(abs(a[k] - b[k]) for a, b in zip(eager.history, graph.history) for k in numbers(a))
    weight_gap = max((a - b).abs().max().item() for a, b in zip(eager.model.state_dict().values(),
                                                                graph.model.state_dict().values()))
    return {"eager": epoch_seconds(eager), "graph": epoch_seconds(graph),
            "mfu_eager": eager.history[-1].get("flops_utilisation"),
            "mfu_graph": graph.history[-1].get("flops_utilisation"),
            "loss_gap": loss_gap, "weight_gap": weight_gap, "model": graph.model}


def probe_times(model, data, epochs: int, eager_epochs: int) -> list[tuple[str, int, float, float]]:
    """(path, epochs, seconds, test accuracy) of the probe: eager and graph-captured for `eager_epochs`
    (the same steps: comparable accuracy), and graph-captured for the protocol's `epochs`."""
    device = model.train_bias.device
    binarize = model.config.binarize
    train_f = latent_features(model, model_inputs(data.train_x, binarize))
    test_f = latent_features(model, model_inputs(data.test_x, binarize))
    cuda = device.type == "cuda"
    runs = [(False, eager_epochs), (True, eager_epochs), (True, epochs)] if cuda else [(False, epochs)]
    out = []
    for graphs, n in runs:
        synchronize(device)
        start = time.perf_counter()
        result = train_probe(train_f, data.train_y, test_f, data.test_y, epochs=n, cuda_graphs=graphs)
        synchronize(device)
        out.append(("graph" if graphs else "eager", n, time.perf_counter() - start, result.accuracy))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runs", nargs="+", default=["pcd:0", "pimc:1"], help="sampler:gamma pairs")
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--probe-epochs", type=int, default=100)
    parser.add_argument("--probe-eager-epochs", type=int, default=10, help="the eager probe's epochs on CUDA")
    parser.add_argument("--train-size", type=int, default=0)
    parser.add_argument("--data-dir", default=os.environ.get("QVAE_DATA_DIR", "data"))
    args = parser.parse_args()

    data = load_mnist(args.data_dir)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    hw = hardware(device)
    print(f"# training epoch (the default config's steps, validation and log Z), eager vs CUDA graph, "
          f"{args.epochs} epochs | torch {torch.__version__} | {device} ({hw})")
    print(f"{'prior / sampler':22s} {'eager s':>8s} {'graph s':>8s} {'speed-up':>8s} {'mfu eager':>9s} "
          f"{'mfu graph':>9s} {'max |loss diff|':>15s} {'max |weight diff|':>17s}", flush=True)
    model = None
    for run in args.runs:  # each row as soon as it is measured; a failing row says why and the others go on
        sampler, gamma = run.split(":")
        label = f"{sampler} gamma={float(gamma):g}" + (f" P={args.slices}" if sampler == "pimc" else "")
        config = Config(epochs=args.epochs, device=args.device, sampler=sampler, gamma=float(gamma),
                        trotter_slices=args.slices, data_dir=args.data_dir, train_size=args.train_size)
        try:
            r = compare(config, data)
        except RuntimeError as err:
            print(f"{label:22s} failed: {str(err).splitlines()[0]}", flush=True)
            continue
        model = model or r["model"]
        mfu = lambda v: f"{v:9.3f}" if v is not None else f"{'-':>9s}"  # noqa: E731
        print(f"{label:22s} {r['eager']:8.3f} {r['graph']:8.3f} {r['eager'] / r['graph']:8.1f} {mfu(r['mfu_eager'])} "
              f"{mfu(r['mfu_graph'])} {r['loss_gap']:15.3g} {r['weight_gap']:17.3g}", flush=True)
    if args.probe_epochs and model is not None:
        print("# latent probe (MLP 256 hidden, batch 64, lr 1e-3) on the first run's encoder")
        for label, n, seconds, accuracy in probe_times(model, data, args.probe_epochs, args.probe_eager_epochs):
            print(f"  {label:6s} {n:4d} epochs {seconds:8.2f} s ({seconds / n:.3f} s/epoch)   "
                  f"test accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main()
