"""Local search methods compared: unrolled 1 step (paper), unrolled 10 steps, implicit.

For each task and each method, the local search refines the edge weights of one starting
expression on ``--seeds`` meta-seeds; each resulting loss then trains fresh models (seeds
the search never saw) and is scored on the clean test split. Printed per row: seconds per
candidate (the local-search stage only), the test metric (mean +- std over meta-seeds)
and its ratio to the baseline loss trained the same way; for the known-answer tasks also
the loss's offset (known answer: 0, see ``known_answer.py``).

Tasks:
- ``quantile``, ``mixture``: linear regression with asymmetric noise on the training
  labels only (``known_answer.py``); trained at the task's fixed SGD rate.
- ``digits``: the built-in 64-40-40-10 MLP on scikit-learn digits with 40% of the training
  labels replaced by random ones (validation and test clean), starting from a mix of
  cross-entropy and squared error. Losses are normalised to cross-entropy's gradient
  scale (in the search, as the default search does, and after it), and every loss, the
  baseline included, is trained at its best rate of a small grid (chosen on validation
  per fresh seed), so no loss wins by being a larger step size in disguise.

Usage: python benchmarks/local_search.py --quick     (a few minutes on two CPU cores)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from known_answer import KnownAnswerTask, mixture_task, quantile_task  # noqa: E402

from symloss.config import Settings, preset  # noqa: E402
from symloss.local_search import local_search  # noqa: E402
from symloss.network import LearnedLoss  # noqa: E402
from symloss.scale import (
    reference_batch,  # noqa: E402
    search_loss,  # noqa: E402
)
from symloss.task import Task, make_task, resolve_data  # noqa: E402
from symloss.training import SGDSettings, train  # noqa: E402

METHODS: dict[str, dict[str, object]] = {
    "none (starting expression)": {"meta_steps": 0},
    "unrolled, 1 step (paper): 250 Adam steps at 1e-3": {
        "unroll_steps": 1, "meta_steps": 250, "meta_lr": 1e-3},
    "unrolled, 10 steps: 100 Adam steps at 1e-2": {
        "unroll_steps": 10, "meta_steps": 100, "meta_lr": 1e-2},
    "implicit: 20 inner steps, Neumann 10 x 0.01; 100 Adam steps at 1e-2": {
        "local_search_method": "implicit", "implicit_inner_steps": 20, "neumann_terms": 10,
        "neumann_alpha": 0.01, "meta_steps": 100, "meta_lr": 1e-2},
    "implicit, cheaper: 10 inner steps, Neumann 5 x 0.01; 100 Adam steps at 1e-2": {
        "local_search_method": "implicit", "implicit_inner_steps": 10, "neumann_terms": 5,
        "neumann_alpha": 0.01, "meta_steps": 100, "meta_lr": 1e-2},
}
DIGITS_EXPRESSION = "-(y * log(f)) + square(f - y)"
DIGITS_LABEL_NOISE = 0.4


@dataclass(frozen=True)
class Case:
    """One task of the benchmark: where to search, what to start from, how to judge."""

    name: str
    task: Task
    expression: str
    lrs: tuple[float, ...]
    normalize: bool = False
    known: KnownAnswerTask | None = None


def noisy_digits(seed: int = 0) -> Task:
    """Digits with :data:`DIGITS_LABEL_NOISE` of the training labels made random."""
    data, kind = resolve_data("digits")
    x, y = data["train"]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_val = len(y) // 5
    val, fit = order[:n_val], order[n_val:]
    y_fit = y[fit].copy()
    flip = rng.random(len(fit)) < DIGITS_LABEL_NOISE
    y_fit[flip] = rng.integers(0, 10, int(flip.sum()))
    return make_task({"train": (x[fit], y_fit), "val": (x[val], y[val]), "test": data["test"]},
                     "mlp", task=kind)


def score_loss(case: Case, loss: LearnedLoss, steps: int, seeds: Sequence[int]) -> float:
    """Mean test metric over fresh ``seeds``, at the rate best on validation (per seed)."""
    values = []
    for seed in seeds:
        best = (float("inf"), float("inf"))
        for lr in case.lrs:
            result = train(case.task, loss, steps, SGDSettings(lr=lr), seed)
            if result.diverged:
                continue
            best = min(best, (case.task.metric(result.model, case.task.val),
                              case.task.metric(result.model, case.task.test)))
        values.append(best[1])
    return statistics.fmean(values)


def run_case(case: Case, settings: Settings, meta_seeds: Sequence[int], steps: int,
             fresh_seeds: Sequence[int]) -> list[dict[str, object]]:
    """One row per method: seconds per candidate, test metric, offset."""
    baseline = score_loss(case, LearnedLoss(case.task.baseline, case.task.kind), steps,
                           fresh_seeds)
    reference = reference_batch(case.task) if case.normalize else None
    settings = settings.replace(normalize=case.normalize)
    rows = []
    for method, overrides in METHODS.items():
        seconds, metrics, offsets = [], [], []
        for seed in meta_seeds:
            started = time.perf_counter()
            result = local_search(case.task, case.expression, settings.replace(**overrides),
                                  seed, reference)
            seconds.append(time.perf_counter() - started)
            loss = search_loss(case.task, settings, case.expression, result.weights, reference)
            metrics.append(score_loss(case, loss, steps, fresh_seeds))
            if case.known is not None:
                offsets.append(case.known.offset(result.weights))
        rows.append({
            "task": case.name, "method": method, "seconds": statistics.fmean(seconds),
            "metric": statistics.fmean(metrics),
            "std": statistics.stdev(metrics) if len(metrics) > 1 else 0.0,
            "ratio": statistics.fmean(metrics) / baseline,
            "offset": statistics.fmean(offsets) if offsets else None,
        })
        print(f"  {case.name}: {method}: {rows[-1]['metric']:.4f} "
              f"({rows[-1]['seconds']:.1f} s per candidate)", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, object]]) -> str:
    """The results as a markdown table."""
    lines = ["| task | local search | seconds per candidate | test metric | vs baseline "
             "| offset (known: 0) |", "|---|---|---|---|---|---|"]
    for row in rows:
        offset = "" if row["offset"] is None else f"{row['offset']:+.3f}"
        lines.append(f"| {row['task']} | {row['method']} | {row['seconds']:.1f} | "
                     f"{row['metric']:.4f} +- {row['std']:.4f} | {row['ratio']:.3f}x | "
                     f"{offset} |")
    return "\n".join(lines)


def cases(names: Sequence[str]) -> list[Case]:
    """The named benchmark tasks."""
    built = []
    for name in names:
        if name in ("quantile", "mixture"):
            known = quantile_task() if name == "quantile" else mixture_task()
            built.append(Case(name, known.task, known.expression, (known.lr,), known=known))
        elif name == "digits":
            built.append(Case("digits (40% noisy labels, MLP)", noisy_digits(),
                              DIGITS_EXPRESSION, (0.03, 0.1, 0.3), normalize=True))
        else:
            raise SystemExit(f"unknown task {name!r}; choose from quantile, mixture, digits")
    return built


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer training steps and fresh seeds (a few minutes)")
    parser.add_argument("--tasks", nargs="+", default=["quantile", "mixture", "digits"])
    parser.add_argument("--seeds", type=int, default=3, help="meta-seeds per method")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    steps, fresh = (500, (101,)) if args.quick else (2000, (101, 102, 103))
    rows = []
    for case in cases(args.tasks):
        settings = preset("quick").replace(meta_batch_size=128, lr=case.lrs[len(case.lrs) // 2])
        known_steps = 1000 if case.known is not None else steps
        rows += run_case(case, settings, range(1, args.seeds + 1), known_steps, fresh)
    print(f"Test metric: MSE (regression) / error rate (digits), mean +- std over "
          f"{args.seeds} meta-seeds, each loss trained on fresh seed(s) {list(fresh)}.")
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
