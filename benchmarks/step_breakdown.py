"""Where an epoch's time goes: the QVAE against the Gaussian VAE under one preset, part by part, side by side.

At equal epochs the likelihood preset's QVAE beats the Gaussian VAE; at equal wall time its lead shrinks,
because its epoch costs more (docs/results.md). This says which part costs it. For each prior it times
--steps eager training steps on full batches of MNIST, after --warmup steps that are not counted (a step's
cost changes as the model trains: the gradients entering the decoder's backward pass are scaled by the
importance weights, and where those underflow, 0.2-0.6 % of them are subnormal floats, which make x86 CPUs'
matrix products slow, most of all early on; --flush-denormal has the CPU treat them as 0), and, inside them,
the forward parts each model has:
- both: the encoder, the latent sample (the relaxation's rsample with its implicit gradient, or the
  Gaussian noise), the decoder;
- the QVAE only: the negative phase (the sampler's sweeps), the relaxed log prior (mean field) and
  log q(zeta|x);
- the rest of the step (the loss, the backward pass, Adam) is the step less those parts.
Then the once-per-epoch work: the validation pass, and the QVAE's AIS log Z and KL to uniform.

Steps are eager (no CUDA graph), so each part can be timed; on CUDA every part is synchronised, which adds
a little to each. Nothing here reads the test split.

    python benchmarks/step_breakdown.py [--preset likelihood] [--base field:value,...] [--steps 196] \\
        [--warmup 196] [--device cpu] [--flush-denormal]
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from ablate import parse_assignments
from common import hardware

import qvae.models.qvae as qvae_module
from qvae.config import PRESETS, Config, ConfigError
from qvae.data.mnist import load_mnist, model_inputs, train_mean
from qvae.models.build import build_model
from qvae.timing import PhaseTimer
from qvae.train import evaluate, num_batches, resolve_device
from qvae.train_step import TrainStep

PRIORS = ("boltzmann", "gaussian")
# (label, the object's attribute path) of the parts a step calls, timed where the model has them
PARTS = (("negative phase", "sampler.sample"), ("encoder", "model.encode"),
         ("latent sample", "model.smoothing.rsample"), ("latent sample", "model._noise"),
         ("decoder", "model.decode"), ("relaxed log prior", "module.relaxed_log_prior"),
         ("log q(zeta|x)", "model.smoothing.log_mixture_pdf"))
ORDER = ("negative phase", "encoder", "latent sample", "decoder", "relaxed log prior", "log q(zeta|x)",
         "loss, backward, Adam")
ONCE_PER_EPOCH = ("validation pass", "log Z (AIS)", "KL to uniform")


class PartTimer(PhaseTimer):
    """A PhaseTimer whose wrapped callables are charged to their label only while `on`."""

    on = False

    def wrap(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.on:
                return function(*args, **kwargs)
            with self.phase(label):
                return function(*args, **kwargs)
        return timed


@contextmanager
def timed_parts(timer: PartTimer, roots: dict[str, Any]) -> Iterator[None]:
    """Replace each part the roots have by its timed wrapper (instance attributes; the module's function);
    put the originals back on exit."""
    replaced: list[tuple[Any, str, Any, bool]] = []
    for label, path in PARTS:
        *parents, name = path.split(".")
        owner = roots.get(parents[0])
        for attribute in parents[1:]:
            owner = getattr(owner, attribute, None)
        if owner is None or not hasattr(owner, name):
            continue
        own = name in vars(owner)  # a module's global, or an instance attribute already
        replaced.append((owner, name, getattr(owner, name), own))
        setattr(owner, name, timer.wrap(label, getattr(owner, name)))
    try:
        yield
    finally:
        for owner, name, original, own in reversed(replaced):
            if own:
                setattr(owner, name, original)
            else:
                delattr(owner, name)  # the instance attribute shadowed the class's method


def measure(config: Config, data: Any, steps: int, warmup: int) -> dict[str, float]:
    """Milliseconds per step of each part and of the whole step; seconds of the once-per-epoch work."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = build_model(config, data_mean=train_mean(data.train_x)).to(device)
    sampler = model.latent_prior.make_sampler()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=device.type in ("cpu", "cuda"),
                                 capturable=device.type == "cuda")
    step = TrainStep(model, optimizer, sampler, torch.Generator(device).manual_seed(config.seed + 1),
                     dynamic=config.binarize == "dynamic", batch_size=config.batch_size, use_graph=False)
    step.start_epoch()
    x = data.train_x.to(device)
    full_batches = len(x) // config.batch_size  # the training set over and over, in order

    def batch(index: int) -> torch.Tensor:
        at = (index % full_batches) * config.batch_size
        return x[at:at + config.batch_size]

    parts, whole = PartTimer(device), PhaseTimer(device)
    with timed_parts(parts, {"model": model, "sampler": sampler, "module": qvae_module}):
        for index in range(warmup):
            step.step(batch(index))
        parts.on = True
        with whole.phase("step"):
            for index in range(warmup, warmup + steps):
                step.step(batch(index))
    row = {label: 1e3 * seconds / steps for label, seconds in (parts.seconds | whole.seconds).items()}
    row["loss, backward, Adam"] = row["step"] - sum(parts.seconds.values()) * 1e3 / steps

    generator = torch.Generator(device).manual_seed(config.seed + 2)
    val_x = model_inputs(data.val_x.to(device), config.binarize)
    once = PhaseTimer(device)
    with once.phase("validation pass"):
        evaluate(model, sampler, val_x, config.batch_size, generator)
    prior = model.latent_prior
    if prior.needs_log_z:
        with once.phase("log Z (AIS)"):
            log_z = prior.log_z(config.log_z_chains, config.log_z_betas, generator)[0]
        with once.phase("KL to uniform"):
            prior.kl_to_uniform(log_z, generator)
    row.update(once.seconds)
    row["steps per epoch"] = num_batches(len(data.train_x), config.batch_size)
    return row


def epoch_seconds(row: dict[str, float]) -> float:
    """One epoch as the training loop runs it: every step, then the once-per-epoch work."""
    once = sum(row.get(name, 0.0) for name in ONCE_PER_EPOCH)
    return row["steps per epoch"] * row["step"] / 1e3 + once


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="likelihood", choices=sorted(PRESETS))
    parser.add_argument("--base", default="", help="field:value[,field:value] on top of the preset, for both priors "
                        "(a field only a Boltzmann prior reads leaves the Gaussian VAE as it is)")
    parser.add_argument("--steps", type=int, default=196, help="timed steps per prior (196: one epoch)")
    parser.add_argument("--warmup", type=int, default=196, help="steps before the timed ones")
    parser.add_argument("--flush-denormal", action="store_true", help="subnormal floats as 0 (x86 CPUs)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=os.environ.get("QVAE_DATA_DIR", "data"))
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error(f"--steps must be >= 1 and --warmup >= 0; got {args.steps} and {args.warmup}")

    if args.flush_denormal and not torch.set_flush_denormal(True):
        parser.error("--flush-denormal: this CPU cannot flush subnormal floats (it needs SSE3 on x86)")
    try:
        base = parse_assignments(args.base) if args.base else {}
        configs = {prior: Config.from_preset(args.preset, **{**base, "prior": prior, "device": args.device,
                                                              "data_dir": args.data_dir}) for prior in PRIORS}
    except ConfigError as error:
        parser.error(str(error))
    data = load_mnist(args.data_dir)
    rows = {}
    for prior, config in configs.items():
        rows[prior] = measure(config, data, args.steps, args.warmup)

    device = resolve_device(args.device)
    qvae, gauss = rows["boltzmann"], rows["gaussian"]
    given = f" + {args.base}" if args.base else ""
    k = config.iw_samples or 1
    print(f"# one training step, preset {args.preset}{given} (batch {config.batch_size}, k = {k}), "
          f"mean of {args.steps} eager steps after {args.warmup}"
          f"{', subnormals flushed to 0' if args.flush_denormal else ''} | {device} ({hardware(device)}) "
          f"| torch {torch.__version__}")
    print(f"{'ms per step':24s} {'QVAE':>9s} {'Gaussian':>9s} {'QVAE extra':>11s}")
    for label in (*ORDER, "step"):
        if label in qvae or label in gauss:
            q, g = qvae.get(label, 0.0), gauss.get(label, 0.0)
            print(f"{label:24s} {q:9.2f} {g:9.2f} {q - g:+11.2f}")
    print(f"{'seconds per epoch':24s} {'QVAE':>9s} {'Gaussian':>9s}")
    print(f"{'steps':24s} {qvae['steps per epoch'] * qvae['step'] / 1e3:9.2f} "
          f"{gauss['steps per epoch'] * gauss['step'] / 1e3:9.2f}")
    for label in ONCE_PER_EPOCH:
        print(f"{label:24s} {qvae.get(label, 0.0):9.2f} {gauss.get(label, 0.0):9.2f}")
    q_epoch, g_epoch = epoch_seconds(qvae), epoch_seconds(gauss)
    print(f"{'epoch':24s} {q_epoch:9.2f} {g_epoch:9.2f}   QVAE / Gaussian = {q_epoch / g_epoch:.2f}")


if __name__ == "__main__":
    main()
