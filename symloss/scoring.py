"""The expensive stage of one candidate, run by the executor: the poor-training check,
the race's short run (:mod:`symloss.racing`), the local search and fitness training.

:func:`score` is a pure, module-level function of its item, so process pools and Ray can
run it and a prefetched result (:mod:`symloss.speculation`) is the one a later request
for the same item would compute. The cheap checks before it, and the caches that decide
which candidates reach it, are the evaluator's (:mod:`symloss.evaluator`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from symloss.config import Settings
from symloss.expression import Expression
from symloss.filters import FAILED, NON_FINITE, poor_training_reason
from symloss.local_search import local_search
from symloss.metrics import MetricError
from symloss.racing import race_reason, run_metric, short_run
from symloss.records import OK, REJECTED, Evaluation
from symloss.scale import Reference, reference_batch, search_loss
from symloss.task import Task
from symloss.training import TrainResult, sgd_settings, train


def _screen(
    task: Task, settings: Settings, seed: int, expression: Expression, check: bool,
    limit: float | None, reference: Reference | None, timings: dict[str, float],
) -> tuple[dict[str, Any] | None, TrainResult | None]:
    """The poor-training check (when ``check``), then the race's short run (when a
    ``limit`` is given): the fields of a rejection, or ``None`` when the candidate goes
    on to be trained; and the short run, which fitness training of the plain
    expression continues."""
    started = time.perf_counter()
    try:
        reason = poor_training_reason(expression, task, settings, seed) if check else None
    except MetricError:  # the user's metric failed: every number would be suspect
        raise
    except Exception as error:  # one candidate's failure must not end the search
        reason = f"{FAILED}: {type(error).__name__}: {error}"
    timings["poor_training"] = time.perf_counter() - started
    if reason:
        return {"status": REJECTED, "reason": reason, "timings": timings}, None
    if limit is None:
        return None, None
    started = time.perf_counter()
    try:
        loss = search_loss(task, settings, expression, (), reference)
    except ValueError:  # not normalisable: the full evaluation reports it
        return None, None
    run = short_run(task, loss, settings, seed)
    metric = run_metric(task, run)
    timings["race"] = time.perf_counter() - started
    reason = race_reason(metric, limit, settings, task)
    if reason:
        # the short run's metric, not inf: the search can still rank the candidate
        return {"status": REJECTED, "fitness": metric, "reason": reason, "timings": timings}, None
    return None, run


FAILED_TRAINING = "failed training"
"""Start of the reason of a candidate whose local search or training raised."""


@dataclass(frozen=True)
class Scored:
    """What the expensive stage decided for one candidate.

    Attributes
    ----------
    fields : dict
        The :class:`~symloss.records.Evaluation` fields it decides (status, fitness,
        reason, weights, timings and the refinement's fitnesses).
    passed_check : bool
        The poor-training check ran and passed: a resumed search need not repeat it.
    """

    fields: dict[str, Any]
    passed_check: bool

    def evaluation(self, expression: str, key: str, timings: dict[str, float]) -> Evaluation:
        """The candidate's record, ``timings`` (of the cheap checks) before this stage's."""
        return Evaluation(expression, key, **{
            **self.fields, "timings": {**timings, **self.fields["timings"]}})

    @property
    def trained(self) -> bool:
        """Whether the candidate was trained (local search or fitness)."""
        return bool({"local_search", "fitness"} & self.fields["timings"].keys())


def score(
    payload: tuple[Task, Settings, int], item: str | tuple[str, bool, float | None]
) -> Scored:
    """The expensive stage: poor-training check, race, local search (if enabled), fitness.

    ``item`` is an expression's text, or ``(text, check, limit)``: ``check=False`` skips
    the poor-training check (passed earlier in this search), ``limit`` is the highest
    validation metric the race's short run may reach (``None``: no race). Module-level
    so that process pools and Ray can run it.
    """
    task, settings, seed = payload
    text, check, limit = (item, True, None) if isinstance(item, str) else item
    expression = Expression.parse(text)
    timings: dict[str, float] = {}
    reference = reference_batch(task, seed) if settings.normalize else None
    rejection, start = _screen(task, settings, seed, expression, check, limit, reference,
                               timings)
    if rejection is not None:
        return Scored(rejection, check and "race" in timings)
    try:
        fields = _train(task, settings, seed, expression, reference, timings, start)
    except MetricError:  # the user's metric failed: every number would be suspect
        raise
    except Exception as error:  # noqa: BLE001 -- one candidate's failure must not end the search
        fields = {"status": REJECTED, "fitness": math.inf, "timings": timings,
                  "reason": f"{FAILED_TRAINING}: {type(error).__name__}: {error}"}
    return Scored(fields, check)


def _train(
    task: Task, settings: Settings, seed: int, expression: Expression,
    reference: Reference | None, timings: dict[str, float], start: TrainResult | None = None,
) -> dict[str, Any]:
    """Local search (if enabled) and fitness training: the fields of the evaluation.

    With the local search and ``settings.local_search_guard`` on, both the plain
    expression (unit edge weights) and the refined loss are trained, and the refined
    loss is kept only where its fitness is strictly lower: a refinement tuned on a
    proxy (a few steps, a validation batch) must not make the loss worse by the
    search's own measure. The plain run continues ``start`` (the race's short run of
    the same loss) where there is one.
    """
    if not settings.local_search:
        return _fitness(task, settings, seed, expression, (), reference, timings, "fitness",
                        start)
    if not settings.local_search_guard:
        weights = _refine(task, settings, seed, expression, reference, timings)
        fields = _fitness(task, settings, seed, expression, weights, reference, timings,
                          "fitness")
        return {**fields, "refined": True, "refined_fitness": fields["fitness"]}
    plain = _fitness(task, settings, seed, expression, (), reference, timings, "fitness",
                     start)
    weights = _refine(task, settings, seed, expression, reference, timings)
    refined = _fitness(task, settings, seed, expression, weights, reference, timings,
                       "refined_fitness")
    keep = refined["fitness"] < plain["fitness"]
    return {**(refined if keep else plain), "refined": keep,
            "unrefined_fitness": plain["fitness"], "refined_fitness": refined["fitness"]}


def _refine(
    task: Task, settings: Settings, seed: int, expression: Expression,
    reference: Reference | None, timings: dict[str, float],
) -> tuple[float, ...]:
    """The local search's edge weights for ``expression``."""
    started = time.perf_counter()
    weights = local_search(task, expression, settings, seed + 1, reference).weights
    timings["local_search"] = time.perf_counter() - started
    return weights


def _fitness(
    task: Task, settings: Settings, seed: int, expression: Expression,
    weights: tuple[float, ...], reference: Reference | None, timings: dict[str, float],
    stage: str, start: TrainResult | None = None,
) -> dict[str, Any]:
    """Fitness training of the loss with edge ``weights`` (``()``: the plain
    expression), continuing ``start`` when given: the fields of its evaluation, the
    seconds in ``timings[stage]``."""
    started = time.perf_counter()
    try:
        loss = search_loss(task, settings, expression, weights, reference)
    except ValueError as error:
        when = "after the local search, " if weights else ""
        return {"status": REJECTED, "fitness": math.inf, "weights": weights,
                "reason": f"{NON_FINITE}: {when}{error}", "timings": timings}
    result = train(task, loss, settings.fitness_steps, sgd_settings(settings), seed,
                   start=start)
    fitness = math.inf if result.diverged else task.metric(result.model, task.val)
    timings[stage] = time.perf_counter() - started
    if result.diverged:
        reason = f"{NON_FINITE}: training loss became NaN/inf by step {result.steps}"
    elif not math.isfinite(fitness):
        reason = f"{NON_FINITE}: validation metric is {fitness}"
    else:
        return {"status": OK, "fitness": fitness, "weights": weights, "timings": timings}
    return {"status": REJECTED, "fitness": math.inf, "reason": reason, "weights": weights,
            "timings": timings}
