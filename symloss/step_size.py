"""The step size as its own knob: the search's learning rate, and each loss's best rate.

A normalised search compares loss *shapes* at one learning rate, so that rate must
suit the task: too small and every loss undertrains and the ranking is noise. Before
the first generation, :func:`tune_search_lr` picks it as the baseline's best on a
small grid of short runs. After the search, the final selection scores every finalist
at a few rates around it (:func:`best_rate`), so that a loss wins by its shape and the
rate it wants is reported beside it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from symloss.batched import CHUNK_SIZE, Run, batch_rule, spread, stack_key, train_many
from symloss.config import Settings
from symloss.executors import mapping, workers_for
from symloss.runs import TrainingCache
from symloss.scale import reference_batch, search_loss
from symloss.serialization import MAX_ABS_VALUE, finite_or_none, none_as_inf
from symloss.task import Task
from symloss.training import SGDSettings, sgd_settings

TrainItem = tuple  # (expression, weights, steps, seed, lr[, adam[, checkpoints[, bar]]])
"""``(expression, weights, steps, seed, lr)``, optionally ``adam`` (train with Adam at
``lr`` instead of the search's SGD), ``checkpoints`` and ``bar``: one training run of
:func:`validation_metric`.

``bar`` is ``(n_seeds, limit at each checkpoint, ...)``: the run is one of the
``n_seeds`` runs of its loss (the items of the same expression, weights and bar), whose
mean metric must stay at or below the limit at every checkpoint. Once it did not, the
loss has lost and its runs need not go on (see :func:`validation_metrics`)."""


def validation_metric(
    payload: tuple[Task, Settings, int], item: TrainItem
) -> float | tuple[float, ...]:
    """Train one loss as the search does (normalised when the search is) and return its
    validation metric, inf if training diverged or the loss cannot be normalised.

    With ``checkpoints`` (the item's 7th field) above 0, the metric is taken at that
    many evenly spaced steps instead, the last at the end, and returned as a tuple (inf
    from a divergence on). With a ``bar`` (the 8th field, see :data:`TrainItem`), the
    tuple may end early, but never before the first checkpoint at which the mean of its
    loss's runs exceeded the bar (:func:`first_over`). ``payload`` is ``(task, settings,
    search_seed)``; the search seed fixes the reference batch of the normalisation.
    """
    (metric,) = validation_metrics(payload, [item])
    return metric


def validation_metrics(
    payload: tuple[Task, Settings, int], items: Sequence[TrainItem]
) -> list[float | tuple[float, ...]]:
    """:func:`validation_metric` of every item, the runs trained together by
    :func:`symloss.batched.train_many` (one stacked computation where the model allows).
    The items share their steps, optimiser and checkpoints (:func:`_stack_key`; SGD
    runs may differ in rate). Where every item has a ``bar`` and all runs of each of
    their losses are here, training stops once every one of those losses has gone over
    its bar. Module-level so worker processes can run it."""
    task, settings, search_seed = payload
    steps, _, _, checkpoints = _run_key(items[0])
    failed = (math.inf,) * checkpoints if checkpoints else math.inf
    reference = reference_batch(task, search_seed) if settings.normalize else None
    results: list[float | tuple[float, ...]] = [failed] * len(items)
    runs, slots = [], []
    for slot, item in enumerate(items):
        expression, weights, _, seed, *_ = item
        _, lr, adam, _ = _run_key(item)
        try:
            loss = search_loss(task, settings, expression, weights, reference)
        except ValueError:
            continue
        runs.append(Run(loss, seed, dataclasses.replace(sgd_settings(settings), lr=lr,
                                                         adam=adam)))
        slots.append(slot)
    if not runs:
        return results
    trained = train_many(task, runs, steps, curve_split=task.val if checkpoints else None,
                         curve_points=checkpoints,
                         stop=_stop_rule([items[slot] for slot in slots], len(items)))
    for slot, run in zip(slots, trained, strict=True):
        if checkpoints:
            curve = [m for step, m in run.curve if step > 0]
            stopped = not run.diverged and run.steps < steps
            results[slot] = tuple(curve if stopped else
                                  curve + [math.inf] * (checkpoints - len(curve)))
        else:
            results[slot] = math.inf if run.diverged else task.metric(run.model, task.val)
    return results


def _run_key(item: TrainItem) -> tuple[int, float, bool, int]:
    """``(steps, lr, adam, checkpoints)`` of an item."""
    _, _, steps, _, lr, *options = item
    adam, checkpoints = (*options, False, 0)[:2]
    return steps, lr, bool(adam), checkpoints


def _bar(item: TrainItem) -> tuple[float, ...]:
    """An item's ``bar`` (``()``: none)."""
    return tuple(item[7]) if len(item) > 7 else ()


def _loss_of(item: TrainItem) -> tuple[str, tuple[float, ...], tuple[float, ...]]:
    """What the runs of one loss against one bar share: expression, weights and bar."""
    return item[0], tuple(float(w) for w in item[1]), _bar(item)


def first_over(curves: Sequence[Sequence[float]], limits: Sequence[float]) -> int | None:
    """The first checkpoint (index) at which the mean of ``curves`` (one per seed, as
    far as each reached) is not at or below ``limits``: a diverged run (inf) counts
    against it; ``None`` when the mean stayed within the limits as far as all curves
    reached."""
    for j, limit in enumerate(limits):
        if any(len(curve) <= j for curve in curves):
            return None
        if not mean_or_inf([curve[j] for curve in curves]) <= limit:
            return j
    return None


def _stop_rule(
    items: Sequence[TrainItem], n_items: int
) -> Callable[[Sequence[Sequence[tuple[int, float]]]], bool] | None:
    """For :func:`symloss.batched.train_many`: True once every loss of ``items`` went
    over its bar; ``None`` (never stop) unless all ``n_items`` items were trained, each
    has a bar and each loss's runs are all here (its first bar value, ``n_seeds``)."""
    bars = [_bar(item) for item in items]
    if len(items) != n_items or not all(bars):
        return None
    losses: dict[tuple, list[int]] = {}
    for k, item in enumerate(items):
        losses.setdefault(_loss_of(item), []).append(k)
    if any(len(ks) != int(key[2][0]) for key, ks in losses.items()):
        return None

    def stop(curves: Sequence[Sequence[tuple[int, float]]]) -> bool:
        points = [[m for step, m in curve if step > 0] for curve in curves]
        return all(first_over([points[k] for k in ks], key[2][1:]) is not None
                   for key, ks in losses.items())

    return stop


def _stack_key(item: TrainItem) -> tuple:
    """What items must share to train as one stacked computation: their steps,
    checkpoints and :func:`symloss.batched.stack_key` (the items of one trainer share
    the rest of their optimiser settings); runs that may stop at a bar train with their
    loss's other runs only, so that they stop when that loss has lost."""
    steps, lr, adam, checkpoints = _run_key(item)
    key = (steps, stack_key(SGDSettings(lr=lr, adam=adam)), checkpoints)
    return (*key, _loss_of(item)) if _bar(item) else key


def _unit(item: TrainItem) -> tuple | None:
    """Runs at checkpoints train beside their loss's other seeds (one chunk of
    :func:`symloss.batched.spread`): their curves are compared as means over seeds."""
    return _loss_of(item) if _run_key(item)[3] else None


@contextlib.contextmanager
def trainer(
    task: Task,
    settings: Settings,
    search_seed: int,
    executor: tuple[str, int] = ("auto", 1),
    cache: TrainingCache | None = None,
) -> Iterator[Callable[[Sequence[TrainItem]], list]]:
    """A function giving :func:`validation_metric` of every item, in order, spread over
    ``executor``'s workers (``(kind, n_jobs)`` as for
    :func:`symloss.executors.make_executor`). One pool serves the whole block, so a
    search over rates that asks in several rounds starts its workers once.

    With ``cache`` (a run directory's :class:`~symloss.runs.TrainingCache`), items it
    holds are not trained again, and each chunk's results are stored as they arrive.

    Where :func:`symloss.batched.batch_rule` allows, the runs of one optimiser and steps
    (SGD's rates may differ) train in a chunk per worker
    (:func:`symloss.batched.spread`), each as one stacked computation; elsewhere one at
    a time. A stacked run's numbers do not depend on its chunk, so the results do not
    depend on the workers."""
    size = CHUNK_SIZE if batch_rule(task.new_model(0), task.device) is None else 1
    parts = workers_for(executor[1], warn=False)
    with mapping(*executor, validation_metrics, (task, settings, search_seed),
                 lazy=True) as run:
        def metrics(items: Sequence[TrainItem]) -> list:
            if cache is None:
                return spread(run, items, _stack_key, parts, size, unit=_unit)
            keys = {item: _cache_key(item) for item in items}
            missing = [item for item in keys if keys[item] not in cache]
            spread(run, missing, _stack_key, parts, size, done=lambda chunk, values: cache.add(
                [(keys[item], _to_json(value))
                 for item, value in zip(chunk, values, strict=True)]), unit=_unit)
            return [_from_json(cache[keys[item]]) for item in items]

        yield metrics


def _cache_key(item: TrainItem) -> str:
    """An item's key in a :class:`~symloss.runs.TrainingCache`: every field spelt out."""
    expression, weights, _, seed, *_ = item
    steps, lr, adam, checkpoints = _run_key(item)
    fields = [expression, [float(w) for w in weights], steps, seed, lr, adam, checkpoints]
    bar = _bar(item)
    return json.dumps(fields + [list(bar)] if bar else fields)


def _to_json(value: float | tuple[float, ...]) -> Any:
    """A :func:`validation_metric` result as JSON (inf as null)."""
    if isinstance(value, tuple):
        return [finite_or_none(v) for v in value]
    return finite_or_none(value)


def _from_json(value: Any) -> float | tuple[float, ...]:
    """Inverse of :func:`_to_json`."""
    if isinstance(value, list):
        return tuple(none_as_inf(v) for v in value)
    return none_as_inf(value)


@dataclass(frozen=True)
class RateChoice:
    """Mean validation metric at each learning rate tried, and the best rate."""

    lr: float
    metrics: dict[float, float]

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form (non-finite metrics as ``None``)."""
        return {"lr": self.lr, "metrics": {
            str(lr): finite_or_none(m) for lr, m in self.metrics.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> RateChoice:
        """Inverse of :meth:`to_dict`."""
        return cls(float(data["lr"]), {
            float(lr): none_as_inf(m) for lr, m in data["metrics"].items()})


def best_rate(metrics: dict[float, float]) -> RateChoice:
    """The rate with the lowest metric; ties go to the smaller rate (the safer step).

    Raises
    ------
    ValueError
        If every rate diverged.
    """
    lr = _lowest(metrics)
    if lr is None:
        raise ValueError(f"training diverged at every learning rate tried ({sorted(metrics)})")
    return RateChoice(lr, dict(metrics))


def _lowest(metrics: dict[float, float]) -> float | None:
    """The rate with the lowest finite metric, the smaller on a tie; None if none is finite."""
    finite = [lr for lr, m in metrics.items() if math.isfinite(m)]
    return min(finite, key=lambda lr: (metrics[lr], lr)) if finite else None


def mean_or_inf(values: Sequence[float]) -> float:
    """Mean of ``values``, inf if any is not finite."""
    return statistics.fmean(values) if all(math.isfinite(v) for v in values) else math.inf


def rate_ladder(center: float, width: int) -> tuple[float, ...]:
    """Learning rates on the 1-3-10 ladder around ``center``, ``width`` rungs each way.

    >>> rate_ladder(0.01, 1)
    (0.003, 0.01, 0.03)
    >>> rate_ladder(0.1, 2)
    (0.01, 0.03, 0.1, 0.3, 1.0)
    """
    if not (math.isfinite(center) and 0 < center <= MAX_ABS_VALUE):
        raise ValueError(f"the centre of a rate ladder must be a positive number at most "
                         f"{MAX_ABS_VALUE:g}, got {center}")
    rung = round(2 * math.log10(center))

    def value(i: int) -> float:
        return float(f"{(3 if i % 2 else 1) * 10.0 ** (i // 2):.1g}")

    return tuple(value(rung + j) for j in range(-width, width + 1))


def next_rung(lr: float, direction: int) -> float:
    """The rate one rung up (``direction=1``) or down (``-1``) the 1-3-10 ladder from
    ``lr``.

    >>> next_rung(0.3, 1), next_rung(0.01, -1), next_rung(0.05, 1)
    (1.0, 0.003, 0.1)
    """
    below, _, above = rate_ladder(lr, 1)
    if direction > 0:
        return above if above > lr * (1 + 1e-9) else rate_ladder(lr, 2)[4]
    return below if below < lr * (1 - 1e-9) else rate_ladder(lr, 2)[0]


def ladder_search(
    measure: Callable[[list[tuple[int, float]]], list[float]],
    n: int,
    rates: Sequence[float],
    max_extra: int = 2,
) -> list[dict[float, float]]:
    """Metrics of ``n`` losses at ``rates``, each grid extended past its edge while the
    best rate sits there: a best rate at the edge of a grid says the grid was too narrow.

    ``measure([(loss index, lr), ...])`` returns one metric per pair (lower is better);
    each round asks for all the rates still wanted at once, so the caller can run them
    in parallel. At most ``max_extra`` rungs are added on each side.
    """
    found: list[dict[float, float]] = [{} for _ in range(n)]
    wanted = [(i, lr) for i in range(n) for lr in rates]
    added = [[0, 0] for _ in range(n)]
    while wanted:
        for (i, lr), metric in zip(wanted, measure(wanted), strict=True):
            found[i][lr] = metric
        wanted = []
        for i, metrics in enumerate(found):
            best = _lowest(metrics)
            if best is None:
                continue
            for side, direction, edge in ((0, -1, min(metrics)), (1, 1, max(metrics))):
                if best == edge and added[i][side] < max_extra:
                    added[i][side] += 1
                    wanted.append((i, next_rung(edge, direction)))
    return found


def tune_search_lr(
    task: Task, settings: Settings, seed: int, executor: tuple[str, int] = ("auto", 1)
) -> RateChoice:
    """The baseline's best learning rate on ``settings.lr_grid``, extended by up to two
    rungs of the 1-3-10 ladder where the best rate is at its edge (:func:`ladder_search`).

    One run of ``settings.fitness_steps`` SGD steps from ``seed`` per rate, the
    validation metric as in the search's fitness.

    Raises
    ------
    ValueError
        If the grid is empty, or the baseline diverges at every rate on it.
    """
    if not settings.lr_grid:
        raise ValueError("settings.lr_grid is empty: there is no rate to choose from")

    with trainer(task, settings, seed, executor) as run:
        (metrics,) = ladder_search(
            lambda pairs: run([(str(task.baseline), task.baseline_weights,
                                settings.fitness_steps, seed, lr)
                               for _, lr in pairs]),
            1, settings.lr_grid)
    try:
        return best_rate(dict(sorted(metrics.items())))
    except ValueError as error:
        raise ValueError(
            f"the baseline loss {task.baseline}: {error}; check the data and model, or "
            "pass smaller rates in settings lr_grid"
        ) from error
