"""Standalone exports: the generated code, run with no symloss, computes the loss."""

from __future__ import annotations

import ast
import importlib.util

import numpy as np
import pytest
import torch

from symloss.export import FRAMEWORKS, to_source
from symloss.library import BINARY_BASELINE
from symloss.network import LearnedLoss

EXPRESSIONS = [
    "-(y * log(f))",
    "square(f - y)",
    "div(f, y) - sqrt(abs(f - y))",
    "max(f, y) * min(f, -1) + sign(f - y) * tanh(f)",
    "log(f - y) + sqrt(y - f) * square(y)",
    "min(f, 1) + max(0, y - f) - max(-1, f) * min(1, y)",
    "div(1, -1) * f + square(1 + 1) * y - tanh(sign(-1)) * div(f, 1)",
    "-(y * square(1 - f) * log(f)) + div(min(f, 1), max(y, div(1, -1)))",
]
ALL_PRIMITIVES = ("div(f, y) - sqrt(abs(f - y)) + max(f, y) * min(f, -1) + sign(f - y) * tanh(f)"
                  " + log(f - y) * square(y) - min(f, 1) * div(1, -1)")
"""Every primitive in one loss (JAX runs eagerly and slowly: one expression keeps its test
short)."""
IMPORTS = {"torch": {"torch"}, "numpy": {"numpy"}, "jax": {"jax", "jax.numpy"}}


def weighted(expression: str, task: str, seed: int | None) -> LearnedLoss:
    """The loss with unit weights and scale (seed None) or seeded random weights around 1
    and a random scale."""
    loss = LearnedLoss(expression, task)
    if seed is None:
        return loss
    rng = np.random.default_rng(seed)
    return LearnedLoss(expression, task, 1 + 0.5 * rng.standard_normal(len(loss.weights)),
                       scale=float(rng.uniform(0.1, 3.0)))


def compile_loss(source: str):
    """``loss`` from the source, executed in a fresh namespace."""
    namespace: dict = {}
    exec(compile(source, "<exported loss>", "exec"), namespace)  # noqa: S102
    return namespace["loss"]


def batches(task: str, dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random batches of each accepted shape, with rows that hit the protected regions:
    probabilities that underflow (log and sqrt of ~0), predictions equal to targets
    (log(f - y) at 0) and zero predictions."""
    g = torch.Generator().manual_seed(0)
    if task == "classification":
        logits = 3 * torch.randn(12, 4, generator=g, dtype=dtype)
        logits[0] = torch.tensor([-60.0, 60.0, 0.0, -60.0])  # f underflows to ~0
        logits[1] = 0.0  # ties: every f = 0.25
        labels = torch.randint(0, 4, (12,), generator=g)
        labels[0] = 0
        probabilities = torch.softmax(torch.randn(12, 4, generator=g, dtype=dtype), dim=1)
        binary = 4 * torch.randn(10, 1, generator=g, dtype=dtype)
        binary[0] = -80.0
        return [(logits, labels), (logits, probabilities), (binary, (binary[:, 0] > 0).long()),
                (binary, torch.randint(0, 2, (10, 1), generator=g).to(dtype))]
    out = []
    for shape in ((12,), (12, 1), (12, 3)):
        f = torch.randn(shape, generator=g, dtype=dtype)
        y = torch.randn(shape, generator=g, dtype=dtype)
        f.view(12, -1)[:3] = y.view(12, -1)[:3]  # f - y == 0 exactly
        f.view(12, -1)[3] = 0.0
        out.append((f, y))
    return out


def test_imports_only_the_framework():
    loss = weighted(EXPRESSIONS[-1], "classification", seed=0)
    for framework in FRAMEWORKS:
        tree = ast.parse(to_source(loss, framework))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        assert imported == IMPORTS[framework]
        assert not any(isinstance(node, ast.ImportFrom) for node in ast.walk(tree))
        functions = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
        assert functions == ["loss"]
        assert "symloss" not in {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("seed", [None, 1])
@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_torch_values_and_gradients_are_exact(expression, seed, task):
    loss = weighted(expression, task, seed)
    exported = compile_loss(loss.to_source("torch"))
    for y_pred, y_true in batches(task, torch.float32):
        for fn in (loss, exported):
            pred = y_pred.clone().requires_grad_(True)
            value = fn(pred, y_true)
            (grad,) = torch.autograd.grad(value, pred, allow_unused=True)
            if fn is loss:
                expected, expected_grad = value, grad
        assert value.dtype == expected.dtype and value.shape == ()
        torch.testing.assert_close(value, expected, rtol=0, atol=0, equal_nan=True)
        if expected_grad is None:
            assert grad is None
        else:
            torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_numpy_values(expression, task):
    loss = weighted(expression, task, seed=2)
    exported = compile_loss(loss.to_source("numpy"))
    with np.errstate(all="raise"):  # the protected operators never warn
        for y_pred, y_true in batches(task, torch.float64):
            value = exported(y_pred.numpy(), y_true.numpy())
            assert isinstance(value, np.floating) and value.dtype == np.float64
            assert value == pytest.approx(float(loss(y_pred, y_true)), rel=1e-9, abs=1e-12)


def test_binary_cross_entropy_exports():
    loss = LearnedLoss(BINARY_BASELINE, "classification")
    logits, labels = torch.randn(20, 1), torch.randint(0, 2, (20,))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0],
                                                                    labels.float())
    for framework in ("torch", "numpy"):
        exported = compile_loss(loss.to_source(framework))
        args = (logits, labels) if framework == "torch" else (logits.numpy(), labels.numpy())
        assert float(exported(*args)) == pytest.approx(float(expected), rel=1e-5)


def test_scale_multiplies_the_reduced_loss():
    loss = LearnedLoss("abs(f - y) + square(f)", "regression", scale=2.5)
    source = loss.to_source("torch")
    assert "return 2.5 * value.sum(dim=1).mean()" in source
    f, y = batches("regression", torch.float64)[2]
    assert torch.equal(compile_loss(source)(f, y), loss(f, y))
    assert torch.equal(compile_loss(source)(f, y), 2.5 * loss.with_scale(1.0)(f, y))
    assert "return value.sum(axis=1).mean()" in loss.with_scale(1.0).to_source("numpy")


def test_constant_expression_and_long_lines():
    constant = LearnedLoss("square(1 + 1) - div(1, 1)", "regression")
    exported = compile_loss(constant.to_source("numpy"))
    f = np.zeros((5, 2))
    assert exported(f, f) == pytest.approx(float(constant(torch.zeros(5, 2), torch.zeros(5, 2))))
    deep = weighted(" + ".join(f"tanh({k} * f - y)" for k in range(1, 15)), "regression", 4)
    source = deep.to_source("torch")
    assert max(map(len, source.splitlines())) <= 100
    f, y = batches("regression", torch.float32)[1]
    assert torch.equal(compile_loss(source)(f, y), deep(f, y))


def test_unknown_framework():
    with pytest.raises(ValueError, match="'tensorflow'.*torch, numpy, jax"):
        to_source(LearnedLoss("square(f - y)", "regression"), "tensorflow")


@pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                    reason="JAX is not installed (pip install jax); its export is untested here")
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_jax_values_and_gradients(task):
    import jax

    loss = weighted(ALL_PRIMITIVES, task, seed=5)
    exported = jax.value_and_grad(compile_loss(loss.to_source("jax")))
    for y_pred, y_true in batches(task, torch.float32):
        pred = y_pred.clone().requires_grad_(True)
        expected = loss(pred, y_true)
        (expected_grad,) = torch.autograd.grad(expected, pred)
        value, grad = exported(y_pred.numpy(), y_true.numpy())
        assert float(value) == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(np.asarray(grad), expected_grad.numpy(), rtol=1e-4,
                                   atol=1e-5)
