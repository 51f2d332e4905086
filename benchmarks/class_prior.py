"""The class-prior terminal p: what it changes for existing searches, and what it buys.

1. Random trees. The deap engine offers ``p`` only with ``class_prior=True``; this
   prints how many of the random trees a seed draws stay the same when it is on (off,
   the terminal set is the one searches always had, so every record stays the same).
2. Re-weighting. On imbalanced classification (three classes at 80 / 15 / 5 %, and a
   binary task at 90 / 10 % with a one-column model), a linear model trained with
   cross-entropy and with the class-prior losses of :mod:`symloss.library`, each at its
   best SGD rate on validation; the table is the test balanced error rate (mean per-class
   error), mean over seeds.

Run: ``PYTHONPATH=$PWD python benchmarks/class_prior.py`` (a few minutes on one core).
"""

from __future__ import annotations

import random
import statistics

import numpy as np
import torch
from deap import gp
from torch import nn

from symloss.engines.deap import primitive_set, to_expression
from symloss.library import BINARY_BASELINE, BINARY_PRIOR_LOSSES, PRIOR_LOSSES, baseline
from symloss.network import LearnedLoss
from symloss.prior import task_prior
from symloss.task import Task, make_task
from symloss.training import SGDSettings, train

SEEDS = (1, 2, 3)
RATES = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
STEPS = 1000


def random_trees(class_prior: bool, seed: int, n: int = 25) -> list[str]:
    """The ``n`` random initial trees (heights 2 to 4) the engine's generator draws."""
    pset = primitive_set(class_prior)
    state = random.getstate()
    random.seed(seed)
    try:
        return [str(to_expression(gp.genHalfAndHalf(pset, min_=2, max_=4))) for _ in range(n)]
    finally:
        random.setstate(state)


def tree_table() -> None:
    same = with_p = total = 0
    for seed in range(20):
        off, on = random_trees(False, seed), random_trees(True, seed)
        same += sum(a == b for a, b in zip(off, on, strict=True))
        with_p += sum("p" in t for t in on)
        total += len(on)
    print(f"random trees, 20 seeds x 25: identical with p on and off {same}/{total}; "
          f"holding p when on {with_p}/{total}")


def balanced_error(task: Task, model: nn.Module, split: str) -> float:
    data = getattr(task, split)
    outputs = task.outputs(model, data.x)
    predicted = (outputs.reshape(-1) > 0).long() if outputs.shape[1] == 1 else outputs.argmax(1)
    labels = data.y.reshape(-1)
    errors = [float((predicted[labels == c] != c).double().mean())
              for c in labels.unique().tolist()]
    return sum(errors) / len(errors)


def best_rate_score(task: Task, loss: LearnedLoss) -> tuple[float, float]:
    """(rate, mean test balanced error) at the rate with the best validation mean."""
    results = []
    for lr in RATES:
        val, test = [], []
        for seed in SEEDS:
            model = train(task, loss, STEPS, SGDSettings(lr=lr), seed).model
            val.append(balanced_error(task, model, "val"))
            test.append(balanced_error(task, model, "test"))
        results.append((statistics.mean(val), lr, statistics.mean(test)))
    _, lr, test = min(results)
    return lr, test


def imbalanced(frequencies: list[float], n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.choice(len(frequencies), size=n, p=frequencies)
    centres = np.array([[0.0, 0.0], [1.2, 0.0], [0.0, 1.2]])[: len(frequencies)]
    return (centres[labels] + rng.normal(size=(n, 2))).astype(np.float32), labels


def loss_table() -> None:
    print(f"\n{'task':<28} {'loss':<46} {'rate':>5} {'test balanced error':>20}")
    cases = [
        ("3 classes 80/15/5 %", imbalanced([0.8, 0.15, 0.05]), "linear",
         {"cross-entropy": str(baseline("classification")), **PRIOR_LOSSES}),
        ("binary 90/10 %, one column", imbalanced([0.9, 0.1]), lambda: nn.Linear(2, 1),
         {"binary cross-entropy": BINARY_BASELINE, **BINARY_PRIOR_LOSSES}),
    ]
    for name, (x, y), model, losses in cases:
        task = make_task((x, y), model, task="classification", seed=0)
        prior = task_prior(task)
        for label, text in losses.items():
            lr, error = best_rate_score(task, LearnedLoss(text, class_prior=prior))
            print(f"{name:<28} {label:<46} {lr:>5} {error:>20.4f}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    tree_table()
    loss_table()
