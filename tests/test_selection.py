"""Final selection: the best few losses, the tuned and the plain baseline, retrained longer."""

from __future__ import annotations

import json
import math

import pytest

from symloss import batched, selection, step_size
from symloss.config import Settings
from symloss.expression import Expression
from symloss.kinds import CLASSIFICATION
from symloss.records import CACHED, OK, REJECTED, Evaluation
from symloss.runs import TrainingCache
from symloss.selection import ADAM_CHECKPOINTS, SELECTION_SEED_OFFSET, Selection, finalists, select
from symloss.step_size import validation_metric, validation_metrics
from symloss.task import make_task, resolve_data

BASELINE = Expression.parse("square(f - y)")


def record(text, fitness, status=OK, weights=()):
    return Evaluation(text, Expression.parse(text).key(), status, fitness=fitness,
                      weights=weights)


def test_finalists_are_the_best_distinct_plus_both_baselines():
    evaluations = [
        record("abs(f - y)", 0.5, weights=(1.0, 1.1, 0.9)),
        record("square(f - y)", 0.9, weights=(1.2, 1.0, 1.0)),  # the baseline, tuned
        record("log(1 + square(f - y))", 0.4, weights=(1.0,) * 6),
        record("square(y - f)", 0.3, weights=(1.0,) * 3),  # same key as the baseline
        record("tanh(square(f - y))", 0.2, status=REJECTED),
        record("abs(y - f)", 0.5, status=CACHED),
        record("sqrt(f - y)", math.inf),
    ]
    chosen = finalists(evaluations, BASELINE, k=2)
    texts = [e.expression for e in chosen]
    # best two distinct keys by fitness: square(y - f) (baseline key) and log(...)
    assert texts[:2] == ["square(y - f)", "log(1 + square(f - y))"]
    # the plain baseline (unit weights) is always a finalist, not yet scored
    plain = chosen[-1]
    assert plain.expression == "square(f - y)" and plain.weights == () and plain.fitness == math.inf
    assert len(chosen) == 3


def test_tuned_baseline_joins_when_not_among_the_best():
    evaluations = [record("abs(f - y)", 0.1, weights=(1.0,) * 3),
                   record("square(f - y)", 0.9, weights=(1.1, 1.0, 1.0))]
    chosen = finalists(evaluations, BASELINE, k=1)
    assert [(e.expression, bool(e.weights)) for e in chosen] == [
        ("abs(f - y)", True), ("square(f - y)", True), ("square(f - y)", False)]


def test_a_plain_baseline_record_is_reused():
    plain = record("square(f - y)", 0.7)  # local search off: no weights
    chosen = finalists([record("abs(f - y)", 0.1), plain], BASELINE, k=1)
    assert chosen == [chosen[0], plain]


def test_select_ranks_by_mean_validation_metric(sine_task, tiny_settings):
    settings = tiny_settings.replace(selection_top_k=2, selection_seeds=2, selection_steps=40,
                                     fitness_steps=20, normalize=False,
                                     selection_lr_width=0, selection_adam_lr=0.0)
    evaluations = [record("square(f - y) * 0.001", 0.1),  # barely trains: must rank last
                   record("abs(f - y)", 0.2)]
    ranked = select(sine_task, settings, evaluations, seed=0)
    assert [r.evaluation.expression for r in ranked][-1] == "square(f - y) * 0.001"
    assert all(len(r.metrics) == 2 for r in ranked)
    assert [r.mean for r in ranked] == sorted(r.mean for r in ranked)
    plain = next(r for r in ranked if r.evaluation.expression == "square(f - y)")
    assert math.isfinite(plain.evaluation.fitness)  # scored like the search would
    expected = validation_metric((sine_task, settings, 0),
                                 ("abs(f - y)", (), 40, SELECTION_SEED_OFFSET, settings.lr))
    absolute = next(r for r in ranked if r.evaluation.expression == "abs(f - y)")
    assert absolute.metrics[0] == expected
    again = select(sine_task, settings, evaluations, seed=0, executor=("process", 2))
    assert [(r.evaluation.expression, r.metrics) for r in again] == [
        (r.evaluation.expression, r.metrics) for r in ranked]


def test_each_finalist_is_scored_at_its_best_rate(sine_task, tiny_settings):
    """Normalised, a scaled copy of a loss is the same loss; each finalist gets the rate
    of the grid where its mean validation metric is lowest, the baseline too."""
    settings = tiny_settings.replace(selection_top_k=2, selection_seeds=2, selection_steps=40,
                                     fitness_steps=20, lr=0.01, selection_lr_width=1)
    evaluations = [record("abs(f - y)", 0.2), record("square(f - y) * 0.001", 0.1)]
    ranked = select(sine_task, settings, evaluations, seed=0)
    for r in ranked:
        assert {0.003, 0.01, 0.03} <= set(r.by_lr)
        assert r.mean == r.by_lr[r.lr] == min(r.by_lr.values())
    scaled = next(r for r in ranked if r.evaluation.expression == "square(f - y) * 0.001")
    plain = next(r for r in ranked if r.evaluation.expression == "square(f - y)")
    assert scaled.metrics == pytest.approx(plain.metrics, rel=1e-4)
    assert scaled.to_dict()["lr"] == scaled.lr


def test_a_diverging_finalist_has_infinite_mean():
    assert Selection(record("abs(f - y)", 0.1), (0.2, math.inf)).mean == math.inf
    assert Selection(record("abs(f - y)", 0.1), (0.2, 0.4)).mean == pytest.approx(0.3)
    row = Selection(record("abs(f - y)", 0.1), (math.inf,)).to_dict()
    assert row["metrics"] == [None] and row["mean"] is None


def test_metatest_seeds_avoid_the_search_seed():
    settings = Settings()
    assert settings.metatest_seeds_for(0) == (1, 2, 3, 4, 5)
    assert settings.metatest_seeds_for(3) == (1, 2, 6, 4, 5)
    assert Settings(metatest_seeds=(1, 2)).metatest_seeds_for(2) == (1, 3)
    assert 3 not in settings.metatest_seeds_for(3)
    assert len(set(settings.metatest_seeds_for(6))) == 5


def test_selection_rates_sit_on_the_ladder_around_the_search_rate():
    from symloss.selection import selection_rates

    assert selection_rates(Settings(lr=0.03)) == (0.01, 0.03, 0.1)
    assert selection_rates(Settings(lr=0.05)) == (0.01, 0.05, 0.1)  # off the ladder: kept
    assert selection_rates(Settings(lr=0.1, selection_lr_width=0)) == (0.1,)


def test_a_loss_that_trains_worse_with_adam_cannot_win(sine_task, tiny_settings):
    """Every finalist no worse than the plain baseline with SGD is also trained with Adam;
    a learned loss that does worse there than the plain baseline is ranked after every
    eligible finalist, whatever its SGD mean."""
    settings = tiny_settings.replace(selection_top_k=2, selection_seeds=2, selection_steps=60,
                                     fitness_steps=20, lr=0.03, selection_lr_width=0,
                                     selection_adam_lr=0.01)
    evaluations = [record("abs(f - y)", 0.1), record("square(f - y) * 0.001", 0.2)]
    ranked = select(sine_task, settings, evaluations, seed=0)
    plain = next(r for r in ranked if r.evaluation.expression == "square(f - y)"
                 and not r.evaluation.weights)
    absolute = next(r for r in ranked if r.evaluation.expression == "abs(f - y)")
    assert absolute.mean <= plain.mean  # so that Adam decides
    assert all(len(r.adam_metrics) == 2 and r.adam_curve[-1] == r.adam_mean for r in ranked)
    # the median regression loss fits the sine's mean worse with Adam than squared error:
    # its Adam runs stop at the first checkpoint where it is behind
    assert not absolute.eligible and absolute.adam_curve[-1] > plain.adam_curve[
        len(absolute.adam_curve) - 1]
    reached = len(absolute.adam_curve)
    assert all(ours <= theirs for ours, theirs in zip(absolute.adam_curve[:-1],
                                                      plain.adam_curve[:reached - 1],
                                                      strict=True))
    # stopped or not, the points it reached are those of runs trained to the end
    full = validation_metrics((sine_task, settings, 0), [
        ("abs(f - y)", (), 60, s, 0.01, True, ADAM_CHECKPOINTS)
        for s in (SELECTION_SEED_OFFSET, SELECTION_SEED_OFFSET + 1)])
    assert absolute.adam_metrics == tuple(curve[reached - 1] for curve in full)
    # normalised, 0.001 * MSE is MSE, and Adam ignores scale anyway: eligible
    scaled = next(r for r in ranked if r.evaluation.expression == "square(f - y) * 0.001")
    assert scaled.eligible and scaled.adam_metrics == pytest.approx(plain.adam_metrics, rel=1e-4)
    assert len(plain.adam_curve) == len(scaled.adam_curve) == ADAM_CHECKPOINTS
    assert ranked.index(absolute) > max(ranked.index(plain), ranked.index(scaled))
    assert absolute.to_dict()["eligible"] is False


def test_the_score_averages_both_loops_when_adam_ran():
    evaluation = record("abs(f - y)", 0.1)
    sgd_only = Selection(evaluation, (0.2, 0.4))
    assert sgd_only.score == pytest.approx(0.3)
    both = Selection(evaluation, (0.2, 0.4), adam_metrics=(0.1, 0.1),
                     adam_curve=(0.5, 0.3, 0.1))
    assert both.score == pytest.approx(0.2)
    data = both.to_dict()
    assert data["score"] == pytest.approx(0.2) and data["adam_curve"] == [0.5, 0.3, 0.1]


def test_a_learned_loss_must_match_the_plain_baseline_in_both_loops_throughout():
    from symloss.selection import _no_worse

    plain = Selection(record("square(f - y)", 0.2), (0.20, 0.20), adam_metrics=(0.10, 0.10),
                      adam_curve=(0.30, 0.20, 0.15, 0.10))

    def finalist(sgd, curve):
        return Selection(record("abs(f - y)", 0.1), (sgd, sgd),
                         adam_metrics=(curve[-1],) * 2, adam_curve=curve)

    assert _no_worse(finalist(0.20, (0.30, 0.20, 0.15, 0.10)), plain)  # ties are enough
    assert _no_worse(finalist(0.19, (0.25, 0.18, 0.12, 0.08)), plain)
    # ahead with Adam at the end, but behind a quarter of the way in: a loop that stops
    # early would lose
    assert not _no_worse(finalist(0.19, (0.35, 0.18, 0.12, 0.08)), plain)
    # ahead with Adam throughout, behind with SGD at its best rate
    assert not _no_worse(finalist(0.21, (0.25, 0.18, 0.12, 0.08)), plain)


def test_a_finalist_beaten_with_sgd_is_not_trained_with_adam(sine_task, tiny_settings):
    """Worse than the plain baseline with SGD, it cannot be chosen whatever Adam shows:
    its Adam runs are skipped, and it is ineligible."""
    settings = tiny_settings.replace(selection_top_k=1, selection_seeds=2, selection_steps=60,
                                     fitness_steps=20, lr=0.01, selection_lr_width=0,
                                     selection_adam_lr=0.01)
    ranked = select(sine_task, settings, [record("abs(f - y)", 0.1)], seed=0)
    plain = next(r for r in ranked if r.evaluation.expression == "square(f - y)"
                 and not r.evaluation.weights)
    absolute = next(r for r in ranked if r.evaluation.expression == "abs(f - y)")
    assert absolute.mean > plain.mean
    assert absolute.adam_metrics == () and absolute.adam_curve == () and not absolute.eligible
    assert len(plain.adam_metrics) == 2 and ranked[0] is not absolute
    assert absolute.to_dict()["adam_metrics"] == []


def test_a_repeated_selection_reads_its_runs_from_the_run_directory(
        sine_task, tiny_settings, tmp_path):
    """The run directory's training cache: the second selection trains nothing (the
    file does not grow) and ranks the same; an inf (a diverged run) comes back as inf;
    lines of another version and torn lines are ignored."""
    settings = tiny_settings.replace(selection_top_k=2, selection_seeds=2, selection_steps=30,
                                     fitness_steps=20, selection_lr_width=0,
                                     selection_adam_lr=0.01)
    evaluations = [record("abs(f - y)", 0.1), record("square(f - y) * 1e30", 0.2)]
    path = tmp_path / "training.jsonl"
    first = select(sine_task, settings, evaluations, seed=0, cache=TrainingCache(path))
    written = path.read_text()
    assert len(written.splitlines()) > 0
    again = select(sine_task, settings, evaluations, seed=0, cache=TrainingCache(path))
    assert path.read_text() == written
    assert [(r.evaluation.expression, r.metrics, r.adam_metrics) for r in again] == [
        (r.evaluation.expression, r.metrics, r.adam_metrics) for r in first]
    assert [r.metrics for r in first] == [r.metrics for r in select(
        sine_task, settings, evaluations, seed=0)]
    # another version's results, and a torn line, are not read
    entry = json.loads(written.splitlines()[0])
    path.write_text(json.dumps({**entry, "version": "0.0.1", "value": 123.0}) + "\n{\"ver")
    cache = TrainingCache(path)
    assert entry["item"] not in cache
    cache.add([(entry["item"], None)])
    assert TrainingCache(path)[entry["item"]] is None


@pytest.mark.parametrize("data", ["digits", "sine"])
def test_stacked_runs_and_skipped_adam_runs_decide_as_the_full_selection(
        data, tiny_settings, monkeypatch):
    """The chosen loss and its rate, on three seeds, are those of the full selection:
    every run trained one at a time with ``train`` and every finalist run with Adam."""
    arrays, kind = resolve_data(data)
    task = make_task(arrays, "mlp", task=kind)
    texts = [text for text in ("-(y * log(f))", "square(f - y)", "abs(f - y)",
                               "log(1 + square(f - y))", "sqrt(1 + square(f - y)) - 1")
             if kind == CLASSIFICATION or "log(f)" not in text]
    evaluations = [record(text, 0.1 + i / 100) for i, text in enumerate(texts)]
    settings = tiny_settings.replace(selection_top_k=3, selection_seeds=2, selection_steps=80,
                                     fitness_steps=20, lr=0.03, selection_adam_lr=0.003)
    fast = [select(task, settings, evaluations, seed=seed)[0] for seed in range(3)]
    monkeypatch.setattr(selection, "_adam_contenders", lambda means, plain: list(range(len(means))))
    for module in (step_size, batched):
        monkeypatch.setattr(module, "batch_rule", lambda model, device="cpu": "one at a time")
    full = [select(task, settings, evaluations, seed=seed)[0] for seed in range(3)]
    assert [(r.evaluation.expression, r.evaluation.weights, r.lr) for r in fast] == [
        (r.evaluation.expression, r.evaluation.weights, r.lr) for r in full]
    for ours, theirs in zip(fast, full, strict=True):
        assert ours.metrics == pytest.approx(theirs.metrics, abs=0.02)
