"""The user's metric: the number a search optimises and every report prints.

A metric is ``metric(y_true, y_pred) -> float`` on numpy arrays, lower is better, where
``y_pred`` holds the predicted class labels (classification) or the predictions
(regression) in the shapes scikit-learn's metric functions take. It is given either as
a callable or as a name from :data:`METRICS`; a name is also what a run directory and
a saved loss store, so a name can be restored and a callable cannot.

Metrics of predicted probabilities (log loss, AUC) are refused: symloss scores what a
trained model decides, the labels, and a probability metric rewards a loss for what
the model's softmax says instead (which the loss itself shapes), so it would no longer
compare losses fairly.

Where a metric has a differentiable form (MSE, MAE, pinball), the local search uses it
as its meta-objective (:attr:`Metric.objective`). The balanced classification metrics
(balanced error rate, macro F1) have a differentiable surrogate instead, class-balanced
cross-entropy (:attr:`Metric.class_objective`), used while the baseline is the default
cross-entropy. Otherwise (error rate, a callable, a classification metric with the
user's own baseline) the local search uses the baseline loss.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn import metrics as skm

from symloss.expression import Expression
from symloss.library import quantile_loss

MetricFn = Callable[[np.ndarray, np.ndarray], float]
"""``metric(y_true, y_pred) -> float`` on numpy arrays, lower is better."""

Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""An elementwise differentiable form ``objective(f, y)`` on ``[batch, k]`` tensors."""

ClassObjective = Callable[[torch.Tensor, torch.Tensor, tuple[float, ...]], torch.Tensor]
"""A classification metric's differentiable surrogate ``objective(outputs, labels,
frequencies)``: logits ``[batch, n_classes]`` (or ``[batch, 1]`` for one output column),
integer labels ``[batch]`` and each class's frequency in the training split (one per
class, :attr:`symloss.task.Task.class_frequencies`) -> the batch's value, a scalar."""

DEFAULTS = {"classification": "error_rate", "regression": "mse"}
"""The metric of a task kind when none is given."""

PROBABILITY_METRICS = ("log_loss", "logloss", "cross_entropy", "auc", "roc_auc", "pr_auc",
                       "average_precision", "brier", "brier_score")
"""Names refused with an explanation (see the module docstring)."""


class MetricError(ValueError):
    """A metric raised, returned NaN, or returned something that is not a number."""


@dataclass(frozen=True)
class Metric:
    """A resolved metric (build one with :func:`resolve_metric`).

    Attributes
    ----------
    name : str
        The registry name (``"mae"``, ``"pinball:0.9"``), or a callable's qualified
        name (``"module.function"``).
    label : str
        How tables and reports name it (``"MAE"``, ``"pinball loss (q=0.9)"``).
    function : callable
        ``function(y_true, y_pred) -> float``.
    kind : {"classification", "regression"} or None
        The task kind it applies to (None: a callable, either).
    restorable : bool
        True for registered names: a stored name gives the metric back. False for a
        callable, which must be passed again to resume its run.
    objective : callable or None
        The differentiable form the local search uses, where a regression metric has one.
    class_objective : callable or None
        The differentiable surrogate the local search uses for a classification metric
        (:data:`ClassObjective`), where it has one, while the baseline is the default
        cross-entropy: the surrogate re-weights that baseline.
    objective_name : str or None
        How reports name :attr:`objective` or :attr:`class_objective`.
    bound : float or None
        The largest value the metric can take (1 for rates), where it has one.
    seeds : tuple of Expression
        Known losses for this metric (the pinball loss for ``pinball:Q``) that a search
        adds to its seeded library.
    """

    name: str
    label: str
    function: MetricFn
    kind: str | None = None
    restorable: bool = True
    objective: Objective | None = None
    objective_name: str | None = None
    class_objective: ClassObjective | None = None
    bound: float | None = None
    seeds: tuple[Expression, ...] = ()
    tensor_form: Callable[[torch.Tensor, torch.Tensor], float] | None = None
    """The same value computed on torch tensors (the defaults), used in place of
    ``function`` by :meth:`from_tensors`: no copy to numpy, and exactly the
    numbers of the searches written before metrics could be chosen."""

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        """The metric's value, checked: a clear :class:`MetricError` naming the metric
        when it raises, returns a non-number or returns NaN."""
        try:
            with warnings.catch_warnings():
                if self.restorable:  # ours: ill-defined cases are documented, not warned
                    warnings.simplefilter("ignore")
                value = self.function(y_true, y_pred)
        except Exception as error:
            raise MetricError(
                f"the metric {self.name!r} raised {type(error).__name__}: {error} (on "
                f"y_true of shape {np.shape(y_true)} and y_pred of shape {np.shape(y_pred)}); "
                "a metric takes (y_true, y_pred) numpy arrays, predicted labels for "
                "classification, and returns one float, lower is better"
            ) from error
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value.item()
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
            raise MetricError(
                f"the metric {self.name!r} returned {value!r} ({type(value).__name__}), not a "
                "number; it must return one float, lower is better"
            )
        value = float(value)
        if math.isnan(value):
            raise MetricError(
                f"the metric {self.name!r} returned NaN on {len(y_true)} examples; it must "
                "return a number for any predictions (lower is better)"
            )
        return value

    def from_tensors(self, y_true: torch.Tensor, y_pred: torch.Tensor) -> float:
        """The metric of tensors of labels or predictions (``y_pred`` already in
        ``y_true``'s shape). Non-finite predictions score inf without calling a
        numpy metric (they are a diverged model, not a metric's business)."""
        if self.tensor_form is not None:
            return self.tensor_form(y_true, y_pred)
        if y_pred.is_floating_point() and not bool(torch.isfinite(y_pred).all()):
            return math.inf
        return self(y_true.detach().cpu().numpy(), y_pred.detach().cpu().numpy())

    def describe(self) -> dict[str, object]:
        """What a run directory and a saved loss store: the name, and whether it can be
        restored from it."""
        return {"metric": self.name, "metric_restorable": self.restorable}


# -- the registry ------------------------------------------------------------------------


def _error_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return 1.0 - float(skm.accuracy_score(y_true, y_pred))


def _balanced_error_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return 1.0 - float(skm.balanced_accuracy_score(y_true, y_pred))


def _f1_macro(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return 1.0 - float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))


def _mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(skm.mean_squared_error(y_true, y_pred))


def _mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(skm.mean_absolute_error(y_true, y_pred))


def _pinball(q: float, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(skm.mean_pinball_loss(y_true, y_pred, alpha=q))


def _error_rate_tensors(y_true: torch.Tensor, y_pred: torch.Tensor) -> float:
    return float((y_pred != y_true).double().mean())


def _mse_tensors(y_true: torch.Tensor, y_pred: torch.Tensor) -> float:
    return float(F.mse_loss(y_pred.double(), y_true.double()))


def _squared_error(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.square(f - y)


def _absolute_error(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # |f - y| with torch.abs's value and gradient, without sign's zero-tensor backward
    # (see docs/design.md, "Local search")
    residual = f - y
    return residual * torch.sign(residual.detach())


def _pinball_error(q: float, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    residual = y - f
    return torch.maximum(q * residual, (q - 1.0) * residual)


def class_balanced_weights(frequencies: tuple[float, ...]) -> tuple[float, ...]:
    """Each class's weight in :func:`class_balanced_cross_entropy`: ``1 / (K * p_c)`` for
    a class of training frequency ``p_c > 0`` among ``K`` such classes, 0 for a label
    number no class uses (the numbers 0..C-1 may skip some). The weights average 1 over
    the training split (``sum_c p_c / (K * p_c) = 1``), so the loss keeps
    cross-entropy's scale; they are scikit-learn's ``class_weight="balanced"``."""
    present = sum(1 for p in frequencies if p > 0)
    return tuple(1.0 / (present * p) if p > 0 else 0.0 for p in frequencies)


def class_balanced_cross_entropy(outputs: torch.Tensor, labels: torch.Tensor,
                                 frequencies: tuple[float, ...]) -> torch.Tensor:
    """Cross-entropy of each example weighted by its class's :func:`class_balanced_weights`,
    averaged over the batch (divided by the batch size, not by the batch's sum of
    weights): binary cross-entropy of the logit for one output column.

    The surrogate of the balanced error rate by the identity that makes cross-entropy
    the surrogate of the error rate: the balanced error rate is
    ``(1/K) sum_c P(wrong | c) = E[w_y * 1(wrong)]`` with ``w_c = 1 / (K * p_c)``, and this
    is the same expectation with cross-entropy in place of the 0-1 indicator. Dividing
    by the batch size keeps each batch an unbiased estimate of it; a batch's sum of
    weights would swing with how many rare examples a small batch happens to hold."""
    labels = labels.reshape(-1).long()
    if outputs.shape[1] == 1:
        per_example = F.binary_cross_entropy_with_logits(
            outputs.reshape(-1), labels.to(outputs.dtype), reduction="none")
    else:
        per_example = F.cross_entropy(outputs, labels, reduction="none")
    weights = torch.tensor(class_balanced_weights(frequencies), dtype=per_example.dtype,
                           device=per_example.device)
    return (weights[labels] * per_example).mean()


_BALANCED_CE = ("class-balanced cross-entropy (each class weighted by its inverse training "
                "frequency)")

# Module-level functions (and partials of them) only: a task, metric included, is
# pickled to spawned workers and Ray.
_FIXED: dict[str, Metric] = {
    "error_rate": Metric("error_rate", "error rate", _error_rate, "classification",
                         bound=1.0, tensor_form=_error_rate_tensors),
    "balanced_error_rate": Metric("balanced_error_rate", "balanced error rate",
                                  _balanced_error_rate, "classification", bound=1.0,
                                  class_objective=class_balanced_cross_entropy,
                                  objective_name=_BALANCED_CE),
    "f1_macro": Metric("f1_macro", "1 - macro F1", _f1_macro, "classification", bound=1.0,
                       class_objective=class_balanced_cross_entropy,
                       objective_name=_BALANCED_CE),
    "mse": Metric("mse", "MSE", _mse, "regression", objective=_squared_error,
                  objective_name="squared error (the metric)", tensor_form=_mse_tensors),
    "mae": Metric("mae", "MAE", _mae, "regression", objective=_absolute_error,
                  objective_name="absolute error (the metric)"),
}

METRICS: dict[str, str] = {
    "error_rate": "classification: share of wrong labels (the default)",
    "balanced_error_rate": "classification: 1 - balanced accuracy (mean recall over classes)",
    "f1_macro": "classification: 1 - macro-averaged F1",
    "mse": "regression: mean squared error over all output values (the default)",
    "mae": "regression: mean absolute error",
    "pinball:Q": "regression: mean pinball (quantile) loss of quantile Q in (0, 1)",
}
"""The registered names and what each scores (lower is better for all)."""


def _pinball_metric(text: str) -> Metric:
    try:
        q = float(text)
    except ValueError:
        q = math.nan
    if not 0.0 < q < 1.0:
        raise ValueError(f"pinball:Q needs a quantile Q strictly between 0 and 1, got {text!r} "
                         "(e.g. 'pinball:0.9')")
    return Metric(
        f"pinball:{q:g}", f"pinball loss (q={q:g})",
        functools.partial(_pinball, q), "regression",
        objective=functools.partial(_pinball_error, q),
        objective_name=f"pinball loss q={q:g} (the metric)",
        seeds=(quantile_loss(q),))


def default_metric(kind: str) -> Metric:
    """The metric of a task kind when none is given: error rate or MSE."""
    return _FIXED[DEFAULTS[kind]]


def _qualified_name(function: Callable) -> str:
    module = getattr(function, "__module__", None) or "?"
    name = getattr(function, "__qualname__", None) or type(function).__qualname__
    return f"{module}.{name}"


def resolve_metric(metric: str | MetricFn | Metric | None, kind: str) -> Metric:
    """A :class:`Metric` from a name, a callable or None (the kind's default).

    Raises
    ------
    ValueError
        For an unknown name, a probability metric, or a metric of the other task kind.
    """
    if metric is None:
        return default_metric(kind)
    if isinstance(metric, Metric):
        resolved = metric
    elif isinstance(metric, str):
        key = metric.strip().lower()
        if key in PROBABILITY_METRICS:
            raise ValueError(
                f"metric {metric!r} scores predicted probabilities; symloss scores the labels "
                "a trained model predicts (a loss shapes its model's probabilities, so a "
                "probability metric would not compare losses fairly). Use a label metric "
                "('balanced_error_rate', 'f1_macro', 'error_rate') or pass a callable "
                "metric(y_true, y_pred_labels)"
            )
        if key.startswith("pinball:"):
            resolved = _pinball_metric(key.partition(":")[2])
        elif key in _FIXED:
            resolved = _FIXED[key]
        else:
            raise ValueError(
                f"unknown metric {metric!r}; registered: {', '.join(METRICS)}; or pass a "
                "callable metric(y_true, y_pred) -> float (lower is better)"
            )
    elif callable(metric):
        return Metric(_qualified_name(metric), getattr(metric, "__name__", "metric"),
                      metric, None, restorable=False)
    else:
        raise ValueError(
            f"metric must be a registered name ({', '.join(METRICS)}) or a callable "
            f"metric(y_true, y_pred) -> float, got {type(metric).__name__}"
        )
    if resolved.kind is not None and resolved.kind != kind:
        raise ValueError(
            f"metric {resolved.name!r} scores {resolved.kind}, but this is a {kind} task; "
            f"choose one of: {', '.join(n for n, d in METRICS.items() if d.startswith(kind))}"
        )
    return resolved
