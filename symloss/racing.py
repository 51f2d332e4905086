"""Racing: a short training run first, the local search and full training only for the
promising.

Every candidate of a search trains from the same initialisation on the same batches, so
validation metrics after the same number of steps are directly comparable. A candidate
whose expression, trained for a fraction of the fitness steps, is far behind the best
earlier candidate's expression after the same steps is stopped there: its local search
and full training are skipped. The limit depends only on candidates evaluated before the
current generation, so results do not depend on the order in which workers finish.
"""

from __future__ import annotations

import math

from symloss.config import Settings
from symloss.task import Task
from symloss.training import LossFn, TrainResult, sgd_settings, train

RACED = "raced"


def race_steps(settings: Settings) -> int:
    """Training steps of the short run: ``race_fraction`` of the fitness steps."""
    return max(1, round(settings.fitness_steps * settings.race_fraction))


def racing_enabled(settings: Settings) -> bool:
    """Whether a search with these settings races its candidates."""
    return settings.local_search and settings.race_ratio > 0


def short_run(task: Task, loss: LossFn, settings: Settings, seed: int) -> TrainResult:
    """The race's short run: :func:`race_steps` steps with ``loss`` (the candidate's
    expression as the search trains it, before any local search), from the
    initialisation and batches of fitness training, so that fitness training of the
    same loss can continue it (:func:`symloss.training.train`'s ``start``)."""
    return train(task, loss, race_steps(settings), sgd_settings(settings), seed)


def run_metric(task: Task, run: TrainResult) -> float:
    """Validation metric of a short run's model; inf when training diverged."""
    return math.inf if run.diverged else task.metric(run.model, task.val)


def short_run_metric(task: Task, loss: LossFn, settings: Settings, seed: int) -> float:
    """Validation metric after :func:`short_run` (inf when training diverged)."""
    return run_metric(task, short_run(task, loss, settings, seed))


def race_reason(metric: float, limit: float, settings: Settings, task: Task) -> str | None:
    """Why a short-run ``metric`` above ``limit`` stops the candidate, or ``None``."""
    if metric <= limit:
        return None
    return (
        f"{RACED}: validation {task.kind_metric} {metric:.4g} after {race_steps(settings)} of "
        f"{settings.fitness_steps} steps, over {settings.race_ratio:g}x the best earlier "
        f"loss's ({limit / settings.race_ratio:.4g})"
    )
