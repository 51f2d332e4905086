"""Use a saved symloss loss in a plain PyTorch training loop.

No search happens here: ``symloss.load`` turns the JSON file into a ``torch.nn.Module``
and ``loss(y_pred, y_true)`` is used exactly like ``nn.MSELoss()`` or
``nn.CrossEntropyLoss()``.

Run it::

    python examples/reuse_saved_loss.py                       # writes a known loss first
    python examples/reuse_saved_loss.py path/to/learned_loss.json --budget quick

A loss file comes from ``search.best_loss_.save(path)``, ``symloss search ... --output``,
or any run directory's ``best_loss.json``. Regression losses train on a synthetic
regression problem with outliers; classification losses on scikit-learn's digits.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import symloss

EPOCHS = {"tiny": 3, "quick": 20, "paper": 100}  # by the budget names of the presets


def write_example_loss(path: Path) -> Path:
    """A known robust regression loss, the Cauchy loss log(1 + (f - y)^2), as JSON.

    Only here to make the script self-contained; normally the file comes from a search.
    """
    return symloss.LearnedLoss("log(1 + square(f - y))", task="regression").save(path)


def regression_data(seed: int = 0):
    """Train / test tensors: a linear target with heavy-tailed noise in the training set."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1200, 5)).astype(np.float32)
    clean = x @ np.array([1.5, -2.0, 0.5, 0.0, 1.0], dtype=np.float32)
    noisy = clean + 0.5 * rng.standard_t(df=1.5, size=len(x)).astype(np.float32)
    x, clean, noisy = map(torch.from_numpy, (x, clean, noisy))
    # targets [N, 1] to match the model's output shape
    return (x[:1000], noisy[:1000, None]), (x[1000:], clean[1000:, None])


def classification_data(seed: int = 0):
    """Train / test tensors from scikit-learn's digits: 64 features, labels 0..9."""
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("loss", nargs="?", type=Path,
                        help="a saved loss JSON (default: write a known loss first)")
    parser.add_argument("--budget", choices=sorted(EPOCHS), default="tiny")
    parser.add_argument("--output-dir", type=Path, default=Path("symloss_examples"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    path = args.loss or write_example_loss(args.output_dir / "cauchy_loss.json")

    # 1. Load the loss: a torch module, nothing else from symloss is needed below.
    loss_fn = symloss.load(path)
    print(f"loaded {path}: {loss_fn.expression} ({loss_fn.task})")
    print(f"LaTeX: {loss_fn.latex()}")

    # 2. Data and model for the loss's task.
    torch.manual_seed(args.seed)
    if loss_fn.task == "regression":
        (train_x, train_y), (test_x, test_y) = regression_data(args.seed)
        model = nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Linear(32, 1))
    else:
        (train_x, train_y), (test_x, test_y) = classification_data(args.seed)
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    loader = DataLoader(TensorDataset(train_x, train_y), batch_size=64, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    # 3. An ordinary PyTorch training loop; only the loss function is learned.
    for epoch in range(1, EPOCHS[args.budget] + 1):
        model.train()
        total, batches = 0.0, 0
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)  # (predictions / logits, targets / labels)
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        model.eval()
        with torch.no_grad():
            out = model(test_x)
            if loss_fn.task == "regression":
                metric = f"test MSE {nn.functional.mse_loss(out, test_y).item():.4f}"
            else:
                metric = f"test accuracy {(out.argmax(1) == test_y).float().mean().item():.3f}"
        print(f"epoch {epoch:3d}  train loss {total / batches:.4f}  {metric}")


if __name__ == "__main__":
    main()
