"""How well does block Gibbs mix in a trained RBM prior, and does it decide which digits get generated?

For a QVAE checkpoint (DIR/qvae-likelihood/last.pt as compare.py writes it; its best-on-validation
weights) this measures, on the prior alone:
- the mixing of block Gibbs from random starts: the integrated autocorrelation time of the energy E(z)
  over sweeps (after a burn-in) and the effective sample size per 1 000 sweeps per chain;
- the class coverage of generated digits as a function of the burn-in sweeps (`generate_sweeps`):
  class entropy and the commonest class's share, from the reference classifier;
- the same for the persistent chains that trained the prior (the negative phase's own samples, 256 by
  default), i.e. generation by the sampler that trained the prior.

    python benchmarks/prior_mixing.py outputs/compare_budget --sweeps 0 10 50 200 1000 --samples 1000

No test image is read (the reference classifier is trained on the training split).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from common import hardware, load_chosen_model

from qvae.data.mnist import load_mnist_for
from qvae.metrics.scores import class_coverage
from qvae.priors.samplers import PCDSampler, bernoulli, gibbs_sweeps, random_visible
from qvae.train import LAST_CHECKPOINT


def autocorrelation_time(series: torch.Tensor) -> float:
    """Integrated autocorrelation time of (chains, T) series: 1 + 2 sum_k rho_k, rho averaged over chains and
    summed until it first drops below 0 (the initial positive sequence; 1 means independent draws)."""
    x = series - series.mean(1, keepdim=True)
    var = (x * x).mean()
    tau = 1.0
    for lag in range(1, x.shape[1] // 2):
        rho = ((x[:, :-lag] * x[:, lag:]).mean() / var).item()
        if rho <= 0:
            break
        tau += 2 * rho
    return tau


@torch.no_grad()
def energy_trace(model, chains: int, burn_in: int, sweeps: int, generator: torch.Generator) -> torch.Tensor:
    prior = model.prior
    v = random_visible(prior, chains, generator)
    v, _ = gibbs_sweeps(prior, v, burn_in, generator)
    energies = []
    for _ in range(sweeps):
        v, h = gibbs_sweeps(prior, v, 1, generator)
        energies.append(prior.energy(torch.cat([v, h], -1)))
    return torch.stack(energies, 1)


@torch.no_grad()
def images_from_states(model, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.sigmoid(model.decode(model.smoothing.sample_given_z(z, generator)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--model", default="qvae-likelihood")
    parser.add_argument("--sweeps", type=int, nargs="+", default=[0, 10, 50, 200, 1000])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=256, help="chains of the energy autocorrelation")
    parser.add_argument("--trace", type=int, default=2000, help="sweeps recorded after a burn-in of as many")
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args(argv)
    model, config, state = load_chosen_model(args.directory / args.model / LAST_CHECKPOINT, torch.device("cpu"),
                                             args.data_dir)
    model.eval()
    data = load_mnist_for(config)
    generator = torch.Generator().manual_seed(0)
    print(f"# {args.directory / args.model} (epoch {state.get('best_epoch')} weights), "
          f"{config.num_visible}+{config.num_hidden} RBM | {hardware(torch.device('cpu'))}")

    trace = energy_trace(model, args.chains, args.trace, args.trace, generator)
    tau = autocorrelation_time(trace)
    print(f"energy: mean {trace.mean():.2f}, spread between chains {trace.mean(1).std():.2f}, within "
          f"{trace.std(1).mean():.2f} | autocorrelation time {tau:.1f} sweeps: ESS {1000 / tau:.0f} per 1000 "
          f"sweeps per chain")
    print(f"{'generation':32} {'class entropy':>13} {'commonest':>10}")
    for sweeps in args.sweeps:
        z = model.latent_prior.sample(args.samples, sweeps, generator)
        classes = class_coverage(images_from_states(model, z, generator), data)
        counts = torch.tensor(classes["class_counts"], dtype=torch.float64)
        print(f"{f'{sweeps} Gibbs sweeps from random':32} {classes['class_entropy']:13.3f} "
              f"{(counts.max() / counts.sum()).item():10.1%}")
    sampler = PCDSampler(config.sampler_chains, config.sampler_sweeps)
    sampler.load_state_dict(state["sampler"])
    v = sampler.chains.to(model.prior.weight)
    h = bernoulli(model.prior.hidden_logits(v), generator)
    classes = class_coverage(images_from_states(model, torch.cat([v, h], -1), generator), data)
    counts = torch.tensor(classes["class_counts"], dtype=torch.float64)
    print(f"{f'the {len(v)} persistent chains':32} {classes['class_entropy']:13.3f} "
          f"{(counts.max() / counts.sum()).item():10.1%}  (last epoch's chains, not the chosen epoch's)")
    print(f"# uniform over 10 classes: entropy {math.log(10):.3f}, commonest 10%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
