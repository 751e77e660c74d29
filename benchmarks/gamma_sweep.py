"""Does the transverse field help? The same QVAE trained at several Γ, scored by its true likelihood.

For each Γ (same seed, data, epochs and everything else; the `likelihood` preset's objective:
kl_beta 1, dynamic binarisation; the PIMC sampler at every Γ, which at Γ = 0 is the RBM's block
Gibbs) it trains on the training split, keeps the best-on-validation checkpoint and reports:
- the validation ELBO (Γ = 0) or Q-ELBO (Γ > 0, a bound) of the chosen epoch;
- the test NLL: importance-weighted with log p(z) from the path integral clamped at z
  (qvae/priors/qbm_likelihood.py; exact at Γ = 0), ± its standard error over images;
- the bound test_nll_bound that the Q-ELBO's inequality gives (what the project reported before);
- class_entropy of generated digits (the reference classifier), and FID when --fid-samples > 0;
- the Trotter error at the sweep's P: max |log p_P(z) - log p(z)| over all z of the trained prior
  against dense quantum mechanics (the prior is small enough: n <= 12).
One table and gamma_sweep.png (NLL and Q-ELBO against Γ).

    python benchmarks/gamma_sweep.py [--gammas 0 0.5 1 2 4] [--visible 5 --hidden 5] [--epochs 3] ...
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from common import hardware
from matplotlib.figure import Figure

from qvae.config import Config, ScoreSettings
from qvae.data.mnist import load_mnist
from qvae.metrics.nll import test_nll
from qvae.metrics.scores import class_coverage, fid_samples, fid_scores
from qvae.priors.qbm_exact import MAX_EXACT_QUBITS, exact_qbm_z_distribution, exact_trotter_z_distribution
from qvae.train import elbo_key, train


def trotter_error(model, gamma: float, slices: int) -> float | None:
    """max over z of |log p_P(z) - log p(z)| for the trained prior (None when too large or Γ = 0)."""
    if gamma == 0 or model.prior.num_units > MAX_EXACT_QUBITS:
        return None
    exact = exact_qbm_z_distribution(model.prior, gamma).log()
    return (exact_trotter_z_distribution(model.prior, gamma, slices).log() - exact).abs().max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gammas", nargs="+", type=float, default=[0.0, 0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--visible", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=5)
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=10_000)
    parser.add_argument("--nll-images", type=int, default=300)
    parser.add_argument("--nll-samples", type=int, default=50)
    parser.add_argument("--clamped-chains", type=int, default=4)
    parser.add_argument("--clamped-betas", type=int, default=30)
    parser.add_argument("--fid-samples", type=int, default=0, help="FID on this many samples (slow on a CPU)")
    parser.add_argument("--class-samples", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=os.environ.get("QVAE_DATA_DIR", "data"))
    parser.add_argument("--plot", default="gamma_sweep.png")
    args = parser.parse_args()

    data = load_mnist(args.data_dir, train_size=args.train_size)
    test_x = data.test_x[:args.nll_images]
    rows = []
    for gamma in args.gammas:
        start = time.perf_counter()
        config = Config(num_visible=args.visible, num_hidden=args.hidden, latent_dim=args.visible + args.hidden,
                        gamma=gamma, sampler="pimc", trotter_slices=args.slices, kl_beta=1.0, binarize="dynamic",
                        epochs=args.epochs, train_size=args.train_size, device=args.device, seed=args.seed,
                        data_dir=args.data_dir)
        result = train(config, data, progress=False)
        model = result.best_model().eval()
        chosen = result.chosen_metrics()
        key = elbo_key(chosen, "val_")
        bound = test_nll(model, test_x, samples=args.nll_samples, seed=args.seed)
        true = test_nll(model, test_x, samples=args.nll_samples, seed=args.seed,
                        clamped_chains=args.clamped_chains if gamma > 0 else 0, clamped_betas=args.clamped_betas)
        settings = ScoreSettings(fid_samples=max(args.class_samples, args.fid_samples, 2))
        generated = fid_samples(model, settings)
        classes = class_coverage(generated[:args.class_samples], data)
        fid = (fid_scores(model, data.test_x, ScoreSettings(fid_samples=args.fid_samples), generated=generated[
            :args.fid_samples])["fid"] if args.fid_samples else None)
        rows.append({"gamma": gamma, "elbo_name": key, "val_elbo": chosen[key], "nll": true.nll,
                     "nll_stderr": true.stderr, "bound": bound.nll, "class_entropy": classes["class_entropy"],
                     "fid": fid, "trotter": trotter_error(model, gamma, args.slices),
                     "seconds": time.perf_counter() - start, "method": true.method})
        print(f"gamma {gamma:g}: {rows[-1]}", flush=True)

    hw = hardware(args.device)
    print(f"\n# Γ sweep: {args.visible}+{args.hidden} latent units, P = {args.slices}, {args.epochs} epochs "
          f"on {args.train_size} images, kl_beta 1, dynamic binarisation, seed {args.seed} | test NLL on "
          f"{args.nll_images} images, K = {args.nll_samples}, clamped AIS {args.clamped_chains} x {args.clamped_betas} "
          f"per z | {args.device} ({hw})")
    print(f"{'Γ':>4s} {'val ELBO/Q-ELBO':>15s} {'test NLL (true)':>17s} {'NLL bound':>9s} {'class H':>7s} "
          f"{'FID':>6s} {'Trotter max|Δlog p|':>19s} {'seconds':>7s}")
    for r in rows:
        fid = f"{r['fid']:6.1f}" if r["fid"] is not None else f"{'-':>6s}"
        trotter = f"{r['trotter']:19.4f}" if r["trotter"] is not None else f"{'-':>19s}"
        print(f"{r['gamma']:4g} {r['val_elbo']:15.2f} {r['nll']:9.2f} ± {r['nll_stderr']:5.2f} {r['bound']:9.2f} "
              f"{r['class_entropy']:7.3f} {fid} {trotter} {r['seconds']:7.0f}")
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    gammas = [r["gamma"] for r in rows]
    ax.errorbar(gammas, [r["nll"] for r in rows], yerr=[r["nll_stderr"] for r in rows], marker="o",
                label="test NLL (true, clamped path integral)")
    ax.plot(gammas, [r["bound"] for r in rows], "s--", label="test NLL bound (Q-ELBO inequality)")
    ax.plot(gammas, [-r["val_elbo"] for r in rows], "^:", label="-validation ELBO / Q-ELBO")
    ax.set_xlabel("Γ (transverse field)")
    ax.set_ylabel("nats per image")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(Path(args.plot), dpi=110)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
