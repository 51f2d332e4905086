"""Learn a loss where its shape matters, then use it in someone else's training loop.

The task: scikit-learn's digits with 40% of the training labels replaced by another
class (validation and test labels clean). Cross-entropy fits the wrong labels; a loss
with another shape can resist them. The search returns its loss *normalised* to
cross-entropy's gradient scale, so it drops into a loop tuned for cross-entropy.

It is meta-tested against cross-entropy, each at its own best learning rate. Then,
with no symloss beyond ``symloss.load``, an ordinary PyTorch loop (64-64-10 MLP,
batch 64, 30 epochs) trains with the learned loss and with ``nn.CrossEntropyLoss`` at
the same optimiser settings: SGD at lr 0.1 and Adam at lr 1e-3, on several seeds.

Run it::

    python examples/noisy_labels.py                  # the quick preset, a few minutes
    python examples/noisy_labels.py --budget tiny    # the tiny preset: a smoke run of seconds
    python examples/noisy_labels.py --jobs 2         # two worker processes, same results

The budget is a symloss preset (its meta-test settings included) and the plain loop's
epochs and seeds.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import symloss
from symloss.datasets import load_dataset

BUDGETS = {
    # preset overrides, plain-loop epochs and seeds
    "tiny": ({"fitness_steps": 30, "selection_steps": 30, "lr": 0.1, "metatest_steps": 30,
              "metatest_seeds": [1]}, 2, 1),
    "quick": ({}, 30, 3),
}
OPTIMISERS = {
    "SGD lr 0.1": lambda params: torch.optim.SGD(params, lr=0.1),
    "Adam lr 1e-3": lambda params: torch.optim.Adam(params, lr=1e-3),
}


def plain_loop(loss_fn: nn.Module, optimiser: str, data, epochs: int, seed: int) -> float:
    """Train a fresh 64-64-10 MLP with ``loss_fn``; its test accuracy."""
    (train_x, train_y), (test_x, test_y) = data
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 10))
    opt = OPTIMISERS[optimiser](model.parameters())
    loader = DataLoader(TensorDataset(train_x, train_y), batch_size=64, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
    with torch.no_grad():
        return (model(test_x).argmax(1) == test_y).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="quick")
    parser.add_argument("--output-dir", type=Path, default=Path("symloss_examples"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes for the search and meta-test (-1: one per "
                             "core); the results do not depend on it")
    args = parser.parse_args()
    overrides, epochs, n_seeds = BUDGETS[args.budget]

    data = load_dataset("digits", label_noise=0.4, seed=args.seed)
    print(f"data: {data.description}")

    # 1. Search (the run directory keeps every record; rerunning resumes it).
    search = symloss.fit(data, "mlp", preset=args.budget, settings=overrides,
                         random_state=args.seed, verbose=False, n_jobs=args.jobs,
                         run_dir=args.output_dir / f"noisy-digits-{args.budget}")
    loss = search.best_loss_
    path = loss.save(args.output_dir / "noisy_digits_loss.json")
    print(f"learned loss: {loss.expression}\nLaTeX: {loss.latex()}")
    print(f"normalised by x{loss.scale:.4g} to cross-entropy's gradient scale; the search "
          f"used SGD lr {loss.learned_with.lr:g}, the selection found lr "
          f"{loss.learned_with.recommended_lr} best for it; saved to {path}")

    # 2. Meta-test: fresh models, seeds other than the search's, each loss at its own best
    #    SGD rate on validation (symloss.evaluate's default grid around lr).
    print()
    print(symloss.evaluate(loss, data, "mlp", steps=search.settings_.metatest_steps,
                           seeds=search.settings_.metatest_seeds, lr=loss.learned_with.lr,
                           n_jobs=args.jobs))

    # 3. Someone else's loop: load the file and train as with any criterion.
    learned = symloss.load(path)
    tensors = tuple((torch.as_tensor(x), torch.as_tensor(y)) for x, y in (data.train, data.test))
    print(f"\nplain PyTorch loop, {epochs} epochs, batch 64, test accuracy "
          f"(mean of {n_seeds} seed{'s' if n_seeds > 1 else ''}, labels clean)")
    print(f"{'optimiser':14s} {'learned':>8s} {'cross-entropy':>14s} {'difference':>11s}")
    for optimiser in OPTIMISERS:
        seeds = range(1, n_seeds + 1)
        ours = statistics.fmean(plain_loop(learned, optimiser, tensors, epochs, s)
                                for s in seeds)
        base = statistics.fmean(plain_loop(nn.CrossEntropyLoss(), optimiser, tensors, epochs, s)
                                for s in seeds)
        print(f"{optimiser:14s} {ours:8.3f} {base:14.3f} {ours - base:+11.3f}")


if __name__ == "__main__":
    main()
