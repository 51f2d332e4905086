"""The ML3 and TaylorGLO baselines: losses, fitting, persistence, meta-testing."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import sympy
import torch
import torch.nn.functional as F

from symloss.baselines import ML3Loss, TaylorGLOLoss, fit_ml3, fit_taylorglo
from symloss.config import Settings
from symloss.datasets import load_dataset
from symloss.metatest import meta_test
from symloss.network import LOSS_FORMATS, LearnedLoss, load
from symloss.task import make_task

SETTINGS = Settings(
    population_size=8, generations=2, meta_steps=5, unroll_steps=2, meta_batch_size=32,
    meta_lr=1e-2, fitness_steps=20, batch_size=32, lr=0.5,
)
"""Tiny budgets; the large learning rate makes 20 steps enough to tell losses apart."""


@pytest.fixture(scope="module")
def digits_task():
    x, y = load_dataset("digits").train
    return make_task((x[:300], y[:300]), "linear", seed=0)


@pytest.fixture(scope="module")
def sine_task():
    x, y = load_dataset("sine").train
    return make_task((x[:300], y[:300]), "mlp", task="regression", seed=0)


@pytest.fixture(scope="module")
def fitted_ml3(digits_task):
    return fit_ml3(digits_task, SETTINGS, seed=3)


@pytest.fixture(scope="module")
def fitted_taylorglo(digits_task):
    return fit_taylorglo(digits_task, SETTINGS, seed=3, evaluations=10)


def _batch(kind, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "classification":
        return torch.randn(16, 4, generator=g), torch.randint(0, 4, (16,), generator=g)
    return torch.randn(16, 1, generator=g), torch.randn(16, 1, generator=g)


# -- the losses --------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda k: ML3Loss(k, seed=1), lambda k: TaylorGLOLoss(k)])
@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_scalar_output_and_gradient_to_model_outputs(make, kind):
    loss = make(kind)
    y_pred, y_true = _batch(kind)
    y_pred.requires_grad_(True)
    value = loss(y_pred, y_true)
    assert value.shape == () and torch.isfinite(value)
    value.backward()
    assert y_pred.grad is not None and y_pred.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())


def test_ml3_architecture_has_no_biases():
    loss = ML3Loss("classification")
    shapes = [tuple(p.shape) for _, p in loss.named_parameters()]
    assert shapes == [(50, 2), (50, 50), (1, 50)]
    assert all(layer.bias is None for layer in loss.layers)
    assert loss.hidden == (50, 50)


def test_ml3_is_per_class_mlp_with_softplus_summed_over_classes():
    loss = ML3Loss("classification", seed=2)
    logits, labels = _batch("classification")
    f, y = torch.softmax(logits, 1), F.one_hot(labels, 4).float()
    h = torch.stack([f, y], -1)
    w = [layer.weight for layer in loss.layers]
    manual = F.softplus(torch.relu(torch.relu(h @ w[0].T) @ w[1].T) @ w[2].T).squeeze(-1)
    assert torch.allclose(loss(logits, labels), manual.sum(1).mean())


def test_ml3_says_it_is_not_symbolic():
    loss = ML3Loss("regression")
    assert "not symbolic" in loss.latex() and loss.latex().startswith(r"\text{ML3")
    assert "not symbolic" in str(loss) and "not symbolic" in repr(loss)
    with pytest.raises(TypeError, match="not a symbolic"):
        loss.sympy()


def test_taylorglo_polynomial_and_default_squared_error():
    theta = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    loss = TaylorGLOLoss("regression", theta)
    f, y = torch.randn(32, dtype=torch.float64), torch.randn(32, dtype=torch.float64)
    df, dy = f - theta[1], y - theta[0]
    manual = (theta[2] * df + theta[3] * df**2 / 2 + theta[4] * df**3 / 6 + theta[5] * dy * df
              + theta[6] * dy * df**2 / 2 + theta[7] * dy**2 * df / 2)
    assert torch.allclose(loss(f, y), manual.mean())
    # the default start has the gradient of the squared error
    pred = torch.randn(32, requires_grad=True)
    TaylorGLOLoss("regression")(pred, y.float()).backward()
    assert torch.allclose(pred.grad, 2 * (pred - y.float()).detach() / 32, atol=1e-6)


def test_taylorglo_symbolic_forms():
    loss = TaylorGLOLoss("classification", [0, 0.5, 1.2345, 2, 0, -2, 0.25, 0])
    latex = loss.latex()
    assert "f" in latex and "y" in latex
    assert {str(s) for s in loss.sympy().free_symbols} == {"f", "y"}
    numbers = [float(n) for n in loss.sympy(digits=2).atoms(sympy.Number)]
    assert numbers and all(round(n, 2) == n for n in numbers)
    assert str(loss).startswith("TaylorGLO loss:")


def test_taylorglo_rejects_wrong_parameter_count():
    with pytest.raises(ValueError, match="8 parameters"):
        TaylorGLOLoss("regression", [1.0, 2.0])


# -- persistence ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_save_load_round_trip(tmp_path, kind):
    losses = [
        ML3Loss(kind, seed=5, metadata={"note": "x"}),
        TaylorGLOLoss(kind, [0.1, -0.3, 1.5, 0.7, -0.2, -1.1, 0.4, 0.9]),
    ]
    y_pred, y_true = _batch(kind, seed=1)
    for i, loss in enumerate(losses):
        path = loss.save(tmp_path / f"loss{i}.json")
        data = json.loads(path.read_text())
        assert data["format"] in LOSS_FORMATS and data["version"] == 1
        restored = load(path)
        assert type(restored) is type(loss) and restored.task == kind
        assert restored.metadata == loss.metadata
        assert torch.equal(restored(y_pred, y_true), loss(y_pred, y_true))


def test_ml3_file_is_small_plain_json(tmp_path):
    data = json.loads(ML3Loss("regression").save(tmp_path / "ml3.json").read_text())
    assert data["format"] == "symloss.ml3" and data["hidden"] == [50, 50]
    assert [len(w) for w in data["weights"]] == [50, 50, 1]


def test_load_still_reads_learned_losses_and_rejects_unknown_formats(tmp_path):
    path = LearnedLoss("square(f - y)", task="regression").save(tmp_path / "l.json")
    assert type(load(path)) is LearnedLoss
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something.else", "version": 1}))
    with pytest.raises(ValueError, match="not a symloss loss"):
        load(bad)


@pytest.mark.parametrize(
    ("loss", "field", "value", "message"),
    [
        (ML3Loss("regression"), "version", 99, "newer"),
        (ML3Loss("regression"), "weights", [[1.0]], "valid symloss ML3"),
        (TaylorGLOLoss("regression"), "theta", [1.0, float("nan")] * 4, "valid symloss TaylorGLO"),
        (TaylorGLOLoss("regression"), "version", 0, "invalid format version"),
    ],
)
def test_corrupt_files_raise_value_errors(tmp_path, loss, field, value, message):
    data = loss.to_dict()
    data[field] = value
    path = tmp_path / "corrupt.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        load(path)


# -- fitting -------------------------------------------------------------------------------------


def test_fit_ml3_learns_and_is_deterministic(digits_task, fitted_ml3):
    initial = ML3Loss(digits_task.kind, seed=3)
    pairs = zip(initial.parameters(), fitted_ml3.parameters(), strict=True)
    assert all(not torch.equal(a, b) for a, b in pairs)
    assert fitted_ml3.metadata["method"] == "ml3"
    assert len(fitted_ml3.metadata["meta_objective"]) == SETTINGS.meta_steps
    again = fit_ml3(digits_task, SETTINGS, seed=3)
    for a, b in zip(fitted_ml3.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


def test_fit_ml3_regression(sine_task):
    loss = fit_ml3(sine_task, SETTINGS.replace(meta_steps=2), seed=0)
    assert loss.task == "regression"
    assert all(math.isfinite(v) for v in loss.metadata["meta_objective"])


def test_fit_taylorglo_is_deterministic_and_finite(digits_task, fitted_taylorglo):
    theta = fitted_taylorglo.theta_values
    assert len(theta) == 8 and all(math.isfinite(t) for t in theta)
    meta = fitted_taylorglo.metadata
    assert meta["evaluations"] == 10 and meta["fitness"] <= meta["start_fitness"]
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    again = fit_taylorglo(digits_task, SETTINGS, seed=3, evaluations=10)
    assert again.theta_values == theta
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])


def test_fit_taylorglo_default_budget(sine_task):
    settings = SETTINGS.replace(population_size=8, generations=1, fitness_steps=5)
    loss = fit_taylorglo(sine_task, settings, seed=0)
    assert loss.metadata["evaluations"] == 8


def test_fit_taylorglo_without_cma_says_how_to_install(monkeypatch, digits_task):
    monkeypatch.setitem(sys.modules, "cma", None)
    with pytest.raises(ImportError, match=r"pip install 'symloss\[baselines\]'"):
        fit_taylorglo(digits_task, SETTINGS, evaluations=2)


# -- meta-testing ----------------------------------------------------------------------------------


def test_meta_test_runs_with_both_baselines(digits_task, fitted_ml3, fitted_taylorglo):
    for loss in (fitted_ml3, fitted_taylorglo):
        result = meta_test(loss, digits_task, steps=20, seeds=(1, 2))
        assert len(result.learned.metrics) == 2
        assert all(0.0 <= m <= 1.0 for m in result.learned.metrics)
        assert result.baseline is not None
