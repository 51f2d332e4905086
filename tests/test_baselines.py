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
from symloss.baselines.taylorglo import SQUARED_ERROR_THETA
from symloss.config import Settings
from symloss.datasets import load_dataset
from symloss.local_search import unrolled_objective
from symloss.lossfile import LOSS_FORMATS, load
from symloss.metatest import meta_test
from symloss.network import LearnedLoss
from symloss.task import make_task
from symloss.training import sgd_settings, train

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


def test_ml3_initialisation_is_kaiming_normal():
    """As EvoMAL's ML3: N(0, 2 / fan_in) weights (PyTorch's default is uniform, narrower)."""
    z = torch.cat([
        (layer.weight / math.sqrt(2 / layer.in_features)).reshape(-1)
        for seed in range(3) for layer in ML3Loss("classification", seed=seed).layers
    ])
    assert z.numel() == 3 * (100 + 2500 + 50)
    assert abs(float(z.mean())) < 0.05
    assert float(z.std()) == pytest.approx(1.0, abs=0.05)
    # normal tails: PyTorch's default init never goes beyond 1/sqrt(2) here
    assert float((z.abs() > 2.5).double().mean()) > 0.005


def test_ml3_initial_gradient_is_within_reach_of_cross_entropy(digits_task):
    """At a fresh model, the initial ML3 loss's gradient to the logits is a few percent
    of cross-entropy's (median over seeds), not a fraction of a percent."""
    x, y = digits_task.train.head(128)
    outputs = digits_task.outputs(digits_task.new_model(0), x)

    def grad_norm(loss) -> float:
        o = outputs.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(o, y), o)
        return float(grad.norm())

    ratios = [grad_norm(ML3Loss("classification", seed=s)) / grad_norm(F.cross_entropy)
              for s in range(10)]
    assert float(np.median(ratios)) > 0.02, ratios


def test_ml3_says_it_is_not_symbolic():
    loss = ML3Loss("regression")
    assert "not symbolic" in loss.latex() and loss.latex().startswith(r"\text{ML3")
    assert "not symbolic" in str(loss) and "not symbolic" in repr(loss)
    with pytest.raises(TypeError, match="not a symbolic"):
        loss.sympy()


@pytest.mark.parametrize(("f", "y", "expected"), [
    # theta = (1, 2, 3, 4, 6, 5, 2, 4): centre label 1, prediction 2; df = f - 2, dy = y - 1
    (3.0, 2.0, 14.0),  # df 1, dy 1: 3 + 4/2 + 6/6 + 5 + 2/2 + 4/2
    (4.0, 0.0, 12.0),  # df 2, dy -1: 6 + 8 + 8 - 10 - 4 + 4
    (2.0, 7.0, 0.0),  # df 0: every term has the prediction in it
    (0.0, 1.0, -6.0 + 8.0 - 8.0),  # df -2, dy 0: 3(-2) + 4(4)/2 + 6(-8)/6
])
def test_taylorglo_known_values(f, y, expected):
    loss = TaylorGLOLoss("regression", [1, 2, 3, 4, 6, 5, 2, 4])
    value = loss(torch.tensor([f], dtype=torch.float64), torch.tensor([y], dtype=torch.float64))
    assert float(value) == pytest.approx(expected)


def test_taylorglo_is_cubic_in_the_prediction_and_every_parameter_counts():
    """The paper's parameterisation: cubic in f, quadratic in y, no inert parameter (the
    EvoMAL reference's target-only terms leave 3 of 8 without gradient to the model)."""
    theta = [0.3, -0.2, 1.1, 0.7, -0.4, -1.3, 0.6, 0.9]
    form = TaylorGLOLoss("regression", theta).sympy(digits=6)
    f, y = sorted(form.free_symbols, key=str)
    poly = sympy.Poly(form, f, y)
    assert poly.degree(f) == 3 and poly.degree(y) == 2
    pred = torch.linspace(-1, 1, 7, dtype=torch.float64).requires_grad_(True)
    target = torch.linspace(1, -0.5, 7, dtype=torch.float64)

    def gradient(values) -> torch.Tensor:
        (grad,) = torch.autograd.grad(TaylorGLOLoss("regression", values)(pred, target), pred)
        return grad

    for i in range(8):
        bumped = list(theta)
        bumped[i] += 0.5
        assert not torch.allclose(gradient(bumped), gradient(theta)), f"theta{i} is inert"
    # the default start has the gradient of the squared error
    torch.testing.assert_close(gradient(list(SQUARED_ERROR_THETA)), 2 * (pred - target) / 7)


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


def _meta_objective(task, loss, seeds=(100, 101, 102, 103)) -> float:
    """The meta-objective after two SGD steps with ``loss``, on held-out seeds and the
    whole validation split (the fit used other seeds and random validation batches)."""
    values = []
    for seed in seeds:
        model = task.new_model(seed)
        params = {k: v.detach() for k, v in model.named_parameters()}
        generator = torch.Generator().manual_seed(seed)
        batches = [task.train.batch(SETTINGS.meta_batch_size, generator) for _ in range(2)]
        values.append(unrolled_objective(task, model, params, {}, loss, batches,
                                         (task.val.x, task.val.y), sgd_settings(SETTINGS)).item())
    return sum(values) / len(values)


def test_fit_ml3_lowers_the_meta_objective_and_is_deterministic(digits_task, fitted_ml3):
    initial = ML3Loss(digits_task.kind, seed=3)
    before = _meta_objective(digits_task, initial)
    after = _meta_objective(digits_task, fitted_ml3)
    assert after < 0.99 * before, (before, after)
    assert fitted_ml3.metadata["method"] == "ml3"
    assert len(fitted_ml3.metadata["meta_objective"]) == SETTINGS.meta_steps
    again = fit_ml3(digits_task, SETTINGS, seed=3)
    for a, b in zip(fitted_ml3.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


def test_fit_ml3_regression(sine_task):
    loss = fit_ml3(sine_task, SETTINGS.replace(meta_steps=2), seed=0)
    assert loss.task == "regression"
    assert all(math.isfinite(v) for v in loss.metadata["meta_objective"])


def test_fit_taylorglo_improves_on_its_start_and_is_deterministic(digits_task, fitted_taylorglo):
    theta = fitted_taylorglo.theta_values
    assert len(theta) == 8 and all(math.isfinite(t) for t in theta)
    meta = fitted_taylorglo.metadata
    # 9 CMA-ES candidates after the start: on digits at lr 0.5 the Brier-like start
    # (0.396 error after 20 steps) is beaten
    assert meta["evaluations"] == 10 and meta["fitness"] < meta["start_fitness"]
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    again = fit_taylorglo(digits_task, SETTINGS, seed=3, evaluations=10)
    assert again.theta_values == theta
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_fit_taylorglo_starts_at_squared_error(digits_task, sine_task, kind):
    """The documented start: squared error's gradient, so its fitness is that of training
    with the squared error itself."""
    task = digits_task if kind == "classification" else sine_task
    settings = SETTINGS.replace(lr=0.5 if kind == "classification" else 0.05)
    loss = fit_taylorglo(task, settings, seed=3, evaluations=1)
    assert tuple(loss.theta_values) == SQUARED_ERROR_THETA
    run = train(task, LearnedLoss("square(f - y)", kind), settings.fitness_steps,
                sgd_settings(settings), 3)
    expected = task.metric(run.model, task.val)
    assert loss.metadata["start_fitness"] == pytest.approx(expected, rel=1e-4)
    assert loss.metadata["fitness"] == loss.metadata["start_fitness"]


@pytest.mark.parametrize("population", [2, 5, 25])
def test_fit_taylorglo_population_is_the_settings_population(digits_task, population):
    """As the reference: CMA-ES's population is the search's population size, unclipped."""
    loss = fit_taylorglo(digits_task, SETTINGS.replace(population_size=population), seed=0,
                         evaluations=1)
    assert loss.metadata["popsize"] == population
    with pytest.raises(ValueError, match="at least 2.*popsize="):
        fit_taylorglo(digits_task, SETTINGS.replace(population_size=1, elitism=0), evaluations=1)


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
