"""Discover a loss function for your own regression arrays and your own model.

The data: y = a linear function of 5 features plus heavy-tailed (Student-t) noise, so a
few targets are wild outliers. Mean squared error chases those outliers; a robust loss
(absolute error, Cauchy, ...) usually fits the bulk of the data better. symloss searches
for such a loss by briefly training your model with each candidate.

Run it::

    python examples/regression_arrays.py --budget tiny    # seconds: checks that it works
    python examples/regression_arrays.py --budget quick   # minutes on a CPU
    python examples/regression_arrays.py --budget paper   # the EvoMAL paper's: hours

The budget is a symloss preset (:data:`symloss.config.PRESETS`), meta-test included.

Outputs (under --output-dir): the run directory (resumable: run the same command again
after an interruption) and ``learned_loss.json``, which
``examples/reuse_saved_loss.py`` can load into a plain PyTorch training loop.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from torch import nn

import symloss
from symloss.config import PRESETS


def make_data(n: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features X [n, 5] and targets y [n] with Student-t (df=1.5) noise: outliers."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    coef = np.array([1.5, -2.0, 0.5, 0.0, 1.0], dtype=np.float32)
    noise = 0.5 * rng.standard_t(df=1.5, size=n)
    y = (x @ coef + noise).astype(np.float32)
    return x, y


def make_model() -> nn.Module:
    """Your model. A zero-argument factory: symloss builds a fresh one for every run."""
    return nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Linear(32, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--output-dir", type=Path, default=Path("symloss_examples"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = args.output_dir / f"regression_arrays_{args.budget}"

    # 1. Your data as plain arrays. Float targets -> a regression task. symloss splits
    #    off validation (to score candidates) and test (for meta-testing) itself.
    x, y = make_data(seed=args.seed)

    # 2. Search. Every candidate loss trains make_model() briefly; the best validation
    #    MSE wins. The run directory records everything (and resumes an interrupted run).
    search = symloss.SymbolicLossSearch(
        preset=args.budget, random_state=args.seed, run_dir=out / "run",
        verbose=args.budget != "tiny",
    )
    search.fit((x, y), make_model)
    print(search)  # the parameters and the equations table (best loss per size)

    # 3. The result: readable (LaTeX, with the learned edge weights folded in) ...
    print(f"\nlearned loss: {search.best_loss_.expression}")
    print(f"LaTeX: {search.latex()}")
    # ... and a small JSON file you can keep and load anywhere with symloss.load.
    path = search.best_loss_.save(out / "learned_loss.json")
    print(f"saved to {path}")

    # 4. Meta-test: train fresh models (seeds other than the search's) with the learned
    #    loss and with plain MSE, and compare the test MSE (the test split is never used
    #    for training or for choosing the loss).
    result = symloss.evaluate(
        search.best_loss_, (x, y), make_model, steps=search.settings_.metatest_steps,
        seeds=search.settings_.metatest_seeds, split_seed=args.seed,
    )
    print()
    print(result)


if __name__ == "__main__":
    main()
