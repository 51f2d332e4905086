"""The numpy forward-mode loss: its value and gradient are LearnedLoss's under autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from grown_trees import grown_trees

from symloss.dual import DualLoss, DualTree
from symloss.expression import Expression
from symloss.metaloss import prepare_outputs
from symloss.network import LearnedLoss

B = 32


RANDOM_TREES = grown_trees(240, seed=0, min_height=1, max_height=5)

# protected forms at and near their floor, ties in min/max (between tensors, against a
# literal, against a constant subtree), saturation, constants of every size
EDGE_CASES = [
    "log(f - f * 1)", "log(f - y)", "sqrt(f - y)", "div(1, f - y)", "log(f * 1e-7) * y",
    "sqrt(f * 1e-7) + y", "log(square(f - y)) + log(f)", "sqrt(abs(f - y) - 1e-7)",
    "max(f - y, f)", "min(f, f)", "max(f, y)", "min(f, y) - max(y, f)", "min(f, 1) * y",
    "max(f, 0) + y", "min(f, abs(1)) * y", "max(f, sqrt(0)) + y", "min(max(f, 1), 1) + y",
    "max(max(f, 1), sqrt(1)) * y", "abs(f - y)", "abs(f) * y", "sign(f - y) * f",
    "tanh(1e4 * (f - y))", "div(f, 2.5e20) + y", "div(2.5e20, f - y)", "square(f - y) * 0",
    "-(y * log(f))", "square(f - y)", "f * 12345.678 - y * 1e-7", "min(f - f, y)",
    "max(log(f - f), -16)", "tanh(log(sqrt(f)) * y)", "f - y - tanh(0.5)",
]


def _cases(dtype: torch.dtype) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(kind, outputs, targets): regression [B, 1] and [B, 3], multi-class and one-column
    classification, with outputs equal to the targets, zero, tiny, and saturating."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, 1, generator=g)
    y = torch.randn(B, generator=g)
    x[:4, 0] = y[:4]
    x[4, 0], x[5, 0], x[6, 0], x[7, 0] = 0.0, 1e-8, 1.0, 1e-7
    y[8] = 0.0
    x3, y3 = torch.randn(B, 3, generator=g), torch.randn(B, 3, generator=g)
    x3[:3] = y3[:3]
    x3[3] = 0.0
    logits = 3 * torch.randn(B, 4, generator=g)
    logits[0, 0], logits[1] = 200.0, 0.0  # probabilities 1 and exactly 0; a tie
    labels = torch.randint(0, 4, (B,), generator=g)
    column = 3 * torch.randn(B, 1, generator=g)
    column[0, 0], column[1, 0], column[2, 0] = 200.0, -200.0, 0.0
    binary = torch.randint(0, 2, (B,), generator=g)
    return [
        ("regression", x.to(dtype), y.to(dtype)),
        ("regression", x3.to(dtype), y3.to(dtype)),
        ("classification", logits.to(dtype), labels),
        ("classification", column.to(dtype), binary),
    ]


def _torch_gradients(expression, kind, outputs, targets):
    """LearnedLoss's value and autograd's gradients with respect to the outputs and to
    ``f``, and the loss of the values' magnitudes (the last two set the tolerances)."""
    free = outputs.clone().requires_grad_(True)
    value = LearnedLoss(expression, kind)(free, targets)
    (grad,) = torch.autograd.grad(value, free)
    f, y = prepare_outputs(outputs, targets, kind)
    f = f.detach().requires_grad_(True)
    elementwise = LearnedLoss(expression, kind).network(f, y)
    (grad_f,) = torch.autograd.grad(elementwise.sum(), f)
    magnitude = float(elementwise.detach().abs().sum(dim=1).mean())
    return value.detach(), grad, grad_f, magnitude


def _dual_gradient(expression, kind, outputs, targets):
    loss = DualLoss(expression, kind, outputs, targets)
    with np.errstate(all="ignore"):
        value, grad = loss(loss.from_outputs(outputs))
    return value, loss.to_outputs(grad)


def _compare(expressions, dtype, rtol, atol):
    """Every expression on every case: values and gradients agree; returns how many
    comparisons ran (trees whose torch value is not finite are skipped)."""
    compared = 0
    for kind, outputs, targets in _cases(dtype):
        for expression in expressions:
            value, expected, grad_f, magnitude = _torch_gradients(expression, kind, outputs,
                                                                  targets)
            if not torch.isfinite(value):
                continue
            dual_value, grad = _dual_gradient(expression, kind, outputs, targets)
            message = f"{expression} ({kind}, outputs {tuple(outputs.shape)})"
            assert grad.dtype == outputs.dtype, message
            scale = float(grad_f.abs().max()) / B  # the size of the terms of the gradient
            torch.testing.assert_close(grad, expected, rtol=rtol, atol=atol * scale + 1e-30,
                                       msg=message)
            assert dual_value == pytest.approx(float(value), rel=0, abs=rtol * magnitude), message
            compared += 1
    return compared


def test_random_trees_float64_exactly():
    """float64: no rounding moves a value across a kink, so the rules' choices at kinks,
    ties and floors must be autograd's exactly."""
    expressions = [*RANDOM_TREES, *map(Expression.parse, EDGE_CASES)]
    assert _compare(expressions, torch.float64, rtol=1e-9, atol=1e-9) > 0.9 * 4 * len(expressions)


def test_random_trees_float32():
    """float32, as the poor-training check runs. Values one rounding away from a min/max
    bound can fall on either side here (torch's vectorised square root is not correctly
    rounded), so the absolute tolerance has a floor."""
    expressions = [*RANDOM_TREES, *map(Expression.parse, EDGE_CASES)]
    compared = 0
    for kind, outputs, targets in _cases(torch.float32):
        for expression in expressions:
            value, expected, grad_f, _ = _torch_gradients(expression, kind, outputs, targets)
            if not torch.isfinite(value):
                continue
            _, grad = _dual_gradient(expression, kind, outputs, targets)
            scale = float(grad_f.abs().max()) / B
            torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-4 * scale + 1e-8,
                                       msg=f"{expression} ({kind}, {tuple(outputs.shape)})")
            compared += 1
    assert compared > 0.9 * 4 * len(expressions)


def test_edge_cases_hit_the_kinks():
    """The edge cases are edges: on them the derivative takes each convention's branch
    (a wrong choice at a tie or floor would change these gradients)."""
    kind, outputs, targets = _cases(torch.float64)[0]
    for text, element, expected in [
        ("min(f, y) * 1", 0, 0.5 / B),  # tie between tensors: half
        ("min(f, abs(1)) * y", 6, 0.5 * float(targets[6]) / B),  # a constant subtree: half
        ("log(f - y)", 0, 0.0),  # f == y: |a| below the floor
        ("abs(f - y)", 0, 0.0),  # sign(0)
    ]:
        _, grad = _dual_gradient(Expression.parse(text), kind, outputs, targets)
        assert float(grad[element, 0]) == pytest.approx(expected, abs=1e-15), text
        _, autograd, _, _ = _torch_gradients(Expression.parse(text), kind, outputs, targets)
        assert float(autograd[element, 0]) == pytest.approx(expected, abs=1e-15), text


def test_float32_outputs_stay_float32():
    kind, outputs, targets = _cases(torch.float32)[2]
    loss = DualLoss("square(f - y)", kind, outputs, targets)
    z = loss.from_outputs(outputs)
    assert z.dtype == np.float32 and z.shape == (4, B) and z.flags.c_contiguous
    assert loss(z)[1].dtype == np.float32


def test_outputs_round_trip_without_sharing_memory():
    kind, outputs, targets = _cases(torch.float32)[0]
    loss = DualLoss("square(f - y)", kind, outputs, targets)
    before = outputs.clone()
    z = loss.from_outputs(outputs)
    assert torch.equal(loss.to_outputs(z), outputs)
    z += 1.0  # the optimiser updates in place: the model's outputs must not move
    assert torch.equal(outputs, before)


def test_a_tree_without_f_has_zero_gradient():
    kind, outputs, targets = _cases(torch.float32)[1]
    loss = DualLoss("square(y) + log(2)", kind, outputs, targets)
    value, grad = loss(loss.from_outputs(outputs))
    assert not grad.any()
    expected = float(LearnedLoss("square(y) + log(2)", kind)(outputs, targets))
    assert value == pytest.approx(expected, rel=1e-6)


def test_non_finite_loss_is_returned_as_it_is():
    kind, outputs, targets = _cases(torch.float32)[0]
    loss = DualLoss("square(1e30 * (f - y))", kind, outputs, targets)
    with np.errstate(all="ignore"):
        value, _ = loss(loss.from_outputs(outputs))
    assert value == float("inf")


def test_deterministic():
    for kind, outputs, targets in _cases(torch.float32):
        for expression in RANDOM_TREES[:20]:
            first, again = (_dual_gradient(expression, kind, outputs, targets)
                            for _ in range(2))
            assert (first[0] == again[0] or np.isnan(first[0]) and np.isnan(again[0]))
            assert torch.equal(first[1], again[1]) or torch.isnan(first[1]).any()


def test_tree_constant_subtrees_are_folded_once():
    y = np.arange(6, dtype=np.float32).reshape(2, 3)
    tree = DualTree("f * log(2) + y * square(3)", y)
    assert len(tree._steps) == 2  # f * log(2) and the sum: only the nodes that involve f
    f = np.ones_like(y)
    with np.errstate(all="ignore"):
        value, derivative = tree(f)
    np.testing.assert_allclose(value, np.log(2) + 9 * y, rtol=1e-6)
    np.testing.assert_allclose(derivative, np.full_like(y, np.log(2)), rtol=1e-6)


def test_mismatched_shapes_and_unknown_kinds_raise_like_learned_loss():
    with pytest.raises(ValueError, match="task must be one of"):
        DualLoss("square(f - y)", "ranking", torch.zeros(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="targets must be integer labels"):
        DualLoss("square(f - y)", "classification", torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="same number of values"):
        DualLoss("square(f - y)", "regression", torch.zeros(4, 3), torch.zeros(4, 2))
