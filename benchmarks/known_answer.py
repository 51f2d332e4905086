"""Regression tasks whose best loss is known analytically, for judging local searches.

Clean targets are linear in the inputs; only the *training* targets carry asymmetric
noise ``eps``, validation and test targets are clean, and the model is linear. The best
loss is then one whose expected minimiser over the noise is the clean target: its
*offset* ``argmin_c E_eps[loss(y + eps, y + c)]`` is 0 (expectation over the noise
drawn for the training labels). Each task starts a local search
from an expression whose offset is not 0 and whose edge weights can make it 0:

- ``quantile``: ``max(y - f, f - y)`` (absolute error) with ``eps = Exp(1) - q``,
  ``q = -log(1 - tau)``, so ``P(eps < 0) = tau``. The right loss is the pinball loss of
  quantile ``tau``, ``max(a (y - f), b (f - y))`` with ``a / (a + b) = tau``. Absolute
  error estimates the median, offset ``log 2 - q``.
- ``mixture``: ``square(f - y) + abs(f - y)`` with ``eps = s (c - Exp(1))``: mean
  ``s (c - 1) < 0``, median ``s (c - log 2) > 0``. The mix ``a (f - y)^2 + b |f - y|`` has
  offset 0 when ``2 a s (1 - c) = b (1 - 2 exp(-c))``; an equal mix does not.

Used by ``benchmarks/local_search.py`` and ``tests/test_implicit.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from symloss.network import LearnedLoss
from symloss.task import Task, make_task

N_FEATURES = 5
QUANTILE = 0.25
MIXTURE_SHIFT = 0.85
MIXTURE_SCALE = 4.0
_GRID = 161  # points per stage of the two-stage grid search for a loss's minimiser
_TARGETS = 8  # clean targets the offset is averaged over


@dataclass(frozen=True)
class KnownAnswerTask:
    """A task, the expression a local search starts from, and what the answer is.

    Attributes
    ----------
    name : str
    expression : str
        The loss whose edge weights the search tunes.
    task : Task
        Noisy training targets, clean validation and test targets, a linear model.
    noise : torch.Tensor
        The noise added to the training labels, for :meth:`offset`: the known answer
        holds for the sample a search sees, not only in expectation.
    answer : str
        The analytic optimum, in words.
    lr : float
        SGD learning rate for training on the task: small enough that SGD's own noise
        (the training labels are noisy) does not swamp the loss's effect.
    """

    name: str
    expression: str
    task: Task = field(repr=False)
    noise: torch.Tensor = field(repr=False)
    answer: str
    lr: float

    def offset(self, weights: tuple[float, ...] | None = None) -> float:
        """Expected minimiser of the loss over the noise, minus the clean target.

        Averaged over the clean validation targets (the loss need not be a function of
        ``f - y`` alone once its edge weights differ). The known answer is 0.
        """
        loss = LearnedLoss(self.expression, "regression", weights)
        targets = self.task.val.y[:: max(1, len(self.task.val) // _TARGETS)].double()
        offsets = [self._minimiser(loss, float(t)) - float(t) for t in targets]
        return sum(offsets) / len(offsets)

    def _minimiser(self, loss: LearnedLoss, target: float) -> float:
        """``argmin_f E_eps[loss(target + eps, f)]`` on a coarse, then a fine grid."""
        centre, half_width = target, 4 * float(self.noise.std())
        for _ in range(2):
            grid = torch.linspace(centre - half_width, centre + half_width, _GRID,
                                  dtype=torch.float64)
            shape = (_GRID, len(self.noise))
            with torch.no_grad():
                expected = loss.network(grid[:, None].expand(shape),
                                        (target + self.noise)[None, :].expand(shape)).mean(1)
            centre = float(grid[int(expected.argmin())])
            half_width = 4 * half_width / (_GRID - 1)
        return centre

    def implied_quantile(self, weights: tuple[float, ...] | None = None) -> float:
        """The quantile of the noise that the loss estimates: ``P(eps < offset)``."""
        return float((self.noise < self.offset(weights)).double().mean())


def _linear_data(rng: np.random.Generator, n: int, beta: np.ndarray) -> tuple[np.ndarray, ...]:
    x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    return x, (x @ beta + 0.5).astype(np.float32)


def _make(name: str, expression: str, noise_fn, answer: str, lr: float, seed: int,
          n_train: int) -> KnownAnswerTask:
    rng = np.random.default_rng(seed)
    beta = rng.normal(size=N_FEATURES).astype(np.float32)
    x_train, y_train = _linear_data(rng, n_train, beta)
    noise = noise_fn(rng, n_train).astype(np.float32)
    y_train = y_train + noise
    data = {"train": (x_train, y_train), "val": _linear_data(rng, 200, beta),
            "test": _linear_data(rng, 1000, beta)}
    task = make_task(data, "linear", task="regression")
    return KnownAnswerTask(name, expression, task, torch.as_tensor(noise).double(), answer, lr)


def quantile_task(seed: int = 0, n_train: int = 1000) -> KnownAnswerTask:
    """Absolute error to be reshaped into the pinball loss of quantile :data:`QUANTILE`."""
    shift = -math.log(1 - QUANTILE)
    return _make(
        "quantile", "max(y - f, f - y)",
        lambda rng, n: rng.exponential(size=n) - shift,
        f"pinball loss of quantile {QUANTILE}: slope ratio a / (a + b) = {QUANTILE}",
        0.05, seed, n_train,
    )


def mixture_ratio() -> float:
    """The known best ``a / b`` of ``a (f - y)^2 + b |f - y|`` on :func:`mixture_task`."""
    return (1 - 2 * math.exp(-MIXTURE_SHIFT)) / (2 * MIXTURE_SCALE * (1 - MIXTURE_SHIFT))


def mixture_task(seed: int = 0, n_train: int = 1000) -> KnownAnswerTask:
    """An equal mix of squared and absolute error to be re-mixed to zero offset."""
    return _make(
        "mixture", "square(f - y) + abs(f - y)",
        lambda rng, n: MIXTURE_SCALE * (MIXTURE_SHIFT - rng.exponential(size=n)),
        f"a (f - y)^2 + b |f - y| with a / b = {mixture_ratio():.3f}",
        0.01, seed, n_train,
    )
