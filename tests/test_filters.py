"""The cheap checks: structural, poor training, gradient fingerprints (real expressions)."""

from __future__ import annotations

import math

import pytest
import torch
from grown_trees import grown_trees

from symloss.expression import Expression
from symloss.filters import (
    FLAT,
    NON_FINITE,
    POOR_TRAINING,
    STRUCTURAL,
    fingerprint,
    fingerprint_reason,
    poor_training_reason,
    probe,
    same_gradient,
    structural_reason,
)
from symloss.network import LearnedLoss
from symloss.optim import Adam


@pytest.mark.parametrize("text, detail", [
    ("y * y", "does not use f"),
    ("square(f)", "does not use y"),
    ("-f", "does not use y"),
    ("f - f + y", "constant in f after expansion"),
    ("y * (f - f)", "constant in f after expansion"),
    ("div(y, square(f) - f * f)", "constant in f after expansion"),
])
def test_structural_rejections(text, detail):
    reason = structural_reason(Expression.parse(text))
    assert reason == f"{STRUCTURAL}: {detail}"


@pytest.mark.parametrize("text", ["square(f - y)", "-(y * log(f))", "f * y", "sign(f - y)"])
def test_structural_accepts_expressions_using_both(text):
    assert structural_reason(Expression.parse(text)) is None


@pytest.mark.parametrize("task_name", ["sine_task", "digits_task"])
@pytest.mark.parametrize("text", ["f * y", "-square(f - y)", "div(1, f - y)"])
def test_poor_training_rejects_losses_rewarding_wrong_answers(request, tiny_settings, task_name,
                                                               text):
    task = request.getfixturevalue(task_name)
    reason = poor_training_reason(Expression.parse(text), task, tiny_settings, seed=0)
    assert reason is not None and reason.startswith(f"{POOR_TRAINING}: metric ")
    before, after = (float(v) for v in reason.split("metric ")[1].split(" on ")[0].split(" -> "))
    assert after >= before


def test_poor_training_rejects_a_numerically_flat_loss(sine_task, tiny_settings):
    # symbolically uses f, numerically constant: the metric does not strictly improve
    reason = poor_training_reason(Expression.parse("tanh(1e-30 * f) * y"), sine_task,
                                  tiny_settings, seed=0)
    assert reason is not None and reason.startswith(POOR_TRAINING)


@pytest.mark.parametrize("task_name, text", [
    ("sine_task", "square(f - y)"), ("sine_task", "abs(f - y)"),
    ("digits_task", "-(y * log(f))"), ("digits_task", "square(f - y)"),
])
def test_poor_training_accepts_good_losses(request, tiny_settings, task_name, text):
    task = request.getfixturevalue(task_name)
    assert poor_training_reason(Expression.parse(text), task, tiny_settings, seed=0) is None


def test_poor_training_rejects_an_exploding_loss(sine_task, tiny_settings):
    reason = poor_training_reason(Expression.parse("square(1e30 * (f - y))"), sine_task,
                                  tiny_settings, seed=0)
    assert reason is not None and reason.startswith(f"{NON_FINITE}: loss is inf")


def _autograd_poor_training_reason(expression, task, settings, seed):
    """The check as it was before its numpy loop: autograd through LearnedLoss."""
    x, targets = task.train.head(settings.poor_training_examples)
    outputs = task.outputs(task.new_model(seed), x)
    before = task.metric_from_outputs(outputs, targets)
    loss = LearnedLoss(expression, task.kind)
    free = outputs.detach().clone().requires_grad_(True)
    optimizer = Adam([free], lr=settings.poor_training_lr)
    for _ in range(settings.poor_training_steps):
        value = loss(free, targets)
        if not torch.isfinite(value):
            return f"{NON_FINITE}: loss is {value.item()} while optimising free outputs"
        optimizer.step(torch.autograd.grad(value, free))
    after = task.metric_from_outputs(free.detach(), targets)
    if not math.isfinite(after) or not after < before:
        return f"{POOR_TRAINING}: metric {before:.4g} -> {after:.4g} on free outputs"
    return None


@pytest.mark.parametrize("task_name", ["sine_task", "digits_task"])
def test_poor_training_decides_as_the_autograd_loop(request, tiny_settings, task_name):
    """Accept, or reject for the same reason, as autograd did, on known losses and on
    trees like a search's first generation."""
    task = request.getfixturevalue(task_name)
    expressions = [*map(Expression.parse, ["square(f - y)", "abs(f - y)", "-(y * log(f))",
                                           "f * y", "-square(f - y)", "div(1, f - y)",
                                           "square(1e30 * (f - y))", "sign(f - y)"]),
                   *grown_trees(40, seed=0, min_height=2, max_height=4)]
    categories = set()
    for expression in expressions:
        new = poor_training_reason(expression, task, tiny_settings, seed=0)
        old = _autograd_poor_training_reason(expression, task, tiny_settings, seed=0)
        category = None if old is None else old.split(":")[0]
        assert (None if new is None else new.split(":")[0]) == category, (str(expression),
                                                                          new, old)
        categories.add(category)
    assert categories == {None, POOR_TRAINING, NON_FINITE}


@pytest.mark.parametrize("task_name", ["sine_task", "digits_task"])
def test_poor_training_is_deterministic(request, tiny_settings, task_name):
    task = request.getfixturevalue(task_name)
    for expression in grown_trees(10, seed=1, min_height=2, max_height=4):
        first = poor_training_reason(expression, task, tiny_settings, seed=0)
        assert poor_training_reason(expression, task, tiny_settings, seed=0) == first


@pytest.mark.parametrize("task_name", ["sine_task", "digits_task"])
def test_probe_is_seeded_and_doubled(request, tiny_settings, task_name):
    task = request.getfixturevalue(task_name)
    outputs, targets = probe(task, tiny_settings, seed=0)
    again = probe(task, tiny_settings, seed=0)
    other = probe(task, tiny_settings, seed=1)
    n = tiny_settings.fingerprint_size
    assert outputs.shape[0] == targets.shape[0] == 2 * n
    assert torch.equal(outputs, again[0]) and torch.equal(targets, again[1])
    assert not torch.equal(outputs, other[0])
    assert torch.equal(targets[:n], targets[n:])
    assert outputs[n:].std() > outputs[:n].std()  # the spread half is wider


def test_fingerprint_is_the_gradient_wrt_predictions(sine_task, tiny_settings):
    outputs, targets = probe(sine_task, tiny_settings, seed=0)
    grad = fingerprint(Expression.parse("square(f - y)"), sine_task, (outputs, targets))
    expected = 2 * (outputs.reshape(-1) - targets) / outputs.shape[0]
    torch.testing.assert_close(grad, expected)
    assert fingerprint_reason(grad) is None


def test_fingerprint_flat_and_non_finite(sine_task, tiny_settings):
    data = probe(sine_task, tiny_settings, seed=0)
    flat = fingerprint(Expression.parse("sign(f - y)"), sine_task, data)
    assert fingerprint_reason(flat) == f"{FLAT}: zero gradient with respect to the predictions"
    bad = fingerprint(Expression.parse("square(1e30 * (f - y))"), sine_task, data)
    assert fingerprint_reason(bad) == f"{NON_FINITE}: gradient on the probe is NaN/inf"


@pytest.mark.parametrize("task_name", ["sine_task", "digits_task"])
def test_same_gradient_for_different_keys(request, tiny_settings, task_name):
    task = request.getfixturevalue(task_name)
    data = probe(task, tiny_settings, seed=0)
    a, b = Expression.parse("square(f - y)"), Expression.parse("square(f - y) + y")
    assert a.key() != b.key()
    assert same_gradient(fingerprint(a, task, data), fingerprint(b, task, data), rtol=1e-5)
    c = Expression.parse("square(f - y) * 1.01")
    assert not same_gradient(fingerprint(a, task, data), fingerprint(c, task, data), rtol=1e-5)
    d = Expression.parse("abs(f - y)")
    assert not same_gradient(fingerprint(a, task, data), fingerprint(d, task, data), rtol=1e-5)
