"""Final selection: retrain the best few losses longer, on more seeds, and pick one.

The search scores every candidate by one short training run from one seed. Before a
loss is returned, the ``selection_top_k`` best distinct candidates and the baseline are
retrained for ``settings.selection_steps`` steps on ``settings.selection_seeds`` seeds
(never the meta-test seeds), each at the search's rate and ``selection_lr_width`` rungs
either side of it on the 1-3-10 ladder, and ranked by their mean validation metric at their
own best rate. A learned loss is therefore chosen only if it does no worse than the plain
baseline at the baseline's best rate.

With ``settings.selection_adam_lr``, every finalist that did no worse than the plain
baseline with SGD is also trained with Adam, a loop it was not searched in (the others
cannot be chosen whatever Adam shows, so their Adam runs are skipped). A learned loss
must then also do no worse than the plain baseline there, at every one of
:data:`ADAM_CHECKPOINTS` points of the run (someone else's loop may stop early, and a
loss that only catches up late, such as a bounded loss under Adam on noisy labels, would
lose there), and the eligible finalists are ranked by the average of their SGD and Adam
means, so that both loops count alike. The plain baseline's Adam runs train with the
first SGD runs (they are needed whatever SGD shows); a learned loss's Adam runs stop at
the first checkpoint where its mean is behind the plain baseline's, since it can no
longer be chosen there (its curve then ends at that checkpoint).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from symloss.config import Settings
from symloss.expression import Expression
from symloss.records import OK, Evaluation
from symloss.runs import TrainingCache
from symloss.serialization import finite_or_none
from symloss.step_size import (
    TrainItem,
    best_rate,
    first_over,
    ladder_search,
    mean_or_inf,
    rate_ladder,
    trainer,
)
from symloss.task import Task

SELECTION_SEED_OFFSET = 10_000
ADAM_CHECKPOINTS = 4
"""Points of the Adam runs (evenly spaced, the last at the end) at which a learned loss
must do no worse than the plain baseline."""


@dataclass(frozen=True)
class Selection:
    """One finalist: its search record, and validation metrics of the longer runs at
    its best learning rate ``lr`` (``by_lr``: the mean at every rate tried)."""

    evaluation: Evaluation
    metrics: tuple[float, ...]
    lr: float | None = None
    by_lr: dict[float, float] = field(default_factory=dict)
    adam_metrics: tuple[float, ...] = ()
    """Validation metrics of the same runs with Adam (``settings.selection_adam_lr``)."""
    adam_curve: tuple[float, ...] = ()
    """Mean over seeds of the Adam runs' validation metric at each of the
    :data:`ADAM_CHECKPOINTS` points (the last is :attr:`adam_mean`), or at those up to
    the first where a learned loss was behind the plain baseline (its runs stopped
    there)."""
    eligible: bool = True
    """False for a learned loss that did worse than the plain baseline with SGD (each at
    its best rate) or with Adam at some checkpoint."""

    @property
    def adam_mean(self) -> float:
        """Mean validation metric of the Adam runs at their last checkpoint (inf when one
        diverged or none ran)."""
        return mean_or_inf(self.adam_metrics) if self.adam_metrics else math.inf

    @property
    def mean(self) -> float:
        """Mean validation metric (inf when a run diverged)."""
        return mean_or_inf(self.metrics)

    @property
    def score(self) -> float:
        """What the ranking uses: :attr:`mean`, averaged with :attr:`adam_mean` when the
        Adam runs ran, so that both ordinary loops the selection tried count alike."""
        return (self.mean + self.adam_mean) / 2 if self.adam_metrics else self.mean

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form."""
        return {
            "expression": self.evaluation.expression,
            "weights": list(self.evaluation.weights),
            "search_fitness": self.evaluation.fitness,
            "lr": self.lr,
            "metrics": [finite_or_none(m) for m in self.metrics],
            "mean": finite_or_none(self.mean),
            "score": finite_or_none(self.score),
            "by_lr": {str(lr): finite_or_none(m) for lr, m in self.by_lr.items()},
            "adam_metrics": [finite_or_none(m) for m in self.adam_metrics],
            "adam_curve": [finite_or_none(m) for m in self.adam_curve],
            "eligible": self.eligible,
        }


def finalists(
    evaluations: Sequence[Evaluation], baseline: Expression, k: int,
    baseline_weights: Sequence[float] = (),
) -> list[Evaluation]:
    """The ``k`` best distinct trained candidates by search fitness, plus the baseline
    as the search scored it and the plain baseline (its own weights: unit weights, or
    those of a saved loss given as the baseline), so that the chosen loss is never worse
    on validation than what the user would otherwise train with."""
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
    plain_weights = tuple(baseline_weights)
    if not any(e.key == base_key and tuple(e.weights) == plain_weights for e in result):
        plain = next((e for e in trained
                      if e.key == base_key and tuple(e.weights) == plain_weights), None)
        result.append(plain or Evaluation(str(baseline), base_key, OK, weights=plain_weights,
                                          reason="plain baseline"))
    return result


def selection_rates(settings: Settings) -> tuple[float, ...]:
    """The learning rates of the final selection: the search's own, and
    ``settings.selection_lr_width`` rungs of the 1-3-10 ladder either side of it."""
    if settings.selection_lr_width == 0:
        return (settings.lr,)
    ladder = rate_ladder(settings.lr, settings.selection_lr_width)
    width = settings.selection_lr_width
    # the search's own rate stays exact even where it is not on the ladder
    return (*ladder[:width], settings.lr, *ladder[width + 1:])


def select(
    task: Task,
    settings: Settings,
    evaluations: Sequence[Evaluation],
    seed: int,
    executor: tuple[str, int] = ("auto", 1),
    cache: TrainingCache | None = None,
) -> list[Selection]:
    """Rank the finalists by validation metric after longer training, best first, each
    at its best learning rate around ``settings.lr`` (:func:`rate_ladder`); with Adam runs,
    eligible finalists first, by :attr:`Selection.score` (see the module docstring).

    ``executor`` is ``(kind, n_jobs)`` as for :func:`symloss.executors.make_executor`:
    the training runs are independent and spread over its workers. With ``cache`` (the
    run directory's), runs done before are not trained again (:func:`trainer`).
    """
    seeds = [seed + SELECTION_SEED_OFFSET + i for i in range(settings.selection_seeds)]
    rates = selection_rates(settings)
    chosen = finalists(evaluations, task.baseline, settings.selection_top_k,
                       task.baseline_weights)
    with trainer(task, settings, seed, executor, cache) as run:
        # the plain baseline was never scored: score it as the search would have
        scored = iter(run([(e.expression, tuple(e.weights), settings.fitness_steps, seed,
                            settings.lr) for e in chosen if not math.isfinite(e.fitness)]))
        chosen = [e if math.isfinite(e.fitness) else dataclasses.replace(e, fitness=next(scored))
                  for e in chosen]
        per_run: dict[tuple[int, float], tuple[float, ...]] = {}
        plain = next(i for i, e in enumerate(chosen) if e.key == task.baseline.key()
                     and tuple(e.weights) == task.baseline_weights)
        # the plain baseline's Adam runs are needed whatever SGD shows: they train with
        # the first round, and their curve is the bar the others' Adam runs must meet
        early = _adam_items(settings, [chosen[plain]], seeds) if settings.selection_adam_lr else []
        adam: dict[int, tuple[tuple[float, ...], ...]] = {}

        def measure(pairs: list[tuple[int, float]]) -> list[float]:
            extra = early if plain not in adam else []
            values = iter(run([(chosen[i].expression, tuple(chosen[i].weights),
                                settings.selection_steps, s, lr)
                               for i, lr in pairs for s in seeds] + extra))
            for i, lr in pairs:
                per_run[(i, lr)] = tuple(next(values) for _ in seeds)
            if extra:
                adam[plain] = tuple(values)
            return [mean_or_inf(per_run[pair]) for pair in pairs]

        found = ladder_search(measure, len(chosen), rates,
                              max_extra=2 if settings.selection_lr_width else 0)
        best = [_best_lr(by_lr, settings.lr) for by_lr in found]
        means = [mean_or_inf(per_run[(i, lr)]) for i, lr in enumerate(best)]
        if plain in adam:
            others = [i for i in _adam_contenders(means, plain) if i != plain]
            adam |= zip(others, _adam_metrics(settings, [chosen[i] for i in others], seeds,
                                              run, _mean_curve(adam[plain])), strict=True)
    results = []
    for i, evaluation in enumerate(chosen):
        curves = adam.get(i, ())
        results.append(Selection(
            evaluation, per_run[(i, best[i])], best[i], dict(sorted(found[i].items())),
            adam_metrics=tuple(curve[-1] for curve in curves),
            adam_curve=_mean_curve(curves),
        ))
    if settings.selection_adam_lr > 0:
        results = [dataclasses.replace(r, eligible=i == plain or (
            i in adam and _no_worse(r, results[plain]))) for i, r in enumerate(results)]
    return sorted(results, key=lambda r: (not r.eligible, r.score, r.evaluation.fitness))


def _adam_contenders(means: Sequence[float], plain: int) -> list[int]:
    """The finalists (by index) to train with Adam: the plain baseline and those no worse
    than it with SGD. One already worse cannot be chosen whatever Adam shows, so its
    Adam runs would decide nothing."""
    return [i for i, mean in enumerate(means) if i == plain or mean <= means[plain]]


def _best_lr(by_lr: dict[float, float], default: float) -> float:
    """The best rate of a finalist's ``by_lr``; ``default`` when it diverged at every
    rate (it then ranks last)."""
    try:
        return best_rate(by_lr).lr
    except ValueError:
        return default


def _no_worse(finalist: Selection, plain: Selection) -> bool:
    """True when ``finalist`` did no worse than ``plain`` with SGD (each at its best rate)
    and at every checkpoint of the Adam runs (all of which it reached)."""
    return (finalist.mean <= plain.mean
            and len(finalist.adam_curve) == len(plain.adam_curve)
            and all(ours <= theirs
                    for ours, theirs in zip(finalist.adam_curve, plain.adam_curve, strict=True)))


def _mean_curve(curves: Sequence[Sequence[float]]) -> tuple[float, ...]:
    """Mean over seeds at each checkpoint (inf where a run diverged)."""
    return tuple(mean_or_inf(point) for point in zip(*curves, strict=True))


def _adam_items(
    settings: Settings, chosen: Sequence[Evaluation], seeds: Sequence[int],
    bar: Sequence[float] = (),
) -> list[TrainItem]:
    """The Adam runs of ``chosen`` on ``seeds``, each stopping once its loss's mean is
    over ``bar`` at a checkpoint (``()``: no bar)."""
    limit = ((len(seeds), *bar),) if bar else ()
    return [(e.expression, tuple(e.weights), settings.selection_steps, s,
             settings.selection_adam_lr, True, ADAM_CHECKPOINTS, *limit)
            for e in chosen for s in seeds]


def _adam_metrics(
    settings: Settings, chosen: Sequence[Evaluation], seeds: Sequence[int],
    run: Callable[[Sequence[TrainItem]], list], bar: Sequence[float],
) -> list[tuple[tuple[float, ...], ...]]:
    """Per finalist and selection seed, the validation metrics at the
    :data:`ADAM_CHECKPOINTS` points of ``selection_steps`` of Adam at
    ``settings.selection_adam_lr``, up to the first point where the finalist's mean is
    over ``bar`` (the plain baseline's mean curve): it has lost there, and its runs
    stop (:func:`symloss.step_size.validation_metrics`).

    Adam divides out a loss's scale, so this asks whether the loss's *shape* also
    trains well in an ordinary loop it was not searched in."""
    values = iter(run(_adam_items(settings, chosen, seeds, bar)))
    results = []
    for _ in chosen:
        curves = [next(values) for _ in seeds]
        over = first_over(curves, bar)
        # runs trained one at a time go on past this point: cut every curve here, so
        # that the result does not depend on how the runs were trained
        results.append(tuple(tuple(curve[:over + 1]) if over is not None else tuple(curve)
                             for curve in curves))
    return results
