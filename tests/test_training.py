"""train() and unrolled_sgd(): real SGD runs on the built-in sine and digits tasks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from symloss.network import LearnedLoss
from symloss.training import SGDSettings, TrainResult, train, unrolled_sgd

MSE = LearnedLoss("square(f - y)", "regression")
SGD = SGDSettings(lr=0.01, batch_size=32)


def _state(result: TrainResult) -> list[torch.Tensor]:
    return [p.detach().clone() for p in result.model.parameters()]


def test_train_is_deterministic_for_a_seed(sine_task):
    a = train(sine_task, MSE, 25, SGD, seed=3)
    b = train(sine_task, MSE, 25, SGD, seed=3)
    c = train(sine_task, MSE, 25, SGD, seed=4)
    assert all(torch.equal(u, v) for u, v in zip(_state(a), _state(b), strict=True))
    assert not all(torch.equal(u, v) for u, v in zip(_state(a), _state(c), strict=True))
    assert (a.steps, a.diverged) == (25, False)


def test_train_continues_a_shorter_run(sine_task):
    sgd = SGDSettings(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, batch_size=32)
    whole = train(sine_task, sine_task.base_loss, 40, sgd, 3)
    short = train(sine_task, sine_task.base_loss, 15, sgd, 3)
    continued = train(sine_task, sine_task.base_loss, 40, sgd, 3, start=short)
    assert continued.steps == 40 and not continued.diverged
    for a, b in zip(whole.model.parameters(), continued.model.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="continue only"):
        train(sine_task, sine_task.base_loss, 10, sgd, 3, start=continued)


def test_train_decreases_the_loss(sine_task):
    before = sine_task.metric(sine_task.new_model(0), sine_task.val)
    result = train(sine_task, MSE, 150, SGDSettings(lr=0.01, batch_size=64), seed=0)
    after = sine_task.metric(result.model, sine_task.val)
    assert not result.diverged
    assert after < 0.8 * before


def test_train_classification_lowers_error(digits_task):
    ce = LearnedLoss("-(y * log(f))", "classification")
    before = digits_task.metric(digits_task.new_model(0), digits_task.val)
    result = train(digits_task, ce, 100, SGDSettings(lr=0.5, batch_size=64), seed=0)
    assert digits_task.metric(result.model, digits_task.val) < before - 0.4


def test_train_matches_a_plain_torch_loop(sine_task):
    sgd = SGDSettings(lr=0.02, momentum=0.9, batch_size=16)
    result = train(sine_task, MSE, 20, sgd, seed=5)
    model = sine_task.new_model(5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    generator = torch.Generator().manual_seed(5)
    for _ in range(20):
        x, y = sine_task.train.batch(16, generator)
        loss = F.mse_loss(model(x).reshape(-1), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for u, v in zip(result.model.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)


def test_exploding_loss_stops_with_diverged(sine_task):
    exploding = LearnedLoss("square(square(square(f - y)))", "regression")
    result = train(sine_task, exploding, 120, SGD, seed=0)
    assert result.diverged
    assert result.steps <= 120


def test_nan_loss_stops_at_the_first_check(sine_task):
    def nan_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (outputs.reshape(-1) - targets).mean() * math.nan

    result = train(sine_task, nan_loss, 500, SGD, seed=0)
    assert result.diverged and result.steps == 50  # checked every 50 steps
    short = train(sine_task, nan_loss, 7, SGD, seed=0)
    assert short.diverged and short.steps == 7  # and at the last step


def test_curve_recording(sine_task):
    result = train(sine_task, MSE, 40, SGD, seed=1, curve_split=sine_task.val, curve_points=4)
    steps = [s for s, _ in result.curve]
    assert steps == [0, 10, 20, 30, 40]
    assert all(math.isfinite(m) for _, m in result.curve)
    assert result.curve[0][1] == sine_task.metric(sine_task.new_model(1), sine_task.val)
    assert result.curve[-1][1] == sine_task.metric(result.model, sine_task.val)
    assert train(sine_task, MSE, 5, SGD, seed=1).curve == []


def test_sgd_settings_build_the_optimiser(sine_task):
    model = sine_task.new_model(0)
    settings = SGDSettings(lr=0.3, momentum=0.5, nesterov=True, weight_decay=1e-4)
    group = settings.optimizer(model).param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (
        0.3, 0.5, True, 1e-4)


# ----------------------------------------------------------------------------- unrolled


def _functional(task, seed):
    model = task.new_model(seed)
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    return model, params, buffers


_SETTINGS_COMBOS = [
    SGDSettings(lr=0.05),
    SGDSettings(lr=0.05, weight_decay=5e-2),
    SGDSettings(lr=0.05, momentum=0.9),
    SGDSettings(lr=0.05, momentum=0.9, nesterov=True),
    SGDSettings(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4),
    SGDSettings(lr=0.02, momentum=0.5, weight_decay=1e-2),
]


@pytest.mark.parametrize("create_graph", [False, True])
@pytest.mark.parametrize("sgd", _SETTINGS_COMBOS, ids=repr)
def test_unrolled_sgd_equals_torch_sgd_steps(sine_task, sgd, create_graph):
    """k unrolled steps are k steps of torch.optim.SGD with the same settings and batches."""
    model, params, buffers = _functional(sine_task, 2)
    generator = torch.Generator().manual_seed(0)
    batches = [sine_task.train.batch(32, generator) for _ in range(4)]
    stepped = unrolled_sgd(model, params, buffers, MSE, batches, sgd, create_graph=create_graph)

    manual = sine_task.new_model(2)
    optimizer = sgd.optimizer(manual)
    for x, y in batches:
        optimizer.zero_grad()
        MSE(manual(x), y).backward()
        optimizer.step()
    for name, p in manual.named_parameters():
        torch.testing.assert_close(stepped[name], p.detach(), rtol=1e-6, atol=1e-7)
    # pure: the starting parameters are untouched
    for name, p in sine_task.new_model(2).named_parameters():
        assert torch.equal(params[name], p.detach())


def test_unrolled_sgd_settings_change_the_step(sine_task):
    """Momentum, Nesterov and weight decay each move the parameters differently."""
    model, params, buffers = _functional(sine_task, 2)
    generator = torch.Generator().manual_seed(0)
    batches = [sine_task.train.batch(32, generator) for _ in range(3)]
    results = [unrolled_sgd(model, params, buffers, MSE, batches, sgd)
               for sgd in _SETTINGS_COMBOS[:4]]
    for i, a in enumerate(results):
        for b in results[i + 1:]:
            assert not all(torch.allclose(a[k], b[k]) for k in a)


@pytest.mark.parametrize("sgd", [
    SGDSettings(lr=0.01),
    SGDSettings(lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4),
], ids=repr)
def test_unrolled_sgd_is_differentiable_in_loss_weights(sine_task, sgd):
    loss = LearnedLoss("square(f - y)", "regression")
    model, params, buffers = _functional(sine_task, 0)
    generator = torch.Generator().manual_seed(1)
    batches = [sine_task.train.batch(32, generator) for _ in range(3)]
    weights = torch.ones(loss.network.n_edges, dtype=torch.float64, requires_grad=True)

    def candidate(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return loss(outputs, targets, weights)

    stepped = unrolled_sgd(model, params, buffers, candidate, batches, sgd)
    outputs = functional_call(model, (stepped, buffers), (sine_task.val.x,))
    objective = sine_task.base_loss(outputs, sine_task.val.y)
    (grad,) = torch.autograd.grad(objective, weights)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0

    # the analytic gradient agrees with a finite difference along one weight
    def value(w: torch.Tensor) -> float:
        def fn(o: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return loss(o, t, w)

        p = unrolled_sgd(model, params, buffers, fn, batches, sgd)
        out = functional_call(model, (p, buffers), (sine_task.val.x,))
        return sine_task.base_loss(out, sine_task.val.y).item()

    eps = 1e-2
    bump = torch.zeros_like(weights)
    bump[-1] = eps
    numeric = (value(weights.detach() + bump) - value(weights.detach() - bump)) / (2 * eps)
    assert numeric == pytest.approx(float(grad[-1]), rel=0.05)


def test_train_with_adam_matches_torch_adam(sine_task):
    """Our Adam loop with the learned MSE equals torch's Adam loop with torch's MSE, the
    targets shaped as the outputs ([batch, 1])."""
    settings = SGDSettings(lr=1e-3, batch_size=16, adam=True)
    ours = train(sine_task, MSE, 5, settings, seed=3).model
    model = sine_task.new_model(3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(3)
    for _ in range(5):
        x, y = sine_task.train.batch(16, generator)
        outputs = model(x)
        assert outputs.shape == (16, 1) and y.shape == (16,)
        optimizer.zero_grad()
        F.mse_loss(outputs, y.unsqueeze(-1)).backward()
        optimizer.step()
    for a, b in zip(ours.parameters(), model.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)
