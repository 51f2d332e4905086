"""Learned losses as XGBoost and LightGBM custom objectives, with exact derivatives.

A gradient-boosting library fits each tree to the first and second derivatives of the
loss of every example with respect to its raw score (the *margin*). A symbolic loss has
both exactly: each node of the tree is evaluated as a *jet* ``(value, first derivative,
second derivative)`` in the prediction ``f``, by the rules below, in one forward pass
(the second-order extension of :mod:`symloss.dual`); the chain rule then carries them
through the output transform to the margin ``z``:

- regression: ``f = z``;
- binary classification (one margin column): ``f = sigmoid(z)``, exact second
  derivative;
- multi-class: ``f = softmax(z)``, the *diagonal* of the Hessian, times the library's
  own factor: 2 for XGBoost (``multi:softprob`` uses ``2 p (1 - p)``), ``K / (K - 1)``
  for LightGBM (``multiclass``). Both libraries grow one tree per class per round from
  per-class gradient pairs, so they need a diagonal; the exact diagonal overstates how
  far a step may go, because the classes move together (the full Hessian
  ``diag(p) - p p^T`` is singular along ``z + c``). For cross-entropy ``2 diag(p(1-p))``
  bounds the full Hessian from above (Gershgorin), so XGBoost's steps never overshoot the
  quadratic model; ``K / (K - 1)`` is Friedman's (2001) multi-class step. Using each
  library's factor makes the cross-entropy baseline reproduce the built-in objective, so
  a learned loss is compared with it on equal terms. For other losses the factor is the
  library's choice carried over, not a bound.

The loss is per example, as the libraries' own objectives are: ``scale`` times the sum of
the tree over the outputs (classes), not averaged over the batch; sample weights multiply
gradient and Hessian. The learned edge weights and ``scale`` of the
:class:`~symloss.network.LearnedLoss` are applied as it applies them.

A robust loss has regions of zero or negative curvature (``abs``, ``log(1 + r^2)`` for
``|r| > 1``, saturation), where a Newton step ``-G / H`` is undefined or points the wrong
way. Every Hessian value is therefore floored: ``h = max(h, floor)`` with
``floor = max(hessian_floor * mean(max(h, 0)), 1e-16)``, the mean taken (with the sample
weights) over all examples and outputs of the call, that is, the round's training set.
``1e-16`` is XGBoost's own floor in ``binary:logistic`` and ``multi:softprob``; it keeps a
leaf's sum of Hessians positive, and the libraries' split guards (``min_child_weight``,
``min_sum_hessian_in_leaf``) keep a leaf from holding floored values alone. The optional
relative part (``hessian_floor``, 0 by default) does not depend on the units of the loss
and bounds the step of a leaf whose examples all lie in a flat or concave region to
``|G| / (hessian_floor * mean curvature)``. A loss with no positive curvature
on the round's data at all (piecewise linear, such as ``abs(f - y)``) gets the mean
absolute gradient as every Hessian instead: a leaf then moves by the weighted mean of its
gradients' directions, at most one margin unit (times the learning rate), as LightGBM's
L1 objective does with a unit Hessian; a tiny floor would leave its trees unable to
split. The relative part binds for convex losses too where their curvature is small
(confident examples under cross-entropy); without it the baselines get exactly the
libraries' built-in gradient pairs (docs/boosting.md measures both).

Everything numeric here is plain numpy in module-level functions that :func:`to_source`
copies into the standalone file it writes; ``xgboost`` and ``lightgbm`` are never
imported (the objective only calls ``get_label`` and ``get_weight`` on the data object
the library passes in).
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable
from typing import Any

import numpy as np

from symloss.export import Exportable
from symloss.expression import Expression
from symloss.kinds import CLASSIFICATION
from symloss.primitives import EPS, PRIMITIVES
from symloss.version import __version__

LIBRARIES = ("xgboost", "lightgbm")
"""Boosting libraries :func:`to_objective` and :func:`to_source` write objectives for."""

DEFAULT_HESSIAN_FLOOR = 0.0
"""Default relative floor of the Hessian (see the module docstring): none, so that the
baselines are the libraries' built-in objectives; on the robust losses of
benchmarks/boosting.py, floors of 0.1 and 1 did no better than none."""

MIN_HESSIAN = 1e-16
"""The absolute floor under every Hessian value (XGBoost's own, for its logistic and
softmax objectives); it keeps a leaf's sum of Hessians positive."""

Jet = tuple[Any, Any, Any]
"""A node's value and its first and second derivatives in ``f`` (arrays or floats)."""


# -- second-order rules, one per primitive -------------------------------------------------
# Each takes the jets of its arguments and returns the jet of its value. Derivatives at
# kinks and ties follow symloss.dual (torch autograd): abs and sign have derivative 0 at 0,
# min and max split a tie evenly, log and sqrt are flat where |a| is at the 1e-7 floor.


def _add(a, da, sa, b, db, sb):
    return a + b, da + db, sa + sb


def _sub(a, da, sa, b, db, sb):
    return a - b, da - db, sa - sb


def _mul(a, da, sa, b, db, sb):
    return a * b, da * b + a * db, sa * b + 2.0 * da * db + a * sb


def _div(a, da, sa, b, db, sb):
    # a * r with r = 1 / sqrt(1 + b^2), written with t = b r (|t| <= 1) so that nothing
    # overflows where b is huge
    s = np.hypot(1.0, b)
    r = 1.0 / s
    t = b / s
    dr = -t * r * r * db
    sr = -r * r * (r * (1.0 - 3.0 * t * t) * db * db + t * sb)
    return a * r, da * r + a * dr, sa * r + 2.0 * da * dr + a * sr


def _pick(first, second, x, y):
    return np.where(first, x, np.where(second, y, 0.5 * (x + y)))


def _min(a, da, sa, b, db, sb):
    below, above = a < b, b < a
    return np.minimum(a, b), _pick(below, above, da, db), _pick(below, above, sa, sb)


def _max(a, da, sa, b, db, sb):
    above, below = a > b, b > a
    return np.maximum(a, b), _pick(above, below, da, db), _pick(above, below, sa, sb)


def _sign(a, da, sa):
    return np.sign(a), 0.0, 0.0


def _square(a, da, sa):
    return a * a, 2.0 * a * da, 2.0 * (da * da + a * sa)


def _abs(a, da, sa):
    s = np.sign(a)
    return np.abs(a), s * da, s * sa


def _log(a, da, sa):
    inside = np.abs(a) > EPS
    ratio = da / a
    return (np.log(np.maximum(np.abs(a), EPS)), np.where(inside, ratio, 0.0),
            np.where(inside, sa / a - ratio * ratio, 0.0))


def _sqrt(a, da, sa):
    inside = np.abs(a) > EPS
    v = np.sqrt(np.maximum(np.abs(a), EPS))
    s = np.sign(a)
    first = s * da / (2.0 * v)
    return (v, np.where(inside, first, 0.0),
            np.where(inside, s * sa / (2.0 * v) - first * first / v, 0.0))


def _tanh(a, da, sa):
    v = np.tanh(a)
    u = 1.0 - v * v
    return v, u * da, u * sa - 2.0 * v * u * da * da


RULES: dict[str, Callable[..., Jet]] = {
    "add": _add, "sub": _sub, "mul": _mul, "div": _div, "min": _min, "max": _max,
    "sign": _sign, "square": _square, "abs": _abs, "log": _log, "sqrt": _sqrt, "tanh": _tanh,
}
"""Primitive name -> second-order rule (a primitive without one cannot be exported)."""

_HELPERS = {"min": (_pick,), "max": (_pick,)}


# -- from the loss tree to the margin ------------------------------------------------------


def _transform_of(task, margin):
    """The output transform of a loss of ``task`` on margins of this shape."""
    if task == "regression":  # copied into exported sources: no symloss names
        return "identity"
    return "softmax" if margin.ndim == 2 and margin.shape[1] > 1 else "sigmoid"


def _targets(transform, margin, labels):
    """The tree's ``y`` for the margins: one-hot labels (softmax), else the labels in the
    margins' shape."""
    labels = np.asarray(labels, dtype=np.float64)
    n = margin.shape[0]
    if transform == "softmax":
        k = margin.shape[1]
        index = labels.reshape(-1).astype(np.int64)
        valid = np.all(index == labels.reshape(-1)) and np.all((index >= 0) & (index < k))
        if labels.size != n or not valid:
            raise ValueError(
                f"multi-class labels must be {n} class indices in 0..{k - 1} (one per row "
                f"of the margins, shape {margin.shape}); got {labels.size} labels")
        return np.eye(k)[index]
    if labels.size != margin.size:
        raise ValueError(
            f"got {labels.size} labels for margins of shape {margin.shape}; the loss needs "
            "one target per margin value")
    y = labels.reshape(margin.shape)
    if transform == "sigmoid" and np.any((y < 0) | (y > 1)):
        raise ValueError(
            "a classification loss on one margin column is binary: labels must lie in "
            "[0, 1]; for more classes set the library's number of classes (XGBoost "
            "num_class, LightGBM num_class) so that it passes one margin per class")
    return y


def _hessian_factor(library, transform, margin):
    """The library's factor on the diagonal softmax Hessian (1 without softmax)."""
    if transform != "softmax":
        return 1.0
    k = margin.shape[1]
    return 2.0 if library == "xgboost" else k / (k - 1.0)


def _margin_derivatives(tree, scale, transform, margin, y):
    """Per example: the loss, and its gradient and (diagonal) Hessian in the margins,
    before any factor or floor."""
    if transform == "identity":
        f = margin
    elif transform == "sigmoid":
        p = np.exp(-np.logaddexp(0.0, -margin))
        q = np.exp(-np.logaddexp(0.0, margin))
        f = p
    else:
        e = np.exp(margin - margin.max(axis=1, keepdims=True))
        f = e / e.sum(axis=1, keepdims=True)
    value, d, s = tree(f, y)
    value = scale * (value + np.zeros_like(f))
    d = scale * (d + np.zeros_like(f))
    s = scale * (s + np.zeros_like(f))
    per_example = value.sum(axis=1) if value.ndim == 2 else value
    if transform == "identity":
        return per_example, d, s
    if transform == "sigmoid":
        u = p * q
        return per_example, d * u, s * u * u + d * u * (q - p)
    spread = d - (d * f).sum(axis=1, keepdims=True)
    curvature = (s * f * f).sum(axis=1, keepdims=True)
    return (per_example, f * spread,
            f * (1.0 - 2.0 * f) * spread + f * f * (s * (1.0 - 2.0 * f) + curvature))


def _floored(h, g, weights, hessian_floor):
    """``max(h, max(hessian_floor * mean(max(h, 0)), 1e-16))``, the means weighted; where
    no value has positive curvature, the mean absolute gradient."""
    w = np.ones_like(h) if weights is None else \
        weights.reshape((-1,) + (1,) * (h.ndim - 1)) + np.zeros_like(h)
    total = max(w.sum(), 1e-300)
    curvature = (np.maximum(h, 0.0) * w).sum() / total
    if curvature == 0.0:  # flat everywhere (piecewise linear): unit steps in the margin
        return np.maximum(h, (np.abs(g) * w).sum() / total)
    return np.maximum(h, max(hessian_floor * curvature, 1e-16))


def _gradient_hessian(tree, scale, task, library, hessian_floor, margin, labels, weights):
    """Gradient and Hessian of the per-example loss in the margins, factor, floor and
    sample weights applied, in the margins' shape."""
    margin = np.asarray(margin, dtype=np.float64)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64).reshape(-1) if np.size(weights) else None
    transform = _transform_of(task, margin)
    with np.errstate(all="ignore"):
        y = _targets(transform, margin, labels)
        _, g, h = _margin_derivatives(tree, scale, transform, margin, y)
        h = _floored(h * _hessian_factor(library, transform, margin), g, weights,
                     hessian_floor)
    if weights is not None:
        shape = (-1,) + (1,) * (g.ndim - 1)
        g, h = g * weights.reshape(shape), h * weights.reshape(shape)
    return g, h


def _mean_loss(tree, scale, task, margin, labels, weights):
    """The loss averaged over the examples (weighted when weights are given)."""
    margin = np.asarray(margin, dtype=np.float64)
    transform = _transform_of(task, margin)
    with np.errstate(all="ignore"):
        y = _targets(transform, margin, labels)
        value, _, _ = _margin_derivatives(tree, scale, transform, margin, y)
    if weights is None or np.size(weights) == 0:
        return float(value.mean())
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    return float((value * weights).sum() / weights.sum())


def _predict(task, margin):
    """What the model predicts from raw margins: the probabilities (sigmoid or softmax)
    for classification, the margins for regression."""
    margin = np.asarray(margin, dtype=np.float64)
    transform = _transform_of(task, margin)
    if transform == "identity":
        return margin
    if transform == "sigmoid":
        return np.exp(-np.logaddexp(0.0, -margin))
    e = np.exp(margin - margin.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# -- the libraries' calling conventions ----------------------------------------------------


def _data_labels_weights(data):
    """Labels and sample weights (None when there are none) of the data object the
    library passes to a native objective or metric."""
    weights = data.get_weight()
    if weights is not None and np.size(weights) == 0:
        weights = None
    return data.get_label(), weights


def _call(library, a, b, sample_weight):
    """``(margins, labels, weights)`` of a call in the native convention
    ``(predictions, data)`` or the scikit-learn one ``(y_true, y_pred[, weight])``."""
    if isinstance(b, np.ndarray):
        return b, a, sample_weight
    labels, weights = _data_labels_weights(b)
    return a, labels, weights


def _metric_result(library, value, native):
    """The metric's return value in the library's convention."""
    if library == "lightgbm":
        return "symloss", value, False
    return ("symloss", value) if native else value


# -- the compiled tree ---------------------------------------------------------------------


def _check_rules(expression: Expression) -> None:
    missing = sorted({e.op for e in expression.nodes() if e.op in PRIMITIVES} - set(RULES))
    if missing:
        raise ValueError(
            f"no second-order rule for {', '.join(missing)} in symloss.boosting.RULES; add "
            "one (value, first and second derivative) to export this loss to a boosting "
            "library")


class _Tree:
    """``tree(f, y)``: the loss tree's values and first and second derivatives in ``f``,
    elementwise, with the learned edge weights (not the scale)."""

    def __init__(self, expression: Expression, weights: list[float]) -> None:
        _check_rules(expression)
        self._program = expression.program()
        self._weights = weights

    def __call__(self, f: np.ndarray, y: np.ndarray) -> Jet:
        jets: list[Jet] = []
        root = len(self._program) - 1
        for i, (op, children, constant) in enumerate(self._program):
            if op == "f":
                jet: Jet = (f, 1.0, 0.0)
            elif op == "y":
                jet = (y, 0.0, 0.0)
            elif op == "const":
                jet = (np.float64(constant), 0.0, 0.0)
            else:
                jet = RULES[op](*(x for c in children for x in jets[c]))
            if i != root and self._weights[i] != 1.0:
                w = self._weights[i]
                jet = (w * jet[0], w * jet[1], w * jet[2])
            jets.append(jet)
        return jets[root]


def _check_library(library: str) -> str:
    if library not in LIBRARIES:
        raise ValueError(
            f"unknown boosting library {library!r}; choose one of {', '.join(LIBRARIES)}")
    return library


def _check_floor(hessian_floor: float) -> float:
    if not (isinstance(hessian_floor, int | float) and 0.0 <= hessian_floor < np.inf):
        raise ValueError(
            f"hessian_floor must be a finite number >= 0, got {hessian_floor!r}")
    return float(hessian_floor)


class BoostingObjective:
    """A learned loss as a custom objective of XGBoost or LightGBM.

    Call it as the library calls an objective: natively ``objective(predictions, data)``
    (``xgboost.train(..., obj=objective)``; LightGBM ``params["objective"] =
    objective``), or in the scikit-learn convention ``objective(y_true, y_pred,
    sample_weight)`` (``XGBRegressor(objective=...)``, ``LGBMClassifier(objective=...)``).
    It returns the gradient and Hessian of the per-example loss with respect to the raw
    margins, in the margins' shape (``[n]``, or ``[n, classes]`` for multi-class). See
    :mod:`symloss.boosting` for the transform, the Hessian approximation and the floor.

    Parameters
    ----------
    loss : Exportable
        The loss; its edge weights and scale are honoured.
    library : {"xgboost", "lightgbm"}
        Whose conventions to follow (calling convention, multi-class Hessian factor).
    hessian_floor : float, default 0
        The relative floor of the Hessian (0: only XGBoost's absolute 1e-16, and the
        fallback for a loss without curvature).

    Attributes
    ----------
    metric : BoostingMetric
        The matching evaluation metric, for early stopping.

    Examples
    --------
    >>> import numpy as np
    >>> from symloss import LearnedLoss
    >>> objective = BoostingObjective(LearnedLoss("square(f - y)", "regression"), "xgboost")
    >>> grad, hess = objective(np.array([1.0, 2.0]), np.array([0.5, 2.0]))
    >>> grad.tolist(), hess.tolist()
    ([-1.0, 0.0], [2.0, 2.0])
    """

    def __init__(self, loss: Exportable, library: str,
                 hessian_floor: float = DEFAULT_HESSIAN_FLOOR) -> None:
        self.library = _check_library(library)
        self.task = loss.task
        self.scale = loss.scale
        self.hessian_floor = _check_floor(hessian_floor)
        self._tree = _Tree(loss.expression, loss.weights)
        self.metric = BoostingMetric(loss, library)

    def __call__(self, a: Any, b: Any,
                 sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        margin, labels, weights = _call(self.library, a, b, sample_weight)
        return self.gradient_hessian(margin, labels, weights)

    def gradient_hessian(
        self, margin: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Gradient and floored Hessian at ``margin`` (``[n]`` or ``[n, k]``) for
        ``labels`` (``[n]``, or ``[n, k]`` for multi-output regression)."""
        return _gradient_hessian(self._tree, self.scale, self.task, self.library,
                                 self.hessian_floor, margin, labels, weights)

    def predict(self, margin: np.ndarray) -> np.ndarray:
        """Predictions from the raw margins a booster trained with this objective returns
        (probabilities for classification)."""
        return _predict(self.task, margin)


class BoostingMetric:
    """The loss's mean over examples (weighted) as an evaluation metric, lower is better.

    Natively ``metric(predictions, data)``: XGBoost's ``custom_metric`` (returns
    ``("symloss", value)``), LightGBM's ``feval`` (returns ``("symloss", value,
    False)``); in the scikit-learn convention ``metric(y_true, y_pred, sample_weight)``:
    ``eval_metric=`` of the libraries' estimators. Both libraries pass raw margins to a
    metric when the objective is custom.
    """

    def __init__(self, loss: Exportable, library: str) -> None:
        self.library = _check_library(library)
        self.task = loss.task
        self.scale = loss.scale
        self._tree = _Tree(loss.expression, loss.weights)
        self.__name__ = "symloss"  # XGBoost's estimators name a callable metric by it

    def __call__(self, a: Any, b: Any, sample_weight: np.ndarray | None = None) -> Any:
        margin, labels, weights = _call(self.library, a, b, sample_weight)
        value = _mean_loss(self._tree, self.scale, self.task, margin, labels, weights)
        return _metric_result(self.library, value, not isinstance(b, np.ndarray))


def to_objective(loss: Exportable, library: str,
                 hessian_floor: float = DEFAULT_HESSIAN_FLOOR) -> BoostingObjective:
    """``loss`` as a custom objective of ``library`` (see :class:`BoostingObjective`).

    Raises
    ------
    ValueError
        If ``library`` is not one of :data:`LIBRARIES` or ``hessian_floor`` is negative.
    """
    return BoostingObjective(loss, library, hessian_floor)


def require(library: str) -> Any:
    """Import and return ``library`` (``"xgboost"`` or ``"lightgbm"``), or raise an
    ImportError that says how to install it."""
    import importlib

    try:
        return importlib.import_module(_check_library(library))
    except ImportError as error:
        raise ImportError(
            f"{library} is not installed; install it with `pip install {library}` or "
            "`pip install 'symloss[boosting]'` (objectives written by symloss.boosting need "
            "only numpy, the library is needed to train with them)") from error


# -- standalone source ---------------------------------------------------------------------

_CORE = (_transform_of, _targets, _hessian_factor, _margin_derivatives, _floored,
         _gradient_hessian, _mean_loss, _predict, _data_labels_weights, _call, _metric_result)

_NAMES = {"xgboost": "XGBoost", "lightgbm": "LightGBM"}
_USAGE = {
    "xgboost": """\
    booster = xgboost.train({{{params}"disable_default_eval_metric": 1}}, dtrain,
                            evals=[(dvalid, "valid")], obj=objective,
                            custom_metric=metric)
    predictions = predict(booster.predict(dtest, output_margin=True))""",
    "lightgbm": """\
    booster = lightgbm.train({{"objective": objective, {params}"metric": "None"}},
                             train_set, valid_sets=[valid_set], feval=metric)
    predictions = predict(booster.predict(x_test, raw_score=True))""",
}


def _tree_source(loss: Exportable) -> tuple[list[str], set[str]]:
    """Lines of ``tree(f, y)`` (straight-line code, one jet per node) and the rules used."""
    _check_rules(loss.expression)
    program = loss.expression.program()
    weights = loss.weights
    used: set[str] = set()
    lines = ["def tree(f, y):",
             '    """The loss tree per value with its first and second derivative in f."""']
    root = len(program) - 1
    for i, (op, children, constant) in enumerate(program):
        names = f"v{i}, d{i}, s{i}"
        if op == "f":
            code = "f, 1.0, 0.0"
        elif op == "y":
            code = "y, 0.0, 0.0"
        elif op == "const":
            code = f"{float(constant)!r}, 0.0, 0.0"
        else:
            used.add(op)
            code = f"_{op}({', '.join(f'v{c}, d{c}, s{c}' for c in children)})"
        lines.append(f"    {names} = {code}")
        if i != root and weights[i] != 1.0:
            w = repr(float(weights[i]))
            lines.append(f"    {names} = {w} * v{i}, {w} * d{i}, {w} * s{i}")
    lines.append(f"    return v{root}, d{root}, s{root}")
    return lines, used


def to_source(loss: Exportable, library: str,
              hessian_floor: float = DEFAULT_HESSIAN_FLOOR) -> str:
    """Source of a standalone Python module (needs only numpy) defining ``objective``,
    ``metric`` and ``predict`` for ``library``, computing what :func:`to_objective` does.

    Raises
    ------
    ValueError
        If ``library`` is unknown or the loss uses a primitive without a rule.
    """
    library = _check_library(library)
    hessian_floor = _check_floor(hessian_floor)
    tree, used = _tree_source(loss)
    functions = [RULES[op] for op in sorted(used)]
    helpers = {h for op in used for h in _HELPERS.get(op, ())}
    multi = 'num_class": K, ' if loss.task == CLASSIFICATION else ""
    params = f'"{multi}' if multi else ""
    docstring = [
        f'"""{_NAMES[library]} objective for a {loss.task} loss learned by symloss '
        f'{__version__}; needs only numpy.',
        "",
        *textwrap.wrap(f"Expression ``{loss.expression}``, learned weights folded in, scale "
                       f"{loss.scale!r}; the loss is per example (summed over outputs).",
                       88, break_long_words=False, break_on_hyphens=False),
        "",
        "Use::",
        "",
        _USAGE[library].format(params=params),
        "",
        "The objective's gradient and Hessian are exact in the raw margin (sigmoid for one",
        "column, softmax for several: the diagonal of the Hessian times the library's",
        f"factor); Hessians are floored at max({hessian_floor!r} * mean positive Hessian, "
        "1e-16).",
        "Protected operators: div(a, b) = a / sqrt(1 + b^2); log and sqrt act on",
        f"max(|a|, {EPS!r}).",
        '"""',
    ]
    lines = [*docstring, "", "import numpy as np", "",
             f"EPS = {EPS!r}", f"LIBRARY = {library!r}", f"TASK = {loss.task!r}",
             f"SCALE = {loss.scale!r}", f"HESSIAN_FLOOR = {hessian_floor!r}", "", ""]
    for function in [*sorted(helpers, key=lambda h: h.__name__), *functions, *_CORE]:
        lines.extend([inspect.getsource(function).rstrip("\n"), "", ""])
    lines.extend([*tree, "", ""])
    lines.extend([
        "def objective(a, b, sample_weight=None):",
        '    """Gradient and Hessian in the raw margins: objective(predictions, data) or',
        '    objective(y_true, y_pred, sample_weight)."""',
        "    margin, labels, weights = _call(LIBRARY, a, b, sample_weight)",
        "    return _gradient_hessian(tree, SCALE, TASK, LIBRARY, HESSIAN_FLOOR, margin, "
        "labels,",
        "                             weights)",
        "",
        "",
        "def metric(a, b, sample_weight=None):",
        '    """The mean loss (lower is better) in the library\'s metric convention."""',
        "    margin, labels, weights = _call(LIBRARY, a, b, sample_weight)",
        "    value = _mean_loss(tree, SCALE, TASK, margin, labels, weights)",
        "    return _metric_result(LIBRARY, value, not isinstance(b, np.ndarray))",
        "",
        "",
        "metric.__name__ = 'symloss'",
        "",
        "",
        "def predict(margin):",
        '    """Predictions (probabilities for classification) from raw margins."""',
        "    return _predict(TASK, margin)",
    ])
    return "\n".join(lines) + "\n"
