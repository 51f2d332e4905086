"""Learned robust losses as XGBoost and LightGBM objectives, against the built-in ones.

Two corrupted tasks, each loss at its own best learning rate (chosen on a clean
validation split from ``--lrs``), ``--rounds`` boosting rounds, every booster starting
from a zero margin; mean ± std over ``--seeds`` (each seed redraws the split and the
corruption):

- noisy-label digits: scikit-learn digits, ``--noise`` of the training labels replaced by
  another class (:func:`symloss.datasets.with_label_noise`); test error rate (%) on clean
  labels. Built-in ``multi:softprob`` / ``multiclass`` against a GCE loss written in the
  primitive set, ``2 * -(y * sqrt(f))`` (GCE with q = 1/2 up to a constant).
- outlier-corrupted regression: scikit-learn diabetes (standardised), ``--outliers`` of
  the training targets shifted by 5 to 15 standard deviations; test MSE on clean targets.
  Built-in squared error against the Cauchy loss ``log(1 + square(f - y))``; the
  libraries' own robust objective (pseudo-Huber / Huber, default settings) for context.

The first table checks the export itself: each baseline loss's objective, trained for
``--rounds`` rounds, against the built-in objective (largest difference of the raw
margins, and the test metric, on a held-out 20%), at relative Hessian floors 0 (the
default) and 0.1.

Usage: python benchmarks/boosting.py --seeds 0 1 2 --rounds 100 --floors 0 0.1 1
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from symloss.boosting import DEFAULT_HESSIAN_FLOOR, require
from symloss.datasets import Dataset, load_dataset, with_label_noise
from symloss.library import BASELINES, BINARY_BASELINE
from symloss.network import LearnedLoss

GCE = LearnedLoss("-(y * sqrt(f))", "classification", scale=2.0)
CAUCHY = LearnedLoss("log(1 + square(f - y))", "regression")
BUILTIN = {
    "xgboost": {"regression": "reg:squarederror", "binary": "binary:logistic",
                "multiclass": "multi:softprob", "robust": "reg:pseudohubererror"},
    "lightgbm": {"regression": "regression", "binary": "binary", "multiclass": "multiclass",
                 "robust": "huber"},
}

Split = tuple[np.ndarray, np.ndarray]


def train_margins(library: str, objective: str | LearnedLoss, k: int, train: Split,
                  evaluate: list[np.ndarray], lr: float, rounds: int, seed: int,
                  hessian_floor: float | None = None) -> list[np.ndarray]:
    """Train one booster (``objective`` a built-in name or a loss) from zero margins and
    return its raw margins on each array of ``evaluate``."""
    module = require(library)
    x, y = train
    start = np.zeros((len(y), k)) if k > 1 else np.zeros(len(y))
    custom = not isinstance(objective, str)
    options = {} if hessian_floor is None else {"hessian_floor": hessian_floor}
    if library == "xgboost":
        params = {"eta": lr, "max_depth": 4, "nthread": 1, "seed": seed, "tree_method": "hist",
                  **({"num_class": k} if k > 1 else {})}
        data = module.DMatrix(x, label=y, base_margin=start)
        if custom:
            booster = module.train({**params, "disable_default_eval_metric": 1}, data, rounds,
                                   obj=objective.to_objective(library, **options))
        else:
            booster = module.train({**params, "objective": objective}, data, rounds)
        # zero base margins here too: XGBoost would otherwise add its intercept, which it
        # estimates from the labels for a built-in objective and not for a custom one
        zero = [np.zeros((len(e), k)) if k > 1 else np.zeros(len(e)) for e in evaluate]
        return [booster.predict(module.DMatrix(e, base_margin=z), output_margin=True)
                for e, z in zip(evaluate, zero, strict=True)]
    params = {"learning_rate": lr, "num_leaves": 15, "num_threads": 1, "seed": seed,
              "verbose": -1, "boost_from_average": False, "deterministic": True,
              **({"num_class": k} if k > 1 else {})}
    data = module.Dataset(x, label=y, init_score=start)
    chosen = objective.to_objective(library, **options) if custom else objective
    booster = module.train({**params, "objective": chosen}, data, rounds)
    return [booster.predict(e, raw_score=True) for e in evaluate]


def error_rate(margins: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(margins.argmax(axis=1) != labels) * 100)


def mse(margins: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean((margins - targets) ** 2))


def best_rate_score(library: str, objective: str | LearnedLoss, data: Dataset, k: int,
                    metric: Callable[[np.ndarray, np.ndarray], float], lrs: list[float],
                    rounds: int, seed: int, hessian_floor: float | None) -> tuple[float, float]:
    """(test score, learning rate) at the rate with the best validation score."""
    results = []
    for lr in lrs:
        val, test = train_margins(library, objective, k, data.train,
                                  [data.val[0], data.test[0]], lr, rounds, seed, hessian_floor)
        results.append((metric(val, data.val[1]), metric(test, data.test[1]), lr))
    _, test_score, lr = min(results)
    return test_score, lr


def noisy_digits(seed: int, noise: float) -> Dataset:
    return with_label_noise(load_dataset("digits", seed=seed), noise, seed=seed)


def corrupted_diabetes(seed: int, fraction: float) -> Dataset:
    """Diabetes with a clean validation split and ``fraction`` of the other training
    targets shifted by 5 to 15 (target) standard deviations, either way."""
    data = load_dataset("diabetes", seed=seed)
    x, y = data.train
    rng = np.random.default_rng([seed, 104729])
    order = rng.permutation(len(y))
    val, train = order[: len(y) // 5], order[len(y) // 5:]
    y_train = y[train].astype(np.float64)
    hit = rng.random(len(train)) < fraction
    y_train[hit] += rng.choice([-1.0, 1.0], hit.sum()) * rng.uniform(5, 15, hit.sum())
    return Dataset(name="diabetes", train=(x[train], y_train), val=(x[val], y[val]),
                   test=data.test, task="regression", description="corrupted diabetes")


def reproduction_table(rounds: int) -> list[str]:
    """The baselines' exported objectives against the built-in ones (floors 0 and 0.1)."""
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits

    x, y = load_diabetes(return_X_y=True)
    cases = [("diabetes", "regression", (x, (y - y.mean()) / y.std()), 1,
              LearnedLoss(BASELINES["regression"], "regression", scale=0.5)),
             ("breast cancer", "binary", load_breast_cancer(return_X_y=True), 1,
              LearnedLoss(BINARY_BASELINE, "classification")),
             ("digits", "multiclass", load_digits(return_X_y=True), 10,
              LearnedLoss(BASELINES["classification"], "classification"))]
    lines = [f"exported baseline objective vs built-in, {rounds} rounds, lr 0.3, trained on 80%:"
             " largest |margin difference| and test metric on the other 20%",
             f"{'library':<10}{'data':<15}{'built-in':<18}{'|diff| floor 0':>15}"
             f"{'|diff| 0.1':>12}{'metric':>10}{'built-in':>10}{'floor 0':>10}"
             f"{'floor 0.1':>10}"]
    for library in BUILTIN:
        for name, kind, (x, y), k, loss in cases:
            cut = int(0.8 * len(y))
            builtin = BUILTIN[library][kind]
            score = mse if kind == "regression" else error_rate
            labels = y[cut:]

            def metric(margins, score=score, labels=labels, kind=kind):
                if kind == "binary":
                    return score(np.stack([np.zeros_like(margins), margins], axis=1), labels)
                return score(margins, labels)

            (theirs,) = train_margins(library, builtin, k, (x[:cut], y[:cut]), [x[cut:]], 0.3,
                                      rounds, 0)
            diffs, scores = [], [metric(theirs)]
            for floor in (0.0, 0.1):
                (ours,) = train_margins(library, loss, k, (x[:cut], y[:cut]), [x[cut:]], 0.3,
                                        rounds, 0, floor)
                diffs.append(float(np.abs(ours - theirs).max()))
                scores.append(metric(ours))
            unit = "MSE" if kind == "regression" else "error %"
            lines.append(f"{library:<10}{name:<15}{builtin:<18}{diffs[0]:>15.2e}{diffs[1]:>12.2e}"
                         f"{unit:>10}" + "".join(f"{v:>10.3f}" for v in scores))
    return lines


def robustness_table(seeds: list[int], rounds: int, lrs: list[float], noise: float,
                     outliers: float, floors: list[float]) -> list[str]:
    rows = []
    for library in BUILTIN:
        tasks = [
            (f"digits, {noise:.0%} noisy labels", "test error %", 10, error_rate,
             lambda s: noisy_digits(s, noise),
             [(BUILTIN[library]["multiclass"], BUILTIN[library]["multiclass"], None),
              *((f"GCE 2*-(y*sqrt(f)), floor {h:g}", GCE, h) for h in floors)]),
            (f"diabetes, {outliers:.0%} outliers", "test MSE", 1, mse,
             lambda s: corrupted_diabetes(s, outliers),
             [(BUILTIN[library]["regression"], BUILTIN[library]["regression"], None),
              *((f"Cauchy log(1+(f-y)^2), floor {h:g}", CAUCHY, h) for h in floors),
              (BUILTIN[library]["robust"] + " (built-in)", BUILTIN[library]["robust"], None)]),
        ]
        for task, metric_name, k, metric, load, losses in tasks:
            datasets = {s: load(s) for s in seeds}
            for label, objective, hessian_floor in losses:
                scores, rates = [], []
                for s in seeds:
                    score, lr = best_rate_score(library, objective, datasets[s], k, metric, lrs,
                                                rounds, s, hessian_floor)
                    scores.append(score)
                    rates.append(lr)
                rows.append((library, task, label, metric_name, np.mean(scores),
                             np.std(scores), rates))
    lines = [f"{'library':<10}{'task':<28}{'objective':<36}{'metric':<14}{'mean ± std':>16}"
             "  best lr per seed"]
    for library, task, label, metric_name, mean, std, rates in rows:
        cell = f"{mean:.3f} ± {std:.3f}"
        lines.append(f"{library:<10}{task:<28}{label:<36}{metric_name:<14}{cell:>16}  "
                     + " ".join(f"{r:g}" for r in rates))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3])
    parser.add_argument("--noise", type=float, default=0.4)
    parser.add_argument("--outliers", type=float, default=0.2)
    parser.add_argument("--floors", type=float, nargs="+", default=[0.0, 0.1, 1.0],
                        help="relative Hessian floors to train the learned losses with")
    parser.add_argument("--skip-reproduction", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    if not args.skip_reproduction:
        print("\n".join(reproduction_table(args.rounds)))
        print()
    print(f"seeds {args.seeds}, {args.rounds} rounds, learning rate per loss and seed from "
          f"{args.lrs} on a clean validation split; learned losses at relative Hessian "
          f"floors {args.floors} (default {DEFAULT_HESSIAN_FLOOR:g})")
    print("\n".join(robustness_table(args.seeds, args.rounds, args.lrs, args.noise,
                                     args.outliers, args.floors)))
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
