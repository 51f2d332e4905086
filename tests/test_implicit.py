"""Local search by implicit differentiation: the hypergradient, its edge cases, known answers."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from symloss.config import Settings
from symloss.evaluator import Evaluator
from symloss.implicit import hypergradient, neumann_inverse_hvp
from symloss.local_search import local_search, normalised_candidate
from symloss.network import LearnedLoss
from symloss.records import OK
from symloss.scale import reference_batch
from symloss.task import make_task

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def known_answer():
    spec = importlib.util.spec_from_file_location("known_answer", BENCHMARKS / "known_answer.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["known_answer"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def linear_task():
    """Three standardised features, linear targets plus noise; a linear model."""
    rng = np.random.default_rng(0)
    beta = np.array([1.0, -2.0, 0.5])

    def split(n):
        x = rng.normal(size=(n, 3))
        return x.astype(np.float32), (x @ beta + 0.3 + 0.5 * rng.normal(size=n)).astype(
            np.float32)

    return make_task({"train": split(96), "val": split(64), "test": split(32)}, "linear",
                     task="regression")


def _candidate(expression):
    loss = LearnedLoss(expression, "regression")
    return lambda leaves: lambda outputs, targets: loss(outputs, targets, leaves["weights"])


def _leaves(values):
    return {"weights": torch.tensor(values, dtype=torch.float64, requires_grad=True)}


def _set_linear(model, theta):
    """Put ``theta`` (coefficients then intercept) into a built-in linear model."""
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][0]
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(theta[:-1]).reshape(1, -1))
        linear.bias.copy_(torch.as_tensor(theta[-1:]))


def _ols(split):
    x = np.c_[split.x.numpy().astype(np.float64), np.ones(len(split))]
    return np.linalg.lstsq(x, split.y.numpy().astype(np.float64), rcond=None)[0]


def _val_mse(task, theta):
    x = np.c_[task.val.x.numpy().astype(np.float64), np.ones(len(task.val))]
    return float(((x @ theta - task.val.y.numpy()) ** 2).mean())


def test_settings_validate_the_implicit_fields():
    assert Settings().local_search_method == "unrolled"
    assert Settings(local_search_method="implicit").neumann_terms == 10
    with pytest.raises(ValueError, match="local_search_method must be one of"):
        Settings(local_search_method="implict")
    with pytest.raises(ValueError, match="local_search_method must be str"):
        Settings(local_search_method=1)
    with pytest.raises(ValueError, match="neumann_alpha must be positive"):
        Settings(neumann_alpha=0.0)
    with pytest.raises(ValueError, match="neumann_terms must be non-negative"):
        Settings(neumann_terms=-1)
    with pytest.raises(ValueError, match="implicit_inner_steps must be at least 1"):
        Settings(implicit_inner_steps=0)
    data = Settings(local_search_method="implicit").to_dict()
    assert Settings.from_dict(data).local_search_method == "implicit"


def test_neumann_series_inverts_a_positive_definite_matrix():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, generator=generator, dtype=torch.float64)
    h = a @ a.T / 6 + 0.5 * torch.eye(6, dtype=torch.float64)
    v = torch.randn(6, generator=generator, dtype=torch.float64)
    alpha = 1.0 / float(torch.linalg.eigvalsh(h).max())
    (p,) = neumann_inverse_hvp(lambda u: [h @ u[0]], [v], terms=2000, alpha=alpha)
    assert torch.allclose(p, torch.linalg.solve(h, v), rtol=1e-6, atol=1e-8)
    (short,) = neumann_inverse_hvp(lambda u: [h @ u[0]], [v], terms=2, alpha=alpha)
    assert not torch.allclose(short, torch.linalg.solve(h, v), rtol=1e-2)


def test_neumann_series_of_a_zero_hessian_is_a_scaled_vector():
    v = torch.tensor([1.0, -2.0])
    (p,) = neumann_inverse_hvp(lambda u: [torch.zeros_like(u[0])], [v], terms=9, alpha=0.1)
    assert torch.allclose(p, 1.0 * v)


def test_hypergradient_matches_finite_differences(linear_task):
    """At the exact minimiser of ``(w_sub (w_f f - w_y y))^2`` -- the least-squares fit to
    ``(w_y / w_f) y`` -- the implicit hypergradient is the derivative of the validation
    MSE of that closed-form minimiser."""
    phi = np.array([1.2, 0.9, 1.1])  # edge weights: f, y, (f - y)
    ols = _ols(linear_task.train)

    def val_mse(weights):
        return _val_mse(linear_task, weights[1] / weights[0] * ols)

    expected = []
    for i in range(3):
        step = np.zeros(3)
        step[i] = 1e-5
        expected.append((val_mse(phi + step) - val_mse(phi - step)) / 2e-5)
    model = linear_task.new_model(0)
    _set_linear(model, phi[1] / phi[0] * ols)
    settings = Settings(neumann_terms=400, neumann_alpha=0.1)
    train = (linear_task.train.x, linear_task.train.y)
    val = (linear_task.val.x, linear_task.val.y)
    objective, (grad,) = hypergradient(linear_task, model, _candidate("square(f - y)"),
                                       _leaves(phi.tolist()), train, val, settings)
    assert objective == pytest.approx(val_mse(phi), rel=1e-4)
    assert abs(expected[0]) > 0.05  # a real signal, not two zeros agreeing
    assert grad.numpy() == pytest.approx(np.array(expected), abs=2e-3, rel=2e-2)


def test_hypergradient_leaves_the_model_unchanged(digits_task):
    model = digits_task.new_model(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = LearnedLoss("-(y * log(f))", "classification")
    hypergradient(digits_task, model,
                  lambda w: lambda out, tgt: loss(out, tgt, w["weights"]), _leaves([1.0] * 5),
                  digits_task.train.head(32), digits_task.val.head(32), Settings())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_piecewise_linear_losses_do_not_crash(linear_task):
    """A linear model with ``|f - y|`` has an identically zero Hessian; a loss whose
    gradient does not involve its parameters has a zero mixed derivative."""
    model = linear_task.new_model(0)
    train = linear_task.train.head(64)
    val = linear_task.val.head(64)
    _, (grad,) = hypergradient(linear_task, model, _candidate("max(y - f, f - y)"),
                               _leaves([1.0] * 6), train, val, Settings())
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0

    def detached(leaves):
        return lambda outputs, targets: (
            (outputs.reshape(-1) - targets).abs().mean() + leaves["weights"].sum())

    _, (grad,) = hypergradient(linear_task, model, detached, _leaves([1.0, 2.0]), train, val,
                               Settings())
    assert torch.equal(grad, torch.zeros(2, dtype=torch.float64))
    settings = Settings(local_search_method="implicit", meta_steps=4, implicit_inner_steps=3,
                        meta_batch_size=32, batch_size=32)
    result = local_search(linear_task, "max(y - f, sign(f - y))", settings, seed=0)
    assert not result.stopped_early and len(result.objective) == 4
    assert all(math.isfinite(w) for w in result.weights)


def test_normalised_candidate_learns_no_scale(linear_task):
    """Scaling ``square(f - y)`` by its last edge weight changes a normalised loss not at
    all, so that weight's hypergradient is zero; without normalisation it is not."""
    model = linear_task.new_model(0)  # far from a stationary point
    train, val = linear_task.train.head(64), linear_task.val.head(64)
    normalised = normalised_candidate(LearnedLoss("square(f - y)", "regression"), linear_task,
                                      reference_batch(linear_task))
    phi = [1.2, 0.9, 1.1]
    _, (plain,) = hypergradient(linear_task, model, _candidate("square(f - y)"), _leaves(phi),
                                train, val, Settings())
    _, (scaled,) = hypergradient(linear_task, model, normalised,
                                 _leaves(phi), train, val, Settings())
    assert abs(float(plain[2])) > 0.05 * abs(float(plain[0])), plain
    # zero up to float32 rounding, while the shape weights get a real signal
    assert abs(float(scaled[2])) < 1e-3 * abs(float(scaled[0])), scaled
    assert torch.isfinite(scaled).all() and abs(float(scaled[0])) > 1e-3


def test_implicit_search_is_deterministic_and_stops_on_non_finite(sine_task, tiny_settings):
    settings = tiny_settings.replace(local_search_method="implicit", meta_steps=3,
                                     implicit_inner_steps=2, neumann_terms=2)
    a = local_search(sine_task, "square(f - y)", settings, seed=3)
    assert a == local_search(sine_task, "square(f - y)", settings, seed=3)
    assert a.weights != local_search(sine_task, "square(f - y)", settings, seed=4).weights
    exploding = settings.replace(lr=0.5, meta_steps=5)
    result = local_search(sine_task, "square(square(square(f - y))) * 1000", exploding, seed=0)
    assert result.stopped_early and len(result.objective) < 5
    assert all(math.isfinite(w) for w in result.weights)


def test_evaluator_scores_with_the_implicit_search(digits_task, tiny_settings):
    settings = tiny_settings.replace(local_search_method="implicit", meta_steps=2,
                                     implicit_inner_steps=2, neumann_terms=2,
                                     local_search_guard=False)
    evaluation = Evaluator(digits_task, settings, seed=0).evaluate("-(y * log(f))")
    assert evaluation.status == OK and len(evaluation.weights) == 5
    assert evaluation.weights != (1.0,) * 5 and "local_search" in evaluation.timings


def _search(known, **overrides):
    """100 Adam steps at 1e-2; the implicit search at a reduced inner budget (10 SGD steps,
    5 Neumann terms) to keep the suite fast."""
    settings = Settings(lr=known.lr, meta_batch_size=128, meta_steps=100, meta_lr=1e-2,
                        implicit_inner_steps=10, neumann_terms=5, **overrides)
    return local_search(known.task, known.expression, settings, seed=1).weights


def test_known_answer_quantile(known_answer):
    """Asymmetric label noise: the best edge weights turn absolute error into the pinball
    loss of a known quantile. The implicit search lands there; the one-step unroll, with
    the same meta-budget, does not."""
    known = known_answer.quantile_task()
    tau = known_answer.QUANTILE
    assert known.implied_quantile() == pytest.approx(0.5, abs=0.02)  # the median at the start
    implicit = known.implied_quantile(_search(known, local_search_method="implicit"))
    unrolled = known.implied_quantile(_search(known, unroll_steps=1))
    assert abs(implicit - tau) < 0.05, implicit
    assert abs(unrolled - tau) > 0.1, unrolled


def test_known_answer_mixture(known_answer):
    """An equal mix of squared and absolute error is biased under skewed label noise; the
    unbiased mix is known. The implicit search moves the loss's offset well towards 0; the
    one-step unroll, with the same meta-budget, does not."""
    known = known_answer.mixture_task()
    start = known.offset()
    assert start < -0.2
    implicit = known.offset(_search(known, local_search_method="implicit"))
    unrolled = known.offset(_search(known, unroll_steps=1))
    assert abs(implicit) < 0.35 * abs(start), (start, implicit)
    assert abs(unrolled) > 0.9 * abs(start), (start, unrolled)
