"""Discover a classification loss from a torch ``Dataset`` with a custom model.

The data: scikit-learn's 8x8 handwritten digits (bundled with scikit-learn, no download),
served by an ordinary map-style ``torch.utils.data.Dataset`` as ``(image, label)`` pairs,
images shaped ``[1, 8, 8]``. The model: a small convolutional network of our own.

Run it::

    python examples/classification_dataset.py --budget tiny    # seconds
    python examples/classification_dataset.py --budget quick   # minutes on a CPU
    python examples/classification_dataset.py --budget paper   # the EvoMAL paper's: hours

The budget is a symloss preset (:data:`symloss.config.PRESETS`).

symloss reads every ``(x, y)`` pair once, infers a classification task from the integer
labels, and applies each candidate loss to softmax outputs and one-hot targets.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import Dataset

import symloss
from symloss.config import PRESETS
from symloss.estimator import equations_table


class DigitsDataset(Dataset):
    """Your own Dataset: any map-style dataset yielding (input, integer label) works."""

    def __init__(self) -> None:
        digits = load_digits()
        self.images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
        self.labels = torch.tensor(digits.target, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]


class SmallConvNet(nn.Module):
    """A custom model: conv -> ReLU -> pool -> linear, 10 logits out."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--output-dir", type=Path, default=Path("symloss_examples"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = args.output_dir / f"classification_dataset_{args.budget}"

    dataset = DigitsDataset()
    print(f"{len(dataset)} images of shape {tuple(dataset[0][0].shape)}, 10 classes")

    # The model can be a class (a zero-argument callable): a fresh network per run.
    search = symloss.SymbolicLossSearch(
        preset=args.budget, random_state=args.seed, run_dir=out / "run",
        verbose=args.budget != "tiny",
    )
    search.fit(dataset, SmallConvNet)

    # The equations table: the best loss of each size, fitness = validation error rate.
    # ">>>" marks the chosen loss. Compare it with cross-entropy, -(y * log(f)).
    print(equations_table(search.equations_))
    print(f"\nchosen: {search.best_loss_.expression}")
    print(f"LaTeX:  {search.latex()}")
    print(f"{search.n_evaluations_} candidates evaluated; records in {search.run_dir_}")
    path = search.best_loss_.save(out / "learned_loss.json")
    print(f"saved to {path}")

    # The loss works like any torch loss: logits [batch, classes], integer labels [batch].
    images, labels = next(iter(torch.utils.data.DataLoader(dataset, batch_size=16)))
    print(f"loss on one batch of an untrained model: "
          f"{search.best_loss_(SmallConvNet()(images), labels).item():.4f}")


if __name__ == "__main__":
    main()
