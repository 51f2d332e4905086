"""Local search: unrolled differentiation of the edge weights lowers the meta-objective."""

from __future__ import annotations

import math

import pytest
import torch

import symloss.local_search as local_search_module
from symloss.local_search import initial_weights, local_search, online_steps, unrolled_objective
from symloss.network import LearnedLoss
from symloss.task import make_task, resolve_data
from symloss.training import SGDSettings

MIS_SCALED = "square(f - y) * 0.01"  # gradients 100x too small: one SGD step barely moves


@pytest.fixture(scope="module")
def search_settings(tiny_settings):
    return tiny_settings.replace(meta_steps=20, meta_lr=0.1, unroll_steps=5,
                                 meta_batch_size=64, lr=0.01, local_search_method="unrolled")


def _averaged_objective(task, weights, unroll_steps, lr, seeds=(100, 101, 102, 103)):
    """The meta-objective on the whole validation split, averaged over fixed seeds."""
    loss = LearnedLoss(MIS_SCALED, task.kind)
    w = torch.as_tensor(weights, dtype=torch.float64)
    values = []
    for seed in seeds:
        model = task.new_model(seed)
        params = {k: v.detach() for k, v in model.named_parameters()}
        buffers = {k: v.detach() for k, v in model.named_buffers()}
        generator = torch.Generator().manual_seed(seed)
        batches = [task.train.batch(64, generator) for _ in range(unroll_steps)]
        value = unrolled_objective(task, model, params, buffers,
                                   lambda out, target: loss(out, target, w), batches,
                                   (task.val.x, task.val.y), SGDSettings(lr=lr))
        values.append(value.item())
    return sum(values) / len(values)


def test_initial_weights():
    w = initial_weights(6, 1e-3, seed=0)
    assert w.dtype == torch.float64 and w.shape == (6,)
    assert torch.equal(w, initial_weights(6, 1e-3, seed=0))
    assert not torch.equal(w, initial_weights(6, 1e-3, seed=1))
    assert (w - 1).abs().max() < 5e-3 and (w != 1).all()
    assert torch.equal(initial_weights(4, 0.0, seed=3), torch.ones(4, dtype=torch.float64))


def test_local_search_lowers_the_meta_objective(diabetes_task, search_settings):
    loss = LearnedLoss(MIS_SCALED, diabetes_task.kind)
    start = initial_weights(loss.network.n_edges, search_settings.weight_init_std, 0)
    result = local_search(diabetes_task, MIS_SCALED, search_settings, seed=0)
    assert not result.stopped_early
    assert len(result.objective) == 20 and all(math.isfinite(v) for v in result.objective)
    assert len(result.weights) == loss.network.n_edges == 5
    before = _averaged_objective(diabetes_task, start, 5, search_settings.lr)
    after = _averaged_objective(diabetes_task, result.weights, 5, search_settings.lr)
    assert after < 0.6 * before, (before, after)
    # the search learned to take bigger steps: the loss's overall scale grew
    scaled = LearnedLoss(MIS_SCALED, diabetes_task.kind, result.weights)
    original = LearnedLoss(MIS_SCALED, diabetes_task.kind)
    x, y = diabetes_task.train.head(32)
    outputs = diabetes_task.outputs(diabetes_task.new_model(0), x)
    assert float(scaled(outputs, y)) > 2 * float(original(outputs, y))


def test_local_search_is_deterministic(diabetes_task, search_settings):
    settings = search_settings.replace(meta_steps=4)
    a = local_search(diabetes_task, MIS_SCALED, settings, seed=3)
    b = local_search(diabetes_task, MIS_SCALED, settings, seed=3)
    c = local_search(diabetes_task, MIS_SCALED, settings, seed=4)
    assert a == b
    assert a.weights != c.weights


def test_zero_meta_steps_returns_initial_weights(diabetes_task, search_settings):
    settings = search_settings.replace(meta_steps=0)
    result = local_search(diabetes_task, MIS_SCALED, settings, seed=2)
    expected = initial_weights(5, settings.weight_init_std, 2)
    assert result.weights == tuple(expected.tolist())
    assert result.objective == () and not result.stopped_early


def test_local_search_on_classification(digits_task, tiny_settings):
    settings = tiny_settings.replace(meta_steps=3, unroll_steps=1, lr=0.1)
    result = local_search(digits_task, "-(y * log(f))", settings, seed=0)
    assert len(result.weights) == 5 and len(result.objective) == 3
    assert all(math.isfinite(w) for w in result.weights)
    assert result.objective[0] == pytest.approx(math.log(10), rel=0.1)  # CE of a fresh model


@pytest.mark.parametrize("sgd", [
    SGDSettings(lr=0.5),
    SGDSettings(lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4),
], ids=repr)
def test_meta_objective_matches_stepped_model(diabetes_task, sgd):
    """With weights all ones, the meta-objective is the baseline after torch SGD steps."""
    loss = LearnedLoss(MIS_SCALED, diabetes_task.kind)
    model = diabetes_task.new_model(0)
    params = {k: v.detach() for k, v in model.named_parameters()}
    generator = torch.Generator().manual_seed(0)
    batches = [diabetes_task.train.batch(32, generator) for _ in range(3)]
    ones = torch.ones(5, dtype=torch.float64)
    value = unrolled_objective(diabetes_task, model, params, {},
                               lambda out, target: loss(out, target, ones), batches,
                               (diabetes_task.val.x, diabetes_task.val.y), sgd)

    manual = diabetes_task.new_model(0)
    optimizer = sgd.optimizer(manual)
    for x, y in batches:
        optimizer.zero_grad()
        loss(manual(x), y).backward()
        optimizer.step()
    expected = diabetes_task.base_loss(manual(diabetes_task.val.x), diabetes_task.val.y)
    assert value.item() == pytest.approx(float(expected.detach()), rel=1e-5)


def test_local_search_unrolls_the_fitness_optimiser(diabetes_task, search_settings):
    """Momentum, Nesterov and weight decay of the settings reach the unrolled steps."""
    plain = search_settings.replace(meta_steps=3)
    heavy = plain.replace(momentum=0.9, nesterov=True, weight_decay=5e-4)
    a = local_search(diabetes_task, MIS_SCALED, plain, seed=0)
    b = local_search(diabetes_task, MIS_SCALED, heavy, seed=0)
    # same models and batches: only the optimiser differs, and momentum takes bigger steps
    assert a.objective[0] != b.objective[0]
    assert b.objective[0] < a.objective[0]


def test_exploding_candidate_stops_early(sine_task, tiny_settings):
    settings = tiny_settings.replace(meta_steps=5, unroll_steps=3, lr=0.5)
    result = local_search(sine_task, "square(square(square(f - y))) * 1000", settings, seed=0)
    assert result.stopped_early
    assert all(math.isfinite(w) for w in result.weights)
    assert len(result.objective) < 5


def test_shared_meta_steps_give_the_fresh_result(diabetes_task, search_settings, monkeypatch):
    """Every candidate reuses one schedule of initialisations and batches per task; the
    result is the one of building each meta-step afresh."""
    module = local_search_module
    settings = search_settings.replace(meta_steps=6)
    shared = local_search(diabetes_task, MIS_SCALED, settings, seed=7)
    assert module._SCHEDULES[diabetes_task]  # kept for the next candidate
    again = local_search(diabetes_task, "abs(f - y)", settings, seed=7)
    monkeypatch.setattr(module, "_SCHEDULE_BYTES", 0)
    monkeypatch.setattr(module, "_SCHEDULES", module.weakref.WeakKeyDictionary())
    assert local_search(diabetes_task, MIS_SCALED, settings, seed=7) == shared
    assert local_search(diabetes_task, "abs(f - y)", settings, seed=7) == again
    assert not module._SCHEDULES  # over the budget: built step by step, not kept


def test_shared_meta_steps_are_not_changed_by_batch_norm(search_settings):
    """Batch norm updates its running statistics in place; one candidate's local search
    must not change the initial buffers the next candidate starts from."""
    data, kind = resolve_data("diabetes")

    def model() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(10, 8), torch.nn.BatchNorm1d(8),
                                   torch.nn.Linear(8, 1))

    task = make_task(data, model, task=kind)
    settings = search_settings.replace(meta_steps=4)
    first = local_search(task, MIS_SCALED, settings, seed=1)
    assert local_search(task, MIS_SCALED, settings, seed=1) == first
    schedule = next(iter(local_search_module._SCHEDULES[task].values()))
    assert all(torch.equal(s.buffers["1.running_mean"], torch.zeros(8)) for s in schedule)


def test_online_steps_cover_the_fitness_horizon(tiny_settings):
    quick = tiny_settings.replace(fitness_steps=300, meta_steps=40, unroll_steps=5)
    assert online_steps(quick) == (2, 5)
    assert online_steps(quick.replace(meta_steps=400)) == (0, 5)


def test_online_search_trains_one_model_on_and_restarts(diabetes_task, search_settings):
    # weights barely move (tiny meta-rate): the objective follows the model's training
    settings = search_settings.replace(local_search_method="online", meta_steps=12,
                                       meta_lr=1e-9, unroll_steps=2, fitness_steps=12,
                                       lr=0.05)
    result = local_search(diabetes_task, "square(f - y)", settings, seed=0)
    objective = result.objective
    assert len(objective) == 12 and not result.stopped_early
    # six meta-steps of two steps each train the model on; then a fresh one starts
    assert objective[5] < 0.8 * objective[0] and objective[6] > objective[5]
    fresh = local_search(diabetes_task, "square(f - y)",
                         settings.replace(local_search_method="unrolled"), seed=0)
    assert fresh.objective[5] > objective[5]
    assert local_search(diabetes_task, "square(f - y)", settings, seed=0) == result


def test_online_search_lowers_the_meta_objective(diabetes_task, search_settings):
    settings = search_settings.replace(local_search_method="online", fitness_steps=100)
    result = local_search(diabetes_task, MIS_SCALED, settings, seed=0)
    assert not result.stopped_early and len(result.objective) == 20
    scaled = LearnedLoss(MIS_SCALED, diabetes_task.kind, result.weights)
    original = LearnedLoss(MIS_SCALED, diabetes_task.kind)
    x, y = diabetes_task.train.head(32)
    outputs = diabetes_task.outputs(diabetes_task.new_model(0), x)
    # the mis-scaled loss trains too slowly along the whole run: its scale grows
    assert float(scaled(outputs, y)) > 2 * float(original(outputs, y))
