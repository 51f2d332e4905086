"""The batched trainer gives what training one model at a time gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from symloss.batched import Run, batch_rule, spread, train_many
from symloss.metaloss import prepare_outputs
from symloss.models import MLP
from symloss.network import LearnedLoss
from symloss.task import Task, make_task
from symloss.training import SGDSettings, TrainResult, train

CANDIDATES = ("-(y * log(f))", "square(f - y)", "abs(f - y) * 2", "-(y * log(f)) + f * f")


def _classification(model: str, shape: tuple[int, ...]) -> Task:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, *shape)).astype(np.float32)
    y = np.arange(120) % 3
    return make_task((x, y), model)


def _regression() -> Task:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 2)).astype(np.float32)
    return make_task((x, np.sin(x).astype(np.float32)), "mlp")


def _assert_same(batched: list[TrainResult], single: list[TrainResult], task: Task) -> None:
    assert len(batched) == len(single)
    for got, want in zip(batched, single, strict=True):
        assert (got.steps, got.diverged) == (want.steps, want.diverged)
        if want.diverged:
            continue
        for p, q in zip(got.model.parameters(), want.model.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
        assert [step for step, _ in got.curve] == [step for step, _ in want.curve]
        assert [m for _, m in got.curve] == pytest.approx([m for _, m in want.curve], abs=1e-6)
        assert task.metric(got.model, task.val) == pytest.approx(
            task.metric(want.model, task.val), abs=1e-6)


def _single(task: Task, runs: list[Run], steps: int, **curve) -> list[TrainResult]:
    return [train(task, r.loss, steps, r.sgd, r.seed, **curve) for r in runs]


@pytest.mark.parametrize(("model", "shape"), [("mlp", (5,)), ("linear", (5,)),
                                              ("lenet5", (1, 12, 12))])
def test_different_candidate_losses_train_as_they_do_alone(model, shape):
    task = _classification(model, shape)
    # at lr 0.05 (0.5 with Nesterov momentum) a ReLU or |f - y| near its kink amplifies
    # the rounding difference of stacked and single products past any tolerance within
    # 30 steps on some CPUs: a chaotic run, not a wrong one
    sgd = SGDSettings(lr=0.02, momentum=0.9, nesterov=True, weight_decay=1e-3, batch_size=16)
    runs = [Run(LearnedLoss(text, "classification", scale=1.0 + i / 4), i, sgd)
            for i, text in enumerate(CANDIDATES)]
    _assert_same(train_many(task, runs, 30, batched=True), _single(task, runs, 30), task)


def test_seeds_of_one_loss_and_several_rates_train_as_they_do_alone():
    task = _classification("mlp", (5,))
    runs = [Run(LearnedLoss("-(y * log(f))", "classification"), seed, SGDSettings(lr, 0.5))
            for seed in range(3) for lr in (0.01, 0.1)]
    runs.append(Run(nn.CrossEntropyLoss(), 7, SGDSettings(0.1, 0.5)))
    _assert_same(train_many(task, runs, 20), _single(task, runs, 20), task)


def test_losses_with_the_class_prior_train_as_they_do_alone():
    """The stacked outputs are [runs, batch, classes]: p is one value per last column."""
    task = _classification("mlp", (5,))
    prior = (0.5, 0.3, 0.2)
    sgd = SGDSettings(lr=0.05, batch_size=16)
    runs = [Run(LearnedLoss(text, "classification", class_prior=prior), seed, sgd)
            for seed, text in enumerate(("y * log(f) * log(p)", "y * log(f) * log(p)",
                                         "-(y * log(f)) * (1 - p)"))]
    _assert_same(train_many(task, runs, 20, batched=True), _single(task, runs, 20), task)


def test_adam_and_regression_and_curves_train_as_they_do_alone():
    task = _regression()
    sgd = SGDSettings(lr=0.01, adam=True, batch_size=8)
    runs = [Run(LearnedLoss(text, "regression"), seed, sgd)
            for seed, text in enumerate(("square(f - y)", "abs(f - y)", "square(f - y)"))]
    curve = {"curve_split": task.val, "curve_points": 4}
    _assert_same(train_many(task, runs, 20, **curve), _single(task, runs, 20, **curve), task)


def test_a_diverging_run_stops_where_it_would_alone_and_the_others_go_on():
    task = _regression()
    sgd = SGDSettings(lr=0.2, batch_size=8)
    runs = [Run(LearnedLoss(text, "regression"), 0, sgd)
            for text in ("square(f - y)", "square(f - y) * 1000")]
    batched = train_many(task, runs, 120)
    assert [(r.diverged, r.steps) for r in batched] == [(False, 120), (True, 50)]
    _assert_same(batched, _single(task, runs, 120), task)


class _Scaled(nn.Module):
    """A model the batched trainer does not know."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * 2


def test_the_rule_batches_known_small_models_only():
    assert batch_rule(_classification("mlp", (5,)).new_model(0)) is None
    lenet = _classification("lenet5", (1, 12, 12)).new_model(0)
    assert "convolutions" in batch_rule(lenet, "cpu")
    assert batch_rule(lenet, "cuda") is None
    assert "not one of" in batch_rule(_Scaled())
    with_buffer = MLP(5, 3)
    with_buffer.register_buffer("running_mean", torch.zeros(3))
    assert "buffers" in batch_rule(with_buffer)
    other_layer = MLP(5, 3)
    other_layer.layers[2] = nn.Tanh()
    assert "no stacked form" in batch_rule(other_layer)
    frozen = MLP(5, 3)
    frozen.layers[1].bias.requires_grad_(False)
    assert "frozen" in batch_rule(frozen)


def test_an_unknown_model_trains_one_at_a_time_exactly():
    rng = np.random.default_rng(0)
    task = make_task((rng.normal(size=(60, 5)).astype(np.float32), np.arange(60) % 3), _Scaled)
    runs = [Run(LearnedLoss("-(y * log(f))", "classification"), s, SGDSettings(0.1))
            for s in range(2)]
    for got, want in zip(train_many(task, runs, 10), _single(task, runs, 10), strict=True):
        for p, q in zip(got.model.parameters(), want.model.parameters(), strict=True):
            assert torch.equal(p, q)


def test_one_at_a_time_on_request_is_train_itself():
    task = _classification("mlp", (5,))
    runs = [Run(LearnedLoss("square(f - y)", "classification"), s, SGDSettings(0.1))
            for s in range(2)]
    for got, want in zip(train_many(task, runs, 5, batched=False), _single(task, runs, 5),
                         strict=True):
        for p, q in zip(got.model.parameters(), want.model.parameters(), strict=True):
            assert torch.equal(p, q)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_lenet5_trains_batched_on_cuda_as_alone(monkeypatch):
    # TF32 convolutions (cuDNN's default) round grouped and single ones differently
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 1, 12, 12)).astype(np.float32)
    task = make_task((x, np.arange(120) % 3), "lenet5", device="cuda")
    sgd = SGDSettings(lr=0.05, momentum=0.9, batch_size=16)
    runs = [Run(LearnedLoss(text, "classification"), i, sgd) for i, text in enumerate(CANDIDATES)]
    _assert_same(train_many(task, runs, 30), _single(task, runs, 30), task)


def test_steps_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        train_many(_regression(), [], 0)


def _parameters(result: TrainResult) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in result.model.parameters()])


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_a_runs_numbers_do_not_depend_on_the_runs_stacked_with_it(kind):
    """Bit for bit, alone (K = 1) or in any group, at its own rate among others: what
    makes results independent of how runs are chunked over workers. The regression
    model has one input and one output, where a batch of one would take torch's
    matrix-vector kernels."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(120, 1)).astype(np.float32)
    task = (_classification("mlp", (5,)) if kind == "classification"
            else make_task((x, np.sin(x).astype(np.float32)), "mlp"))
    runs = [Run(LearnedLoss(text, kind, scale=1.0 + i), 10 + i,
                SGDSettings(lr=0.1 / (1 + i % 2), momentum=0.9, batch_size=16))
            for i, text in enumerate(CANDIDATES)]
    everything = train_many(task, runs, 25)
    for group in ([2], [1, 2], [2, 3], [0, 2, 3]):
        some = train_many(task, [runs[i] for i in group], 25)
        for i, result in zip(group, some, strict=True):
            assert torch.equal(_parameters(result), _parameters(everything[i]))


def test_spread_chunks_by_key_workers_and_size_and_keeps_the_order():
    seen: list[list[tuple[str, int]]] = []

    def run(chunks):
        seen.extend(chunks)
        return iter([[f"{key}{n}" for key, n in chunk] for chunk in chunks])

    items = [("a", n) for n in range(5)] + [("b", 0), ("a", 5), ("b", 1)]
    finished = []
    assert spread(run, items, key=lambda item: item[0], parts=1, size=4,
                  done=lambda chunk, values: finished.append(len(values))) == [
        f"{key}{n}" for key, n in items]
    # six "a" items in chunks of at most 4: two of 3; the two "b" items together
    assert sorted(len(chunk) for chunk in seen) == [2, 3, 3] == sorted(finished)
    assert all(len({key for key, _ in chunk}) == 1 for chunk in seen)
    seen.clear()
    spread(run, items, key=lambda item: item[0], parts=3, size=16)  # a share per worker
    assert sorted(len(chunk) for chunk in seen) == [1, 1, 2, 2, 2]
    seen.clear()
    assert len(spread(run, items, key=lambda item: item[0], parts=2, size=1)) == len(items)
    assert all(len(chunk) == 1 for chunk in seen)


def test_spread_keeps_the_items_of_a_unit_in_one_chunk():
    seen: list[list[tuple[str, int]]] = []

    def run(chunks):
        seen.extend(chunks)
        return [[n for _, n in chunk] for chunk in chunks]

    items = [("a", n) for n in range(3)] + [("b", n) for n in range(3, 6)] + [("c", 6)]
    assert spread(run, items, key=lambda item: 0, parts=2, size=16,
                  unit=lambda item: item[0] if item[0] != "c" else None) == list(range(7))
    # three units (a, b and the lone c) over two workers: whole units per chunk
    assert sorted(sorted(n for _, n in chunk) for chunk in seen) == [[0, 1, 2, 3, 4, 5], [6]]
    seen.clear()
    spread(run, items, key=lambda item: 0, parts=3, size=16, unit=lambda item: item[0])
    assert sorted(len(chunk) for chunk in seen) == [1, 3, 3]


def test_the_long_softmax_is_the_softmax_to_rounding():
    logits = torch.randn(300, 10, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(300) % 10
    f, y = prepare_outputs(logits, labels, "classification")
    g, z = prepare_outputs(logits, labels, "classification", long_softmax=True)
    torch.testing.assert_close(g, f, rtol=1e-6, atol=1e-7)
    assert torch.equal(z, y)
