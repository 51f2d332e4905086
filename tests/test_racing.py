"""Racing: a candidate far behind the best earlier one after a short run is stopped
there, deterministically, and only when racing can matter."""

from __future__ import annotations

import math

import pytest

from symloss.config import Settings
from symloss.evaluator import Evaluator
from symloss.executors import make_executor
from symloss.racing import race_steps, short_run_metric
from symloss.records import OK, REJECTED
from symloss.scale import search_loss
from symloss.scoring import score

SLOW = "square(f - y) * 0.001"  # trains, but 1000x slower than squared error


@pytest.fixture(scope="module")
def settings(tiny_settings):
    # not normalised: scaled by 0.001, SLOW keeps its small steps
    return tiny_settings.replace(meta_steps=2, fitness_steps=40, lr=0.05, batch_size=32,
                                 normalize=False)


def test_a_far_behind_candidate_is_stopped_after_the_short_run(diabetes_task, settings):
    ev = Evaluator(diabetes_task, settings)
    (best,) = ev.evaluate_many(["square(f - y)"])
    assert best.status == OK
    slow, close = ev.evaluate_many([SLOW, "abs(f - y)"])
    assert slow.status == REJECTED and slow.reason.startswith("raced: validation MSE")
    assert f"after {race_steps(settings)} of 40 steps" in slow.reason
    assert set(slow.timings) >= {"poor_training", "race"}
    assert "local_search" not in slow.timings and "fitness" not in slow.timings
    # it keeps its short-run metric as fitness, so the search can still rank it
    expected = short_run_metric(diabetes_task, search_loss(diabetes_task, settings, SLOW),
                                settings, 0)
    assert slow.fitness == expected and math.isfinite(expected)
    assert close.status == OK and "race" in close.timings
    assert ev.n_trained == 2


def test_the_first_generation_and_racing_off_train_everything(diabetes_task, settings):
    first = Evaluator(diabetes_task, settings).evaluate_many(["square(f - y)", SLOW])
    assert [e.status for e in first] == [OK, OK] and "race" not in first[1].timings
    off = Evaluator(diabetes_task, settings.replace(race_ratio=0.0))
    off.evaluate("square(f - y)")
    assert off.evaluate(SLOW).status == OK
    plain = Evaluator(diabetes_task, settings.replace(local_search=False))
    plain.evaluate("square(f - y)")
    assert plain.evaluate(SLOW).status == OK  # racing skips local searches only


def test_no_race_where_no_error_rate_could_lose(digits_task, settings):
    """At chance level after the short run, 1.5x the best's error rate is above 1."""
    ev = Evaluator(digits_task, settings.replace(lr=0.001))
    ev.evaluate("-(y * log(f))")
    assert ev._race_limit() is None


def test_racing_gives_the_same_results_in_a_pool(diabetes_task, settings):
    generations = [["square(f - y)", "abs(f - y)"], [SLOW, "log(1 + square(f - y))", "f * y"]]
    local = Evaluator(diabetes_task, settings, seed=3)
    expected = [local.evaluate_many(g) for g in generations]
    executor = make_executor("process", 2, score, (diabetes_task, settings, 3))
    try:
        pooled = Evaluator(diabetes_task, settings, seed=3, executor=executor)
        results = [pooled.evaluate_many(g) for g in generations]
    finally:
        executor.close()
    assert expected[1][0].reason.startswith("raced:")
    for want, got in zip(expected, results, strict=True):
        assert [(e.status, e.fitness, e.weights, e.reason) for e in got] == [
            (e.status, e.fitness, e.weights, e.reason) for e in want]


@pytest.mark.parametrize(("changes", "message"), [
    ({"race_ratio": 0.5}, "race_ratio must be 0"),
    ({"race_fraction": 1.0}, r"race_fraction must be in \(0, 1\)"),
])
def test_race_settings_are_checked(changes, message):
    with pytest.raises(ValueError, match=message):
        Settings(**changes)
