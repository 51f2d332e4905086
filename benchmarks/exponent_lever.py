"""The exponent as a local-search weight: what a tunable GCE-like exponent is worth.

Edge weights cannot change an exponent: ``sqrt(w * f) = sqrt(w) * sqrt(f)`` is a scale,
and the normalised search divides scales out. This script measures the lever before any
change to the loss network: the loss ``-(y * f**q)`` (``q = 0.5`` is the search's
``-(y * sqrt(f))``, and GCE is ``(1 - f_y**q) / q``, the same gradient up to scale) on
digits with 40% noisy training labels (``local_search.noisy_digits``), normalised and
trained as the ``quick`` search's fitness runs are (its tuned rate, 300 SGD steps):

1. fitness on the search's seed 0 and the mean over ``--fitness-seeds`` further training
   seeds (1000, 1001, ...), for each ``q`` of ``--exponents``;
2. where the ``quick`` local search (online, 40 meta-steps) takes ``q`` from 0.5 when
   the exponent is its one trainable weight (``q = 0.5 * a``, ``a`` starting at 1), and
   that loss's fitness the same two ways.

Usage: python benchmarks/exponent_lever.py            (about 20 s on two CPU cores)
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_search import noisy_digits  # noqa: E402

from symloss.config import preset  # noqa: E402
from symloss.local_search import meta_train  # noqa: E402
from symloss.metaloss import prepare_outputs, reduce_loss  # noqa: E402
from symloss.scale import baseline_norm, gradient_norm, reference_batch  # noqa: E402
from symloss.step_size import tune_search_lr  # noqa: E402
from symloss.task import Task  # noqa: E402
from symloss.training import LossFn, sgd_settings, train  # noqa: E402

FRESH_SEED_OFFSET = 1000


def power_loss(task: Task, a: torch.Tensor) -> LossFn:
    """``-(y * f**(0.5 * a))`` summed over classes, averaged over the batch."""
    def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        f, y = prepare_outputs(outputs, targets, task.kind)
        return reduce_loss(-(y * torch.exp(0.5 * a.to(f.dtype) * torch.log(f))), task.kind)
    return loss


def normalised(task: Task, a: torch.Tensor, base: float, reference) -> LossFn:
    """:func:`power_loss` at the baseline's gradient scale on the reference batch (the
    factor differentiable in ``a`` where ``a`` requires a gradient)."""
    raw = power_loss(task, a)

    def factor() -> torch.Tensor:
        return base / gradient_norm(raw, reference, create_graph=a.requires_grad)

    if a.requires_grad:
        return lambda outputs, targets: raw(outputs, targets) * factor()
    constant = factor().detach()
    return lambda outputs, targets: raw(outputs, targets) * constant


def fitness(task: Task, settings, a: float, seed: int, base: float, reference) -> float:
    """Validation error after the search's fitness training from ``seed``."""
    loss = normalised(task, torch.tensor(a, dtype=torch.float64), base, reference)
    run = train(task, loss, settings.fitness_steps, sgd_settings(settings), seed)
    return math.inf if run.diverged else task.metric(run.model, task.val)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exponents", type=float, nargs="+",
                        default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0])
    parser.add_argument("--fitness-seeds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="the search's seed")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    task = noisy_digits()
    settings = preset("quick")
    settings = settings.replace(lr=tune_search_lr(task, settings, args.seed).lr)
    reference = reference_batch(task, args.seed)
    base = baseline_norm(task, reference)
    fresh = range(args.seed + FRESH_SEED_OFFSET,
                  args.seed + FRESH_SEED_OFFSET + args.fitness_seeds)

    def row(a: float) -> tuple[float, float]:
        return (fitness(task, settings, a, args.seed, base, reference),
                statistics.fmean(fitness(task, settings, a, s, base, reference) for s in fresh))

    print(f"noisy digits / MLP, quick fitness runs at lr {settings.lr:g}; validation error")
    print(f"| q | seed {args.seed} | mean of {args.fitness_seeds} further seeds |")
    print("|---:|---:|---:|")
    for q in args.exponents:
        own, mean = row(2 * q)
        print(f"| {q:g} | {own:.4f} | {mean:.4f} |")

    def candidate(leaves: dict[str, torch.Tensor]) -> LossFn:
        return normalised(task, leaves["weights"][0], base, reference)

    leaves = {"weights": torch.ones(1, dtype=torch.float64, requires_grad=True)}
    # the meta-seed of the search's local search (symloss.scoring._refine)
    meta_train(task, settings, args.seed + 1, leaves, candidate)
    a = float(leaves["weights"].detach()[0])
    own, mean = row(a)
    print(f"online local search (quick) with the exponent as its weight: q 0.5 -> {a / 2:.3f}; "
          f"seed {args.seed} {own:.4f}, mean of {args.fitness_seeds} further seeds {mean:.4f}")


if __name__ == "__main__":
    main()
