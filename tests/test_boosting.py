"""Learned losses as XGBoost and LightGBM objectives: exact derivatives in the margins, the
baselines reproduce the libraries' built-in objectives, the standalone export computes the
same."""

from __future__ import annotations

import ast
import json
import sys

import numpy as np
import pytest
import torch
from grown_trees import grown_trees

from symloss.boosting import (
    LIBRARIES,
    _margin_derivatives,
    _Tree,
    require,
    to_objective,
    to_source,
)
from symloss.cli import main
from symloss.dual import DualTree
from symloss.expression import Expression
from symloss.library import BASELINES, BINARY_BASELINE
from symloss.metaloss import prepare_outputs
from symloss.network import LearnedLoss

MSE = LearnedLoss(BASELINES["regression"], "regression", scale=0.5)
"""The libraries' squared error is half of symloss's ``square(f - y)``."""
BCE = LearnedLoss(BINARY_BASELINE, "classification")
CE = LearnedLoss(BASELINES["classification"], "classification")
BUILTIN = {
    "xgboost": ("reg:squarederror", "binary:logistic", "multi:softprob"),
    "lightgbm": ("regression", "binary", "multiclass"),
}
RANDOM_TREES = grown_trees(200, seed=1, min_height=1, max_height=5)
PROTECTED = [
    "log(f - y)", "sqrt(f - y)", "div(1, f - y)", "log(f * 1e-7) * y", "sqrt(abs(f - y) - 1e-7)",
    "log(square(f - y)) + log(f)", "div(f - y, f * y)", "sqrt(log(f - y))", "div(log(f), f)",
    "log(1 + square(f - y))", "-(y * log(f) + (1 - y) * log(1 - f))", "-(y * sqrt(f))",
    "tanh(square(f - y))", "min(f, y) * max(f - y, 1) + sign(f - y) * abs(f)",
]
"""Losses through the protected regions: log and sqrt at and near their 1e-7 floor, the
analytic quotient, kinks."""


def _library(name: str):
    return pytest.importorskip(name, reason=f"{name} is not installed (pip install "
                                            f"'symloss[boosting]'); its objective is untested")


def _weighted(expression: str | Expression, task: str, seed: int) -> LearnedLoss:
    """The loss with seeded random edge weights around 1 and a random scale."""
    loss = LearnedLoss(expression, task)
    rng = np.random.default_rng(seed)
    return LearnedLoss(expression, task, 1 + 0.3 * rng.standard_normal(len(loss.weights)),
                       scale=float(rng.uniform(0.3, 3.0)))


# -- the derivatives ------------------------------------------------------------------------


def _autograd_jet(loss: LearnedLoss, f: np.ndarray, y: np.ndarray):
    """Value, first and second derivative in f of the weighted tree, by torch autograd."""
    ft = torch.tensor(f, requires_grad=True)
    value = loss.network(ft, torch.tensor(y))
    (first,) = torch.autograd.grad(value.sum(), ft, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), ft, allow_unused=True) \
        if first.requires_grad else (None,)
    second = torch.zeros_like(ft) if second is None else second
    return value.detach().numpy(), first.detach().numpy(), second.numpy()


def test_jets_equal_autograd_and_dual():
    """First and second derivatives of 200 random weighted trees and the protected forms
    equal torch autograd's (second order) and symloss.dual's (first order), in float64."""
    rng = np.random.default_rng(0)
    y = rng.normal(0, 1, (64, 1))
    f = np.concatenate([rng.normal(0, 2, (40, 1)), y[40:48] + 3e-7, y[48:56] - 1e-3,
                        rng.uniform(1e-9, 1e-6, (8, 1))])
    compared = 0
    for i, expression in enumerate([*RANDOM_TREES, *map(Expression.parse, PROTECTED)]):
        loss = _weighted(expression, "regression", seed=i)
        expected = _autograd_jet(loss, f, y)
        with np.errstate(all="ignore"):
            got = [np.broadcast_to(x, f.shape) for x in _Tree(expression, loss.weights)(f, y)]
            _, dual = DualTree(expression, y)(f)
            _, unit, _ = _Tree(expression, [1.0] * len(loss.weights))(f, y)
        if not np.all(np.isfinite(expected[0])):
            continue
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9 * (1 + np.abs(b).max()),
                                       err_msg=str(expression))
        if dual is not None:
            np.testing.assert_allclose(np.broadcast_to(unit, f.shape), dual, rtol=1e-9,
                                       atol=1e-12, err_msg=str(expression))
        compared += 1
    assert compared > 180


def _per_example_loss(loss: LearnedLoss, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The loss of each example at margins z, from the torch LearnedLoss's own parts."""
    zt = torch.tensor(z.reshape(len(z), -1))
    target = torch.tensor(labels).long() if z.ndim == 2 else torch.tensor(labels)
    f, y = prepare_outputs(zt, target, loss.task)
    return (loss.scale * loss.network(f, y).sum(dim=1)).numpy()


def _margin_cases(rng: np.random.Generator):
    """(task, margins, labels): regression near its targets (protected regions), binary and
    4-class classification."""
    labels = rng.normal(0, 1, 24)
    z = np.concatenate([labels[:8] + rng.normal(0, 1, 8), labels[8:16] + 4e-7,
                        labels[16:] - 2e-3])
    return [("regression", z, labels),
            ("classification", rng.normal(0, 2, 24), rng.integers(0, 2, 24).astype(float)),
            ("classification", rng.normal(0, 2, (24, 4)), rng.integers(0, 4, 24).astype(float))]


def _finite_difference(function, z: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Central differences of an elementwise-in-rows ``function`` along each margin column:
    ``[n, k]``, column ``c`` moving only margin ``c`` of every example."""
    z2 = z.reshape(len(z), -1)
    out = np.empty_like(z2)
    for c in range(z2.shape[1]):
        up, down = z2.copy(), z2.copy()
        up[:, c] += step[:, c]
        down[:, c] -= step[:, c]
        values = [function(m.reshape(z.shape)).reshape(len(z), -1) for m in (up, down)]
        column = c if values[0].shape[1] > 1 else 0
        out[:, c] = (values[0][:, column] - values[1][:, column]) / (2 * step[:, c])
    return out


def test_margin_gradient_and_hessian_match_finite_differences():
    """For 200 random weighted expressions and the protected forms, through the identity,
    sigmoid and softmax: the gradient is the finite difference of the per-example loss, the
    Hessian (exact diagonal, before any factor or floor) the finite difference of the
    gradient. A point is compared where two step sizes agree (no kink in between)."""
    rng = np.random.default_rng(1)
    compared = total = 0
    for i, expression in enumerate([*RANDOM_TREES, *map(Expression.parse, PROTECTED)]):
        for task, z, labels in _margin_cases(rng):
            loss = _weighted(expression, task, seed=i)
            tree = _Tree(loss.expression, loss.weights)
            transform = "identity" if task == "regression" else (
                "softmax" if z.ndim == 2 else "sigmoid")
            y = np.eye(4)[labels.astype(int)] if z.ndim == 2 else labels

            def derivatives(m, loss=loss, tree=tree, transform=transform, y=y):
                with np.errstate(all="ignore"):
                    return _margin_derivatives(tree, loss.scale, transform, m, y)

            value, g, h = derivatives(z)
            reference = _per_example_loss(loss, z, labels)
            if not (np.all(np.isfinite(reference)) and np.all(np.isfinite(h))):
                continue
            np.testing.assert_allclose(value, reference, rtol=1e-9, atol=1e-12)
            g2, h2 = g.reshape(len(z), -1), h.reshape(len(z), -1)
            def value_of(m, loss=loss, labels=labels):
                return _per_example_loss(loss, m, labels)

            for exact, function in ((g2, value_of), (h2, lambda m: derivatives(m)[1])):
                # steps small beside the distance to the 1e-7 floors of the cases
                step = 1e-8 * np.maximum(1.0, np.abs(z.reshape(len(z), -1)))
                fine = _finite_difference(function, z, step)
                coarse = _finite_difference(function, z, 2 * step)
                size = 1e-5 * (1 + np.abs(exact)) + 1e-4 * np.abs(fine - coarse).max(initial=0)
                smooth = np.abs(fine - coarse) <= 1e-6 * (1 + np.abs(fine))
                assert np.all(np.abs(fine - exact)[smooth] <= size[smooth] + 1e-6 *
                              np.abs(exact)[smooth]), (str(expression), task, transform)
                compared += int(smooth.sum())
                total += smooth.size
    assert compared > 0.9 * total


def test_hessian_is_floored_relative_to_the_mean_curvature():
    """The Cauchy loss is concave for |f - y| > 1: those Hessians are raised to
    hessian_floor times the mean positive Hessian, the rest are exact."""
    rng = np.random.default_rng(0)
    labels = rng.normal(0, 1, 200)
    z = labels + rng.normal(0, 2, 200)
    cauchy = LearnedLoss("log(1 + square(f - y))", "regression")
    _, exact = to_objective(cauchy, "xgboost", hessian_floor=0.0).gradient_hessian(z, labels)
    assert (exact <= 1e-16).sum() > 50  # the case the floor is for
    _, floored = to_objective(cauchy, "xgboost", hessian_floor=0.1).gradient_hessian(z, labels)
    floor = 0.1 * np.maximum(exact, 0).mean()
    np.testing.assert_allclose(floored, np.maximum(exact, floor))
    assert floored.min() == pytest.approx(floor)


def test_a_loss_without_curvature_takes_unit_steps():
    """abs(f - y) has no curvature: every Hessian becomes the mean absolute gradient (a
    tiny floor would leave the libraries unable to split), and boosting then learns."""
    rng = np.random.default_rng(0)
    labels, z = rng.normal(0, 1, 50), np.zeros(50)
    absolute = LearnedLoss("abs(f - y)", "regression", scale=3.0)
    for floor in (0.0, 0.1):
        g, h = absolute.to_objective("lightgbm", hessian_floor=floor).gradient_hessian(z, labels)
        np.testing.assert_allclose(g, -3.0 * np.sign(labels))
        np.testing.assert_allclose(h, np.full(50, 3.0))
    lgb = _library("lightgbm")
    x = rng.normal(0, 1, (50, 1))
    booster = lgb.train({"objective": absolute.to_objective("lightgbm"), "verbose": -1,
                         "num_threads": 1, "min_data_in_leaf": 5},
                        lgb.Dataset(x, label=labels, init_score=z), 10)
    error = np.abs(booster.predict(x, raw_score=True) - labels).mean()
    assert error < 0.9 * np.abs(labels).mean()


def test_weights_scale_and_sample_weights():
    """Sample weights multiply the gradient pair; the scale multiplies the loss; the
    libraries' squared error is symloss's at scale 1/2."""
    rng = np.random.default_rng(0)
    z, labels, w = rng.normal(0, 1, 10), rng.normal(0, 1, 10), rng.uniform(0, 2, 10)
    half = to_objective(MSE, "lightgbm", hessian_floor=0.0)
    g, h = half.gradient_hessian(z, labels)
    np.testing.assert_allclose(g, z - labels)
    np.testing.assert_allclose(h, np.ones(10))
    full = LearnedLoss("square(f - y)", "regression").to_objective("lightgbm")
    np.testing.assert_allclose(full.gradient_hessian(z, labels)[0], 2 * (z - labels))
    gw, hw = half.gradient_hessian(z, labels, w)
    np.testing.assert_allclose(gw, w * (z - labels))
    np.testing.assert_allclose(hw, w)
    # the metric is the LearnedLoss's batch mean
    name, value, higher_is_better = half.metric(labels, z)
    assert (name, higher_is_better) == ("symloss", False)
    assert value == pytest.approx(float(MSE(torch.tensor(z), torch.tensor(labels))), rel=1e-12)


def test_wrong_labels_and_library_are_explained():
    objective = CE.to_objective("xgboost")
    with pytest.raises(ValueError, match="num_class"):
        objective.gradient_hessian(np.zeros(4), np.array([0, 1, 2, 3.0]))
    with pytest.raises(ValueError, match="class indices in 0..2"):
        objective.gradient_hessian(np.zeros((4, 3)), np.array([0, 1, 2, 3.0]))
    with pytest.raises(ValueError, match="choose one of xgboost, lightgbm"):
        CE.to_objective("catboost")
    with pytest.raises(ValueError, match="hessian_floor"):
        CE.to_objective("xgboost", hessian_floor=-1)


def test_missing_library_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightgbm", None)
    with pytest.raises(ImportError, match=r"pip install 'symloss\[boosting\]'"):
        require("lightgbm")


# -- the standalone export ------------------------------------------------------------------


@pytest.mark.parametrize("library", LIBRARIES)
def test_export_computes_what_to_objective_does(library, tmp_path):
    rng = np.random.default_rng(0)
    cases = [("regression", rng.normal(0, 1, 30), rng.normal(0, 1, 30)),
             ("classification", rng.normal(0, 2, 30), rng.integers(0, 2, 30).astype(float)),
             ("classification", rng.normal(0, 2, (30, 5)), rng.integers(0, 5, 30).astype(float))]
    expressions = [*PROTECTED, *map(str, RANDOM_TREES[:6])]
    for i, expression in enumerate(expressions):
        for task, z, labels in cases:
            loss = _weighted(expression, task, seed=i)
            source = to_source(loss, library)
            assert loss.to_source(library) == source
            imports = {a.name for node in ast.walk(ast.parse(source))
                       if isinstance(node, ast.Import) for a in node.names}
            assert imports == {"numpy"}
            namespace: dict = {}
            exec(compile(source, "<objective>", "exec"), namespace)  # noqa: S102
            objective = loss.to_objective(library)
            weights = rng.uniform(0.5, 1.5, 30)
            with np.errstate(all="ignore"):
                expected = objective(labels, z, weights)
                got = namespace["objective"](labels, z, weights)
            np.testing.assert_array_equal(got[0], expected[0], err_msg=expression)
            np.testing.assert_array_equal(got[1], expected[1], err_msg=expression)
            with np.errstate(all="ignore"):
                assert namespace["metric"](labels, z) == objective.metric(labels, z)
            np.testing.assert_array_equal(namespace["predict"](z), objective.predict(z))


def test_cli_exports_an_objective(tmp_path):
    path = CE.save(tmp_path / "ce.json")
    out = tmp_path / "objective.py"
    assert main(["export", str(path), "--to", "lightgbm", "-o", str(out)]) == 0
    namespace: dict = {}
    exec(compile(out.read_text(), str(out), "exec"), namespace)  # noqa: S102
    z, labels = np.zeros((3, 3)), np.array([0.0, 1.0, 2.0])
    g, h = namespace["objective"](labels, z)
    np.testing.assert_allclose(g, np.full((3, 3), 1 / 3) - np.eye(3))
    np.testing.assert_allclose(h, np.full((3, 3), 1.5 * (1 / 3) * (2 / 3)))


# -- against the libraries' built-in objectives ---------------------------------------------

N = 64
INDEX = np.arange(N, dtype=np.float64).reshape(-1, 1)


def _xgboost_leaves(objective: str, margin: np.ndarray, labels: np.ndarray, k: int):
    """One XGBoost tree per class grown on the example index until every example can sit
    in its own leaf, with ``eta = 1`` and no regularisation: each leaf holds the sum of its
    examples' Hessians (cover) and ``-G / H``, so ``(class, examples, G, H)`` per leaf."""
    xgb = _library("xgboost")
    data = xgb.DMatrix(INDEX, label=labels, base_margin=margin)
    params = {"objective": objective, "eta": 1.0, "reg_lambda": 0.0, "min_child_weight": 0.0,
              "max_depth": 0, "grow_policy": "lossguide", "tree_method": "hist",
              "max_bin": 256, "nthread": 1}
    booster = xgb.train({**params, **({"num_class": k} if k > 1 else {})}, data, 1)
    leaves = []

    def walk(node, cls, lo, hi):
        if "leaf" in node:
            leaves.append((cls, np.arange(lo, hi), -node["leaf"] * node["cover"], node["cover"]))
            return
        cut = int(np.ceil(node["split_condition"]))  # x < condition goes to "yes"
        children = {c["nodeid"]: c for c in node["children"]}
        walk(children[node["yes"]], cls, lo, min(hi, cut))
        walk(children[node["no"]], cls, max(lo, cut), hi)

    for t, tree in enumerate(booster.get_dump(dump_format="json", with_stats=True)):
        walk(json.loads(tree), t % k, 0, N)
    return leaves


def _lightgbm_leaves(objective: str, margin: np.ndarray, labels: np.ndarray, k: int):
    """As :func:`_xgboost_leaves`, for LightGBM (``leaf_weight`` is the sum of Hessians)."""
    lgb = _library("lightgbm")
    params = {"objective": objective, "learning_rate": 1.0, "lambda_l2": 0.0,
              "min_data_in_leaf": 1, "min_sum_hessian_in_leaf": 1e-9, "num_leaves": N,
              "max_bin": 255, "min_data_in_bin": 1, "num_threads": 1, "verbose": -1}
    data = lgb.Dataset(INDEX, label=labels, init_score=margin,
                       params={"max_bin": 255, "min_data_in_bin": 1, "verbose": -1})
    booster = lgb.train({**params, **({"num_class": k} if k > 1 else {})}, data, 1)
    leaves = []

    def walk(node, cls, lo, hi):
        if "leaf_value" in node:
            leaves.append((cls, np.arange(lo, hi), -node["leaf_value"] * node["leaf_weight"],
                           node["leaf_weight"]))
            return
        cut = int(np.floor(node["threshold"])) + 1  # x <= threshold goes left
        walk(node["left_child"], cls, lo, min(hi, cut))
        walk(node["right_child"], cls, max(lo, cut), hi)

    for t, tree in enumerate(booster.dump_model()["tree_info"]):
        walk(tree["tree_structure"], t % k, 0, N)
    return leaves


@pytest.mark.parametrize("library", LIBRARIES)
def test_baselines_reproduce_the_builtin_gradient_pairs(library):
    """On random margins, the exported objective's gradient and Hessian of each baseline
    equal the library's own, read back from a tree that puts each example in its own leaf
    (a leaf of several examples compares their sums), to 1e-6."""
    leaves_of = _xgboost_leaves if library == "xgboost" else _lightgbm_leaves
    rng = np.random.default_rng(0)
    # in float32, as the libraries store margins and labels
    regression = rng.normal(0, 2, N).astype(np.float32), rng.normal(0, 1, N).astype(np.float32)
    binary = rng.normal(0, 2, N).astype(np.float32), rng.integers(0, 2, N).astype(np.float32)
    multi = rng.normal(0, 2, (N, 4)).astype(np.float32), rng.integers(0, 4, N).astype(np.float32)
    singles = 0
    for loss, builtin, (margin, labels) in zip((MSE, BCE, CE), BUILTIN[library],
                                               (regression, binary, multi), strict=True):
        k = margin.shape[1] if margin.ndim == 2 else 1
        g, h = loss.to_objective(library, hessian_floor=0.0).gradient_hessian(margin, labels)
        g, h = g.reshape(N, k), h.reshape(N, k)
        for cls, examples, leaf_g, leaf_h in leaves_of(builtin, margin, labels, k):
            assert g[examples, cls].sum() == pytest.approx(leaf_g, rel=1e-6, abs=1e-6), builtin
            assert h[examples, cls].sum() == pytest.approx(leaf_h, rel=1e-6, abs=1e-6), builtin
            singles += len(examples) == 1
    assert singles > N * (1 + 1 + 4) / 2


def _datasets():
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits

    x, y = load_diabetes(return_X_y=True)
    diabetes = x, (y - y.mean()) / y.std()
    return [("diabetes", *diabetes, 1), ("breast cancer", *load_breast_cancer(return_X_y=True), 1),
            ("digits", *load_digits(return_X_y=True), 10)]


@pytest.mark.parametrize("library", LIBRARIES)
def test_trained_boosters_match_the_builtin_objectives(library):
    """Ten rounds on diabetes, breast cancer and digits: the booster trained with the
    exported baseline objective predicts what the built-in one does, to 1e-4 in the margin
    (the libraries round gradients to float32, so a near-tie between splits could break the
    other way; it did not here), at the round early stopping picks. The metric the library
    records on the validation data for early stopping is the loss's mean there."""
    module = _library(library)
    for (name, x, y, k), loss, builtin in zip(_datasets(), (MSE, BCE, CE), BUILTIN[library],
                                             strict=True):
        objective = loss.to_objective(library, hessian_floor=0.0)
        cut = int(0.8 * len(y))
        start = np.zeros((len(y), k)) if k > 1 else np.zeros(len(y))
        history: dict = {}
        if library == "xgboost":
            params = {"nthread": 1, "max_depth": 3, "eta": 0.3,
                      **({"num_class": k} if k > 1 else {})}
            train = module.DMatrix(x[:cut], label=y[:cut], base_margin=start[:cut])
            valid = module.DMatrix(x[cut:], label=y[cut:], base_margin=start[cut:])
            custom = module.train({**params, "disable_default_eval_metric": 1}, train, 10,
                                  obj=objective, custom_metric=objective.metric,
                                  evals=[(valid, "valid")], early_stopping_rounds=10,
                                  evals_result=history, verbose_eval=False)
            reference = module.train({**params, "objective": builtin}, train, 10)
            rounds = custom.best_iteration + 1
            ours = custom.predict(valid, output_margin=True, iteration_range=(0, rounds))
            theirs = reference.predict(valid, output_margin=True, iteration_range=(0, rounds))
            recorded = history["valid"]["symloss"][rounds - 1]
        else:
            params = {"num_threads": 1, "num_leaves": 8, "learning_rate": 0.3, "verbose": -1,
                      "boost_from_average": False,
                      "deterministic": True, **({"num_class": k} if k > 1 else {})}
            train = module.Dataset(x[:cut], label=y[:cut], init_score=start[:cut])
            valid = module.Dataset(x[cut:], label=y[cut:], init_score=start[cut:],
                                   reference=train)
            custom = module.train({**params, "objective": objective, "metric": "None"}, train,
                                  10, valid_sets=[valid], valid_names=["valid"],
                                  feval=objective.metric,
                                  callbacks=[module.early_stopping(10, verbose=False),
                                             module.record_evaluation(history)])
            reference = module.train({**params, "objective": builtin}, train, 10)
            rounds = custom.best_iteration  # early stopping keeps the trees up to the best
            ours = custom.predict(x[cut:], raw_score=True)
            theirs = reference.predict(x[cut:], raw_score=True, num_iteration=rounds)
            recorded = history["valid"]["symloss"][rounds - 1]
        assert rounds >= 5, name
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4, err_msg=name)
        target = torch.tensor(y[cut:]).long() if k > 1 else torch.tensor(y[cut:]).double()
        margins = torch.tensor(ours).double().reshape(len(ours), -1)
        mean = float(loss(margins, target))
        assert recorded == pytest.approx(mean, rel=1e-5), name  # XGBoost keeps 6 digits


@pytest.mark.parametrize("library", LIBRARIES)
def test_scikit_learn_estimators_take_the_objective(library):
    """The estimators call the objective as ``(y_true, y_pred[, weight])``: three rounds of
    the exported cross-entropy give the built-in objective's margins on digits."""
    module = _library(library)
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = x[:300], y[:300]
    objective = CE.to_objective(library, hessian_floor=0.0)
    if library == "xgboost":
        common = {"n_estimators": 3, "n_jobs": 1, "max_depth": 3, "base_score": 0.0}
        ours = module.XGBClassifier(objective=objective, **common).fit(x, y)
        theirs = module.XGBClassifier(objective="multi:softprob", **common).fit(x, y)
        margins = [m.predict(x, output_margin=True) for m in (ours, theirs)]
    else:
        common = {"n_estimators": 3, "n_jobs": 1, "verbose": -1, "boost_from_average": False}
        ours = module.LGBMClassifier(objective=objective, **common).fit(x, y)
        theirs = module.LGBMClassifier(objective="multiclass", **common).fit(x, y)
        margins = [m.predict(x, raw_score=True) for m in (ours, theirs)]
    assert margins[0].shape == (300, 10)
    np.testing.assert_allclose(margins[0], margins[1], rtol=0, atol=1e-5)
