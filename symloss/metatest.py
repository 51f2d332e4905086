"""Meta-testing: is a learned loss really better than the usual one?

Trains fresh models with the learned loss and with the baseline (the user's, else
cross-entropy / MSE) under the same settings and seeds -- seeds that differ from the
search seed -- and reports the task's metric (the user's, else error rate / MSE) on the
test split for each, per seed, with mean and standard deviation.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from symloss.batched import CHUNK_SIZE, Run, batch_rule, spread, stack_key, train_many
from symloss.executors import mapping, workers_for
from symloss.network import LearnedLoss
from symloss.serialization import finite_or_none, none_as_inf, positive_number
from symloss.step_size import best_rate, ladder_search, mean_or_inf, rate_ladder
from symloss.task import BaselineSpec, MetricSpec, ModelSpec, Task, make_task, resolve_data
from symloss.training import SGDSettings

logger = logging.getLogger("symloss")


@dataclass(frozen=True)
class LossResult:
    """Test metrics of one loss over the meta-test seeds."""

    name: str
    metrics: tuple[float, ...]
    diverged: tuple[bool, ...]
    curves: tuple[tuple[tuple[int, float], ...], ...] = ()
    lr: float | None = None
    """The learning rate used (chosen on validation when a grid was searched)."""

    @property
    def mean(self) -> float:
        """Mean test metric."""
        return statistics.fmean(self.metrics)

    @property
    def std(self) -> float:
        """Sample standard deviation (0 for a single seed, inf if a run diverged)."""
        if not all(math.isfinite(m) for m in self.metrics):
            return math.inf
        return statistics.stdev(self.metrics) if len(self.metrics) > 1 else 0.0


@dataclass(frozen=True)
class MetaTestResult:
    """Learned loss vs baseline on the test split.

    ``print(result)`` shows a table: one row per seed, then mean and std.
    """

    metric: str
    seeds: tuple[int, ...]
    steps: int
    learned: LossResult
    baseline: LossResult | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        """The side-by-side table as text."""
        results = [self.learned] + ([self.baseline] if self.baseline else [])
        width = max(12, *(len(r.name) for r in results))
        lines = [f"test {self.metric} after {self.steps} steps, per seed"]
        lines.append("seed".ljust(8) + "".join(r.name.rjust(width + 2) for r in results))
        for i, seed in enumerate(self.seeds):
            cells = "".join(
                (f"{r.metrics[i]:.4f}" + ("*" if r.diverged[i] else "")).rjust(width + 2)
                for r in results
            )
            lines.append(str(seed).ljust(8) + cells)
        lines.append("mean".ljust(8) + "".join(f"{r.mean:.4f}".rjust(width + 2) for r in results))
        lines.append("std".ljust(8) + "".join(f"{r.std:.4f}".rjust(width + 2) for r in results))
        if self.extras.get("lr_grid"):
            lines.append("lr".ljust(8) + "".join(f"{r.lr:g}".rjust(width + 2) for r in results))
            grid = ", ".join(f"{lr:g}" for lr in self.extras["lr_grid"])
            lines.append(f"(each loss trained at its best learning rate on validation, from {grid}"
                         " and beyond an edge where the best sat there)")
        if any(any(r.diverged) for r in results):
            lines.append("* training diverged (NaN/inf loss) and stopped early")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        def one(r: LossResult) -> dict[str, Any]:
            return {"name": r.name, "metrics": [finite_or_none(m) for m in r.metrics],
                    "diverged": list(r.diverged), "mean": finite_or_none(r.mean),
                    "std": finite_or_none(r.std), "lr": r.lr,
                    "curves": [[[step, finite_or_none(v)] for step, v in c] for c in r.curves]}

        return {
            "metric": self.metric, "seeds": list(self.seeds), "steps": self.steps,
            "learned": one(self.learned),
            "baseline": one(self.baseline) if self.baseline else None,
            "extras": dict(self.extras),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetaTestResult:
        """Inverse of :meth:`to_dict` (``null`` metrics read back as ``inf``)."""
        def one(d: dict[str, Any]) -> LossResult:
            curves = tuple(tuple((int(step), none_as_inf(v)) for step, v in c)
                           for c in d.get("curves", ()))
            return LossResult(d["name"], tuple(none_as_inf(m) for m in d["metrics"]),
                              tuple(bool(x) for x in d["diverged"]), curves, d.get("lr"))

        baseline = data.get("baseline")
        return cls(data["metric"], tuple(int(s) for s in data["seeds"]), int(data["steps"]),
                   one(data["learned"]), one(baseline) if baseline else None,
                   dict(data.get("extras") or {}))


@dataclass(frozen=True)
class _Run:
    """What a meta-test training run leaves: whether it diverged, its validation and test
    metrics (inf when it diverged) and its learning curve on test."""

    diverged: bool
    val: float
    test: float
    curve: tuple[tuple[int, float], ...]


def _train_runs(
    payload: tuple[Task, tuple[Any, ...], SGDSettings, int, int],
    items: Sequence[tuple[int, float, int]],
) -> list[_Run]:
    """Train with loss ``item[0]`` of the payload at rate ``item[1]`` from seed ``item[2]``,
    for every item, as one stacked computation where the model allows
    (:func:`symloss.batched.train_many`). Module-level so that worker processes can run
    it."""
    task, losses, sgd, steps, curve_points = payload
    runs = [Run(losses[index], seed, dataclasses.replace(sgd, lr=lr))
            for index, lr, seed in items]
    results = []
    for run in train_many(task, runs, steps, curve_split=task.test, curve_points=curve_points):
        if run.diverged:
            results.append(_Run(True, math.inf, math.inf, tuple(run.curve)))
        else:
            results.append(_Run(False, task.metric(run.model, task.val),
                                task.metric(run.model, task.test), tuple(run.curve)))
    return results


def _run(
    run: Callable[[Sequence[tuple[int, float, int]]], list[_Run]], names: Sequence[str],
    seeds: Sequence[int], sgd: SGDSettings, lr_grid: Sequence[float],
) -> list[LossResult]:
    """Train every loss of the payload of ``run`` (a :func:`_train_runs` item's result per
    item; ``names[i]`` names loss ``i``) on every seed; with a grid, each at the learning
    rate best for it on validation (the grid grows past an edge while the best rate sits
    there, see :func:`symloss.step_size.ladder_search`). The runs of each round, every
    loss's, go to ``run`` together, so that they spread over its workers."""
    runs_at: dict[tuple[int, float], list[_Run]] = {}

    def measure(pairs: list[tuple[int, float]]) -> list[float]:
        results = iter(run([(index, lr, seed) for index, lr in pairs for seed in seeds]))
        means = []
        for pair in pairs:
            runs_at[pair] = [next(results) for _ in seeds]
            means.append(mean_or_inf([r.val for r in runs_at[pair]]))
        return means

    if len(lr_grid) > 1:
        chosen = []
        for by_lr in ladder_search(measure, len(names), lr_grid):
            try:
                chosen.append(best_rate(by_lr).lr)
            except ValueError:  # diverged everywhere: report the first rate's runs
                chosen.append(lr_grid[0])
    else:
        lr = lr_grid[0] if lr_grid else sgd.lr
        measure([(index, lr) for index in range(len(names))])
        chosen = [lr] * len(names)
    results = []
    for index, (name, lr) in enumerate(zip(names, chosen, strict=True)):
        runs = runs_at[(index, lr)]
        results.append(LossResult(name, tuple(r.test for r in runs),
                                  tuple(r.diverged for r in runs), tuple(r.curve for r in runs),
                                  lr))
    return results


def check_seeds(seeds: Sequence[Any]) -> tuple[int, ...]:
    """``seeds`` as a tuple of ints, or a ValueError: at least one, each an integer that
    NumPy and torch take as a seed, no two equal (a repeated seed repeats a run and
    makes the spread look smaller than it is)."""
    seeds = tuple(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or not 0 <= s < 2**32
           for s in seeds):
        raise ValueError(f"seeds must be integers in [0, 2**32), got {list(seeds)}")
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"seeds must differ (a repeated seed repeats the same run and "
                         f"understates the spread), got {list(seeds)}")
    return tuple(int(s) for s in seeds)


def meta_test(
    loss: LearnedLoss,
    task: Task,
    *,
    steps: int = 10_000,
    seeds: Sequence[int] = (1, 2, 3, 4, 5),
    baseline: bool = True,
    sgd: SGDSettings | None = None,
    curve_points: int = 0,
    lr_grid: Sequence[float] = (),
    n_jobs: int = 1,
) -> MetaTestResult:
    """Meta-test ``loss`` on an existing :class:`Task` (see :func:`evaluate`).

    ``n_jobs`` worker processes share the training runs (``-1``: one per CPU core); the
    result is the same for any number. Off the CPU the runs stay in this process (a
    forked worker cannot use an accelerator this process initialised).
    """
    if loss.task != task.kind:
        raise ValueError(
            f"the loss is a {loss.task} loss but the data is a {task.kind} task"
        )
    seeds = check_seeds(seeds)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    lr_grid = tuple(positive_number(float(lr), "every learning rate of lr_grid", math.inf)
                    for lr in lr_grid)
    sgd = sgd or SGDSettings()
    if not lr_grid:
        positive_number(sgd.lr, "the learning rate", math.inf)
    if sgd.batch_size > len(task.train):
        # batches are drawn with replacement: a larger one learns nothing more, and only
        # costs memory (10**9 exhausts any machine)
        logger.info("batch_size=%d is larger than the %d training examples; using %d",
                    sgd.batch_size, len(task.train), len(task.train))
        sgd = dataclasses.replace(sgd, batch_size=len(task.train))
    losses = (loss, task.baseline_loss()) if baseline else (loss,)
    workers = n_jobs if task.device.type == "cpu" else 1
    # One torch thread, as in the search: bit-identical results on any core count, and
    # small models train faster than with threads competing for the cores.
    payload = (task, losses, sgd, steps, curve_points)
    # a round trains every loss on every seed at up to every rate of the grid; the runs
    # train together (a rate per stacked model), in a chunk per worker
    work = len(seeds) * len(losses) * max(1, len(lr_grid))
    parallel = workers_for(workers, work, warn=False)
    size = CHUNK_SIZE if batch_rule(task.new_model(0), task.device) is None else 1
    with mapping("auto", workers, _train_runs, payload, work) as run_chunks:
        def run(items: Sequence[tuple[int, float, int]]) -> list[_Run]:
            return spread(run_chunks, items,
                          lambda item: stack_key(dataclasses.replace(sgd, lr=item[1])),
                          parallel, size)

        names = ["learned", task.baseline_name][:len(losses)]
        learned, *others = _run(run, names, seeds, sgd, lr_grid)
    base = others[0] if others else None
    extras = {"lr_grid": list(lr_grid)} if len(lr_grid) > 1 else {}
    return MetaTestResult(task.kind_metric, seeds, steps, learned, base, extras)


def evaluate(
    loss: LearnedLoss,
    dataset: Any,
    model: ModelSpec,
    *,
    steps: int = 10_000,
    seeds: Sequence[int] = (1, 2, 3, 4, 5),
    baseline: bool | BaselineSpec = True,
    lr: float = 0.01,
    batch_size: int = 128,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    split_seed: int = 0,
    device: str = "cpu",
    lr_grid: Sequence[float] | None = None,
    n_jobs: int = 1,
    metric: MetricSpec = None,
) -> MetaTestResult:
    """Train fresh models with ``loss`` (and the baseline) and compare test metrics.

    By default each loss is trained at every rate of a small grid around ``lr`` and
    reported at its own best rate on validation: a comparison at one rate only
    shows which loss suits that rate.

    Parameters
    ----------
    loss : LearnedLoss
        The loss to test (e.g. ``search.best_loss_`` or ``symloss.load(path)``).
    dataset, model
        As for :func:`symloss.fit`; the test split is never used for training.
    steps : int
        SGD steps per training run.
    seeds : sequence of int
        Model-initialisation and batch seeds; use seeds other than the search seed.
    baseline : bool, str, LearnedLoss or path
        Also train with the baseline under the same seeds: ``True`` for the baseline the
        loss was searched against (stored in ``loss.learned_with``; else cross-entropy
        / MSE), a loss (expression text, a LearnedLoss or a saved loss's path) for
        that loss, ``False`` for none.
    lr, batch_size, momentum, weight_decay : optimiser settings.
    split_seed : int
        Seed of the train/validation/test split.
    device : str
        Where to train.
    lr_grid : sequence of float, optional
        Learning rates to try: each loss is then trained at every one and reported at
        the one with the best mean validation metric. A learned loss often scales its
        gradients, which acts like a larger learning rate; with a grid, the baseline
        gets the same chance, so the comparison shows what the loss adds beyond that.
        Default: ``lr`` and two rungs either side of it on the 1-3-10 ladder
        (:func:`symloss.step_size.rate_ladder`); ``()`` trains at ``lr`` only.
    n_jobs : int
        Worker processes for the training runs (``-1``: one per CPU core); the result
        does not depend on it.
    metric : str or callable, optional
        What to report (see :mod:`symloss.metrics`). Default: the metric the loss was
        searched for when it is a registered name (``loss.learned_with.metric``), else
        error rate / MSE.

    Returns
    -------
    MetaTestResult
        Per-seed test metrics, mean and std; ``print`` it for a table.

    Examples
    --------
    >>> import symloss
    >>> from symloss.datasets import load_dataset
    >>> data = load_dataset("sine")
    >>> loss = symloss.LearnedLoss("square(f - y)", task="regression")
    >>> result = symloss.evaluate(loss, {"train": data.train, "test": data.test},
    ...                           symloss.models.build_model("mlp", (1,), 1),
    ...                           steps=50, seeds=(1, 2), lr_grid=(0.01, 0.1))
    >>> result.learned.mean == result.baseline.mean
    True
    """
    data, kind = resolve_data(dataset)
    learned_with = getattr(loss, "learned_with", None)
    if metric is None and learned_with is not None and learned_with.metric_restorable:
        metric = learned_with.metric
    base_spec = baseline if not isinstance(baseline, bool) else (
        learned_with.baseline if learned_with is not None else None)
    task = make_task(data, model, task=kind or loss.task, seed=split_seed, device=device,
                     metric=metric, baseline=base_spec)
    sgd = SGDSettings(lr=lr, momentum=momentum, weight_decay=weight_decay, batch_size=batch_size)
    grid = rate_ladder(lr, 2) if lr_grid is None else lr_grid
    return meta_test(loss, task, steps=steps, seeds=seeds, baseline=baseline is not False, sgd=sgd,
                     lr_grid=grid, n_jobs=n_jobs)
