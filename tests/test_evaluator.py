"""The Evaluator: every rejection reason, caching, reuse, determinism, executors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from symloss.evaluator import Evaluator
from symloss.executors import ProcessExecutor, make_executor
from symloss.records import CACHED, OK, REJECTED, Evaluation
from symloss.scoring import score
from symloss.training import sgd_settings

CHEAP = ("y * y", "f - f + y", "sign(f - y)")


@pytest.fixture(scope="module")
def settings(tiny_settings):
    """Tiny budgets; lr high enough that 30 steps separate losses on the digits subset."""
    return tiny_settings.replace(lr=0.3)


@pytest.fixture(scope="module")
def plain(tiny_settings):
    """Tiny budgets without local search, lr 0.01 (for the sine task)."""
    return tiny_settings.replace(local_search=False)


@pytest.fixture(scope="module")
def digits_plain(settings):
    """The digits budgets without local search."""
    return settings.replace(local_search=False)


def test_structural_missing_f(sine_task, plain):
    ev = Evaluator(sine_task, plain)
    result = ev.evaluate("y * y")
    assert result.status == REJECTED and result.reason == "structural: does not use f"
    assert result.fitness == math.inf and not result.ok


def test_structural_constant_in_f(sine_task, plain):
    result = Evaluator(sine_task, plain).evaluate("f - f + y")
    assert result.status == REJECTED
    assert result.reason == "structural: constant in f after expansion"


def test_flat_gradient(sine_task, plain):
    result = Evaluator(sine_task, plain).evaluate("sign(f - y)")
    assert result.status == REJECTED and result.reason.startswith("flat:")


@pytest.mark.parametrize("text", ["f * y", "-square(f - y)"])
def test_poor_training_rejects_wrong_direction(sine_task, plain, text):
    result = Evaluator(sine_task, plain).evaluate(text)
    assert result.status == REJECTED and result.reason.startswith("poor training:")
    assert "poor_training" in result.timings and "fitness" not in result.timings


def test_cheap_rejections_cost_no_training(sine_task, settings):
    ev = Evaluator(sine_task, settings)
    for result in ev.evaluate_many([*CHEAP, "f * y"]):
        assert result.status == REJECTED
        assert "fitness" not in result.timings and "local_search" not in result.timings
        assert result.weights == ()
    assert ev.n_trained == 0


def test_commuted_product_is_cached_with_the_same_fitness(digits_task, digits_plain):
    ev = Evaluator(digits_task, digits_plain)
    first, second = ev.evaluate_many(["-(f * y)", "-(y * f)"])
    assert first.status == OK and math.isfinite(first.fitness)
    assert second.status == CACHED and second.reason == "same expression as -(f * y)"
    assert second.key == first.key and second.fitness == first.fitness and second.ok
    assert ev.n_trained == 1
    # across calls too, and for a rejected source
    third = ev.evaluate("-(y * f)")
    assert third.status == CACHED and third.fitness == first.fitness
    rejected, follower = ev.evaluate_many(["f * y", "y * f"])
    assert rejected.status == REJECTED and follower.status == CACHED
    assert follower.fitness == rejected.fitness == math.inf and not follower.ok
    assert follower.source_status == REJECTED and second.source_status == OK
    assert ev.n_trained == 1


def test_a_candidate_reusing_a_raced_result_is_not_ok():
    # racing keeps the short run's (finite) metric, so that the search can rank it
    raced = Evaluation("abs(f - y)", "k", REJECTED, fitness=0.4, reason="raced: ...")
    follower = Evaluation("abs(y - f)", "k", CACHED, fitness=0.4,
                          reason="same expression as abs(f - y)", source_status=REJECTED)
    assert not raced.ok and not follower.ok
    assert Evaluation.from_dict(follower.to_dict()) == follower
    older = {k: v for k, v in follower.to_dict().items() if k != "source_status"}
    assert Evaluation.from_dict(older).source_status == ""  # records written before it


@pytest.mark.parametrize("normalize", [True, False])
def test_gradient_equivalence(sine_task, plain, normalize):
    ev = Evaluator(sine_task, plain.replace(normalize=normalize))
    base, shifted, scaled = ev.evaluate_many(
        ["square(f - y)", "square(f - y) + y", "square(f - y) * 2"]
    )
    assert base.status == OK and base.key != shifted.key
    assert shifted.status == CACHED and shifted.reason == "same gradient as square(f - y)"
    assert shifted.fitness == base.fitness
    assert "fingerprint" in shifted.timings and "fitness" not in shifted.timings
    if normalize:  # a multiple of a loss is the same normalised loss
        assert scaled.status == CACHED and scaled.fitness == base.fitness
        assert ev.n_trained == 1
    else:  # a different gradient is trained
        assert scaled.status == OK
        assert ev.n_trained == 2


def test_exploding_loss_rejected_without_crash(sine_task, plain):
    # unnormalised: normalised to the baseline's gradient at initialisation, the
    # eighth power trains without diverging in these few steps
    ev = Evaluator(sine_task, plain.replace(normalize=False))
    probe_inf, trained_inf, fine = ev.evaluate_many(
        ["square(1e30 * (f - y))", "square(square(square(f - y)))", "log(f - y)"]
    )
    assert probe_inf.status == REJECTED and probe_inf.reason.startswith("non-finite:")
    assert trained_inf.status == REJECTED
    assert trained_inf.reason.startswith("non-finite: training loss became NaN/inf")
    assert trained_inf.fitness == math.inf and "fitness" in trained_inf.timings
    assert fine.status == OK and math.isfinite(fine.fitness)  # protected log


def test_ok_record_has_weights_and_timings(digits_task, settings):
    ev = Evaluator(digits_task, settings)
    result = ev.evaluate("-(y * log(f))")
    assert result.status == OK and 0.0 <= result.fitness < 0.9
    assert result.fitness == min(result.unrefined_fitness, result.refined_fitness)
    assert len(result.weights) == (5 if result.refined else 0)
    assert all(math.isfinite(w) for w in result.weights)
    stages = {"key", "structural", "fingerprint", "poor_training", "local_search", "fitness",
              "refined_fitness"}
    assert set(result.timings) == stages
    assert Evaluation.from_dict(result.to_dict()) == result


def test_determinism_across_evaluators(digits_task, settings):
    texts = ["-(y * log(f))", "square(f - y)", "abs(f - y)"]
    a = Evaluator(digits_task, settings, seed=4).evaluate_many(texts)
    b = Evaluator(digits_task, settings, seed=4).evaluate_many(texts)
    fields = ("fitness", "weights", "refined", "unrefined_fitness", "refined_fitness")
    assert [[getattr(r, f) for f in fields] for r in a] == [
        [getattr(r, f) for f in fields] for r in b]
    assert all(r.status == OK for r in a)
    c = Evaluator(digits_task, settings, seed=5).evaluate_many(texts[:1])
    assert c[0].refined_fitness != a[0].refined_fitness


@pytest.fixture(scope="module")
def guarded(tiny_settings):
    """Tiny budgets for the diabetes task, where 30 steps separate the losses."""
    return tiny_settings


def test_guard_keeps_the_plain_expression_when_refinement_makes_it_worse(
    diabetes_task, guarded
):
    # a meta-rate of 1 throws the weights far from 1: the refined loss trains worse
    settings = guarded.replace(meta_lr=1.0)
    result = Evaluator(diabetes_task, settings).evaluate("square(f - y)")
    assert result.status == OK and not result.refined and result.weights == ()
    assert result.refined_fitness > result.unrefined_fitness == result.fitness
    unguarded = Evaluator(diabetes_task, settings.replace(local_search_guard=False))
    refined = unguarded.evaluate("square(f - y)")
    assert refined.refined and refined.fitness == result.refined_fitness
    assert len(refined.weights) == 3 and refined.unrefined_fitness is None


def test_guard_keeps_the_refined_loss_when_it_trains_better(diabetes_task, guarded):
    # unnormalised and at a tiny rate, the refinement learns to take larger steps
    settings = guarded.replace(normalize=False, lr=0.001, lr_grid=(), meta_lr=0.5)
    result = Evaluator(diabetes_task, settings).evaluate("square(f - y)")
    assert result.status == OK and result.refined and len(result.weights) == 3
    assert result.fitness == result.refined_fitness < result.unrefined_fitness
    plain = Evaluator(diabetes_task, settings.replace(local_search=False))
    assert plain.evaluate("square(f - y)").fitness == result.unrefined_fitness


def test_guarded_plain_run_continues_the_race(diabetes_task, guarded):
    """The race's short run is the start of the plain fitness run: continuing it gives
    the fitness an uninterrupted run gives."""
    texts = ["square(f - y)", "abs(f - y)"]
    ev = Evaluator(diabetes_task, guarded)
    ev.evaluate(texts[0])
    raced = ev.evaluate(texts[1])
    assert "race" in raced.timings and raced.status == OK
    plain = Evaluator(diabetes_task, guarded.replace(local_search=False)).evaluate(texts[1])
    assert raced.unrefined_fitness == plain.fitness


def test_records_without_the_guard_fields_load():
    old = {"expression": "square(f - y)", "key": "k", "status": OK, "fitness": 0.5,
           "weights": [1.1, 0.9, 1.0]}
    loaded = Evaluation.from_dict(old)
    assert loaded.refined and loaded.unrefined_fitness is None is loaded.refined_fitness
    assert not Evaluation.from_dict({**old, "weights": []}).refined
    diverged = Evaluation("f", "f", OK, 0.5, refined=False, unrefined_fitness=0.5,
                          refined_fitness=math.inf)
    assert Evaluation.from_dict(diverged.to_dict()) == diverged


def test_evaluate_many_returns_in_order(sine_task, plain):
    texts = ["abs(f - y)", "y * y", "square(f - y)", "y * f", "f * y", "sign(f - y)",
             "square(f - y) + y", "abs(y - f)"]
    results = Evaluator(sine_task, plain).evaluate_many(texts)
    assert [r.expression for r in results] == texts
    assert [r.status for r in results] == [OK, REJECTED, OK, REJECTED, CACHED, REJECTED,
                                           CACHED, CACHED]
    assert results[4].reason == "same expression as y * f"
    assert results[6].reason == "same gradient as square(f - y)"
    assert results[7].fitness == results[0].fitness


def test_known_records_are_reused_without_training(sine_task, plain):
    texts = ["square(f - y)", "abs(f - y)", "f * y", "y * y", "square(f - y) + y"]
    first = Evaluator(sine_task, plain).evaluate_many(texts)
    resumed = Evaluator(sine_task, plain, known=first)
    again = resumed.evaluate_many(texts)
    assert resumed.n_trained == 0
    assert [r.fitness for r in again] == [r.fitness for r in first]
    assert [r.status for r in again] == [r.status for r in first]
    # a record found by key under another spelling
    other = resumed.evaluate("abs(y - f)")
    assert other.fitness == first[1].fitness and resumed.n_trained == 0
    # round-tripped through JSON (as a run directory stores them)
    reloaded = Evaluator(sine_task, plain,
                         known=[Evaluation.from_dict(r.to_dict()) for r in first])
    assert [r.fitness for r in reloaded.evaluate_many(texts[:2])] == [
        r.fitness for r in first[:2]]
    assert reloaded.n_trained == 0


def test_process_pool_matches_in_process(digits_task, settings):
    texts = ["-(y * log(f))", "square(f - y)", "-(f * y)", "y * y", "abs(f - y)"]
    local = Evaluator(digits_task, settings, seed=2).evaluate_many(texts)
    executor = make_executor("process", 2, score, (digits_task, settings, 2))
    try:
        assert isinstance(executor, ProcessExecutor)
        pooled_ev = Evaluator(digits_task, settings, seed=2, executor=executor)
        pooled = pooled_ev.evaluate_many(texts)
    finally:
        executor.close()
    # on softmax outputs abs(f - y) sums to 2 * (1 - f_true): normalised, -(f * y)
    assert pooled_ev.n_trained == 3 and pooled[4].reason == "same gradient as -(f * y)"
    for a, b in zip(local, pooled, strict=True):
        assert (a.status, a.fitness, a.weights, a.reason) == (b.status, b.fitness, b.weights,
                                                               b.reason)


def test_fitness_equals_a_plain_torch_loop(diabetes_task, tiny_settings):
    settings = tiny_settings.replace(local_search=False, fitness_steps=40, lr=0.05, batch_size=32)
    result = Evaluator(diabetes_task, settings, seed=7).evaluate("square(f - y)")
    assert result.status == OK and result.weights == ()

    task, seed = diabetes_task, 7
    model = task.new_model(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(40):
        x, y = task.train.batch(32, generator)
        loss = F.mse_loss(model(x).reshape(-1), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        mse = float(F.mse_loss(model(task.val.x).reshape(-1).double(), task.val.y.double()))
    assert result.fitness == pytest.approx(mse, rel=1e-6, abs=1e-7)


def test_score_directly(sine_task, plain):
    fields = score((sine_task, plain, 0), "square(f - y)").fields
    assert fields["status"] == OK and fields["weights"] == ()
    assert set(fields["timings"]) == {"poor_training", "fitness"}
    rejected = score((sine_task, plain, 0), "f * y").fields
    assert rejected["status"] == REJECTED and rejected["reason"].startswith("poor training:")
    assert set(rejected["timings"]) == {"poor_training"}
    assert sgd_settings(plain).lr == plain.lr and sgd_settings(plain).batch_size == 64


def test_the_evaluator_builds_its_pool_from_kind_and_workers(sine_task, plain):
    """``executor=(kind, n_jobs)``: the evaluator builds the pool itself (with the scoring
    function and payload it needs) and releases it on close; results are those of an
    in-process evaluation."""
    candidates = ["square(f - y)", "abs(f - y)", "log(1 + square(f - y))"]
    settings = plain.replace(population_size=3)
    pooled = Evaluator(sine_task, settings, 0, ("process", 2))
    try:
        assert pooled.executor.futures  # a process pool: speculation can use it
        results = pooled.evaluate_many(candidates)
    finally:
        pooled.close()
    alone = Evaluator(sine_task, settings, 0).evaluate_many(candidates)
    assert [(e.status, e.fitness, e.weights) for e in results] == [
        (e.status, e.fitness, e.weights) for e in alone]
