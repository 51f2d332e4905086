"""The step size as its own knob: rate ladders, edge extension, the search's rate."""

from __future__ import annotations

import math

import pytest

from symloss.step_size import (
    RateChoice,
    best_rate,
    first_over,
    ladder_search,
    next_rung,
    rate_ladder,
    tune_search_lr,
    validation_metric,
    validation_metrics,
)


def _valley(best: float):
    """A metric with its minimum at ``best`` (log scale); counts the rates asked for."""
    asked: list[float] = []

    def measure(pairs):
        asked.extend(lr for _, lr in pairs)
        return [(math.log10(lr) - math.log10(best)) ** 2 for _, lr in pairs]

    return measure, asked


def test_the_grid_grows_past_an_edge_until_the_best_is_inside():
    measure, asked = _valley(0.001)
    (found,) = ladder_search(measure, 1, (0.01, 0.03, 0.1))
    assert best_rate(found).lr == 0.001
    assert sorted(asked) == [0.001, 0.003, 0.01, 0.03, 0.1]


def test_growth_is_bounded_and_an_inside_best_adds_nothing():
    measure, asked = _valley(1e-6)
    (found,) = ladder_search(measure, 1, (0.01, 0.03, 0.1), max_extra=2)
    assert min(found) == 0.001  # two rungs down, no more
    measure, asked = _valley(0.03)
    ladder_search(measure, 1, (0.01, 0.03, 0.1))
    assert sorted(asked) == [0.01, 0.03, 0.1]


def test_losses_grow_their_grids_independently():
    def measure(pairs):
        targets = {0: 0.3, 1: 0.003}
        return [abs(math.log10(lr / targets[i])) for i, lr in pairs]

    low, high = ladder_search(measure, 2, (0.01, 0.03, 0.1))
    assert best_rate(low).lr == 0.3 and best_rate(high).lr == 0.003


def test_diverged_rates_are_never_best_and_all_diverged_is_an_error():
    assert best_rate({0.1: math.inf, 0.03: 0.5, 0.01: 0.5}).lr == 0.01  # tie: smaller
    with pytest.raises(ValueError, match="diverged at every learning rate"):
        best_rate({0.1: math.inf})


def test_ladder_values():
    assert rate_ladder(0.03, 2) == (0.003, 0.01, 0.03, 0.1, 0.3)
    assert next_rung(1.0, 1) == 3.0 and next_rung(0.003, -1) == 0.001
    with pytest.raises(ValueError, match="positive"):
        rate_ladder(0.0, 1)


def test_rate_choice_round_trips_through_json():
    choice = RateChoice(0.1, {0.03: 0.5, 0.1: 0.25, 0.3: math.inf})
    assert RateChoice.from_dict(choice.to_dict()) == choice


def test_the_search_rate_is_the_baselines_best(sine_task, tiny_settings):
    settings = tiny_settings.replace(lr_grid=(0.003, 0.03), fitness_steps=40)
    choice = tune_search_lr(sine_task, settings, seed=0)
    assert choice.lr == min(choice.metrics, key=choice.metrics.get)
    for lr, metric in choice.metrics.items():
        assert metric == validation_metric((sine_task, settings, 0),
                                           (str(sine_task.baseline), (), 40, 0, lr))
    with pytest.raises(ValueError, match="lr_grid is empty"):
        tune_search_lr(sine_task, settings.replace(lr_grid=()), seed=0)


def test_checkpoints_give_the_metric_along_the_same_run(sine_task, tiny_settings):
    """Checkpoints do not change the run: the last is the plain call's metric, with SGD
    and with Adam, and the points differ (the model is still learning)."""
    payload = (sine_task, tiny_settings, 0)
    for adam in (False, True):
        item = ("square(f - y)", (), 40, 3, 0.01, adam)
        curve = validation_metric(payload, (*item, 4))
        assert len(curve) == 4 and curve[-1] == validation_metric(payload, item)
        assert len(set(curve)) == 4
    # a loss that cannot be normalised gives inf at every checkpoint
    assert validation_metric(payload, ("y * 0 * f", (), 40, 3, 0.01, True, 3)) == (math.inf,) * 3


def test_first_over_is_the_first_checkpoint_where_the_mean_is_over_the_limit():
    limits = (0.5, 0.4, 0.3)
    assert first_over([(0.4, 0.4, 0.3), (0.6, 0.4, 0.3)], limits) is None  # means on the bar
    assert first_over([(0.4, 0.5), (0.5, 0.4)], limits) == 1
    assert first_over([(0.4,), (0.5, 0.4)], limits) is None  # not reached by every seed
    assert first_over([(math.inf, math.inf, math.inf), (0.1, 0.1, 0.1)], limits) == 0


def test_runs_stop_where_their_loss_is_over_the_bar(sine_task, tiny_settings):
    """Runs with a bar stop, all seeds of a loss together, at the first checkpoint where
    their mean is over it; the points they reached are those of runs trained to the end.
    A loss whose runs are not all in the call is never stopped (its mean is unknown)."""
    payload = (sine_task, tiny_settings, 0)
    runs = [("abs(f - y)", (), 40, seed, 0.01, True, 4) for seed in (3, 4)]
    full = validation_metrics(payload, runs)
    means = [sum(point) / 2 for point in zip(*full, strict=True)]
    bar = (2, means[0], means[1] * 0.9, math.inf, math.inf)  # over at the second point
    stopped = validation_metrics(payload, [(*run, bar) for run in runs])
    assert [len(curve) for curve in stopped] == [2, 2]
    assert all(curve == tuple(whole[:2]) for curve, whole in zip(stopped, full, strict=True))
    assert first_over(stopped, bar[1:]) == 1
    within = (2, *(m + 1 for m in means))
    assert validation_metrics(payload, [(*run, within) for run in runs]) == full
    assert validation_metrics(payload, [(*runs[0], bar)]) == [full[0]]  # one of two seeds
