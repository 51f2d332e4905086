"""benchmarks/local_search.py's ``--fitness-seeds``: the means it prints are the plain
means of fitness runs on the further seeds, of the weights the evaluator refines to."""

from __future__ import annotations

import math
import statistics

import pytest

from symloss.evaluator import Evaluator
from symloss.local_search import local_search
from symloss.records import OK, Evaluation
from symloss.scale import reference_batch, search_loss
from symloss.training import sgd_settings, train


@pytest.fixture(scope="module")
def bench(benchmark_script):
    return benchmark_script("local_search")


def test_seeds_mean_is_the_mean_of_fitness_runs(bench, digits_task, tiny_settings):
    settings = tiny_settings.replace(lr=0.1)
    reference = reference_batch(digits_task, 0)
    loss = search_loss(digits_task, settings, "square(f - y)", (), reference)
    expected = statistics.fmean(
        digits_task.metric(train(digits_task, loss, settings.fitness_steps,
                                 sgd_settings(settings), seed).model, digits_task.val)
        for seed in (1000, 1001))
    assert bench.seeds_mean(digits_task, settings, 0, "square(f - y)", (),
                            (1000, 1001)) == expected


def test_refined_weights_are_the_evaluators(digits_task, tiny_settings):
    """The benchmark recomputes a refinement as the evaluator does (meta-seed seed + 1,
    the search's reference batch): without the guard the record holds those weights."""
    settings = tiny_settings.replace(lr=0.1, local_search_guard=False)
    record = Evaluator(digits_task, settings, 3).evaluate("square(f - y)")
    assert record.status == OK and record.weights
    weights = local_search(digits_task, "square(f - y)", settings, 4,
                           reference_batch(digits_task, 3)).weights
    assert weights == tuple(record.weights)


def test_seeds_table_marks_kept_and_summarises(bench):
    records = {"online": [
        Evaluation(expression="a", key="a", status=OK, fitness=0.1, refined=True),
        Evaluation(expression="b", key="b", status=OK, fitness=0.2, refined=False),
    ]}
    means = {"unrefined": {"a": 0.2, "b": 0.1}, "online": {"a": 0.1, "b": 0.05}}
    text = bench.seeds_table("t", ["a", "b"], records, means, 2)
    assert "| `a` | 0.2000 | 0.1000* |" in text
    assert "| `b` | 0.1000 | 0.0500 |" in text
    # best unrefined 0.1 -> refined 0.05; kept: a refined (0.1), b plain (0.1)
    assert "| online | 0.1000 -> 0.0500 (0.1000) |" in text
    assert f"{math.sqrt(0.5 * 0.5):.3f} ({math.sqrt(0.5 * 1.0):.3f})" in text
