"""Final selection: retrain the best few losses longer, on more seeds, and pick one.

The search scores every candidate by one short training run from one seed. Before a
loss is returned, the ``selection_top_k`` best distinct candidates and the baseline are
retrained for ``settings.selection_steps`` steps on ``settings.selection_seeds`` seeds
(never the meta-test seeds) and ranked by their mean validation metric.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from symloss.config import Settings
from symloss.evaluator import sgd_settings
from symloss.executors import make_executor, single_torch_thread
from symloss.expression import Expression
from symloss.network import LearnedLoss
from symloss.records import OK, Evaluation
from symloss.task import Task
from symloss.training import train

SELECTION_SEED_OFFSET = 10_000


@dataclass(frozen=True)
class Selection:
    """One finalist: its search record and validation metrics of the longer runs."""

    evaluation: Evaluation
    metrics: tuple[float, ...]

    @property
    def mean(self) -> float:
        """Mean validation metric (inf when a run diverged)."""
        if not all(math.isfinite(m) for m in self.metrics):
            return math.inf
        return statistics.fmean(self.metrics)

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form."""
        return {
            "expression": self.evaluation.expression,
            "search_fitness": self.evaluation.fitness,
            "metrics": [m if math.isfinite(m) else None for m in self.metrics],
            "mean": self.mean if math.isfinite(self.mean) else None,
        }


def finalists(
    evaluations: Sequence[Evaluation], baseline: Expression, k: int
) -> list[Evaluation]:
    """The ``k`` best distinct trained candidates by search fitness, plus the baseline
    as the search scored it and the plain baseline (unit weights), so that the chosen
    loss is never worse on validation than what the user would otherwise train with."""
    trained = [e for e in evaluations if e.status == OK and math.isfinite(e.fitness)]
    ranked = sorted(trained, key=lambda e: (e.fitness, Expression.parse(e.expression).size))
    chosen: dict[str, Evaluation] = {}
    for e in ranked:
        if len(chosen) == k:
            break
        chosen.setdefault(e.key, e)
    base_key = baseline.key()
    if base_key not in chosen:
        base = next((e for e in trained if e.key == base_key), None)
        if base is not None:
            chosen[base_key] = base
    result = list(chosen.values())
    if not any(e.key == base_key and not e.weights for e in result):
        plain = next((e for e in trained if e.key == base_key and not e.weights), None)
        result.append(plain or Evaluation(str(baseline), base_key, OK, reason="plain baseline"))
    return result


def validation_metric(
    payload: tuple[Task, Settings], item: tuple[str, tuple[float, ...], int, int]
) -> float:
    """Train one loss (expression, weights) for ``steps`` from ``seed``; its validation
    metric, inf if training diverged. Module-level so that worker processes can run it."""
    task, settings = payload
    expression, weights, steps, seed = item
    loss = LearnedLoss(expression, task.kind, weights or None)
    run = train(task, loss, steps, sgd_settings(settings), seed)
    return math.inf if run.diverged else task.metric(run.model, task.val)


def select(
    task: Task,
    settings: Settings,
    evaluations: Sequence[Evaluation],
    seed: int,
    executor: tuple[str, int] = ("auto", 1),
) -> list[Selection]:
    """Rank the finalists by mean validation metric after longer training, best first.

    ``executor`` is ``(kind, n_jobs)`` as for :func:`symloss.executors.make_executor`:
    the training runs are independent and spread over its workers.
    """
    seeds = [seed + SELECTION_SEED_OFFSET + i for i in range(settings.selection_seeds)]
    chosen = finalists(evaluations, task.baseline, settings.selection_top_k)
    items = []
    for evaluation in chosen:
        if not math.isfinite(evaluation.fitness):  # the plain baseline was never scored
            items.append((evaluation.expression, evaluation.weights, settings.fitness_steps,
                          seed))
        items += [(evaluation.expression, evaluation.weights, settings.selection_steps, s)
                  for s in seeds]
    pool = make_executor(*executor, validation_metric, (task, settings))
    try:
        with single_torch_thread():
            metrics = iter(list(pool.map(items)))
    finally:
        pool.close()
    results = []
    for evaluation in chosen:
        if not math.isfinite(evaluation.fitness):
            evaluation = dataclasses.replace(evaluation, fitness=next(metrics))
        results.append(Selection(evaluation, tuple(next(metrics) for _ in seeds)))
    return sorted(results, key=lambda r: (r.mean, r.evaluation.fitness))
