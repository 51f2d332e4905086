"""Well-known losses written in the primitive set.

The baselines (cross-entropy, squared error) and a small library of established losses
seed the search's initial population (see docs/design.md, "Outer loop"), so even a
small budget can never return a loss worse on validation than the baseline.
"""

from __future__ import annotations

from symloss.expression import Expression
from symloss.kinds import CLASSIFICATION, check_task_kind

BASELINES: dict[str, str] = {
    "classification": "-(y * log(f))",
    "regression": "square(f - y)",
}
"""Cross-entropy (on softmax outputs and one-hot targets) and squared error."""

BINARY_BASELINE = "-(y * log(f) + (1 - y) * log(1 - f))"
"""Binary cross-entropy, the baseline of a classifier with one output (sigmoid) column:
there the tree sees one probability per example, so both classes' terms are needed."""

KNOWN_LOSSES: dict[str, dict[str, str]] = {
    "classification": {
        "cross-entropy": BASELINES["classification"],
        "squared error (Brier)": "square(f - y)",
        "absolute error": "abs(f - y)",
        "focal-like": "-(y * square(1 - f) * log(f))",
        "hinge-like": "max(0, 1 - y * f)",
        "log-cosh-like": "log(1 + square(f - y))",
        "sqrt-probability": "-(y * sqrt(f))",
    },
    "regression": {
        "squared error": BASELINES["regression"],
        "absolute error": "abs(f - y)",
        "Cauchy": "log(1 + square(f - y))",
        "saturated squared error": "tanh(square(f - y))",
        "pseudo-Huber-like": "sqrt(1 + square(f - y)) - 1",
        "square-root error": "sqrt(f - y)",
    },
}
"""Per task kind: name -> expression text of a loss expressible in the primitive set."""

PRIOR_LOSSES: dict[str, str] = {
    "class-weighted cross-entropy (1 - p)": "-(y * log(f) * (1 - p))",
    "log-inverse-frequency weighted cross-entropy": "y * log(f) * log(p)",
}
"""Classification losses that re-weight classes by their training frequency ``p`` (seeds
only when the class-prior terminal is on). Division is the analytic quotient, so the
inverse frequency ``1 / p`` cannot be written; ``1 - p`` (with two classes exactly the
inverse-frequency ratio between them) and ``-log(p)`` weigh rare classes up instead.
Logit-adjusted cross-entropy needs the sum over all classes of ``f * p``, which a tree
applied one class at a time cannot form; with one output column it can (below)."""

BINARY_PRIOR_LOSSES: dict[str, str] = {
    "class-weighted binary cross-entropy": "-((1 - p) * y * log(f) + p * (1 - y) * log(1 - f))",
    "logit-adjusted binary cross-entropy":
        "log(f * p + (1 - f) * (1 - p)) - y * log(f * p) - (1 - y) * log((1 - f) * (1 - p))",
}
"""The class-prior losses of a classifier with one output column (``p`` is the frequency
of class 1): binary cross-entropy with each class weighted by the other's frequency, and
binary cross-entropy of the logit shifted by ``log(p / (1 - p))`` (logit adjustment,
Menon et al. 2021), i.e. of the probability ``f p / (f p + (1 - f)(1 - p))``."""


def quantile_loss(q: float) -> Expression:
    """The pinball (quantile) loss of quantile ``q`` in the primitive set:
    ``max(q (y - f), (q - 1) (y - f))``, minimised by the ``q``-quantile of the target.

    The random trees' constants are only +-1, so a search reaches this shape only
    through learned edge weights; a search scored by ``pinball:q`` is seeded with it.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"a quantile must be strictly between 0 and 1, got {q}")
    return Expression.parse(f"max({q:.12g} * (y - f), {q - 1.0:.12g} * (y - f))")


def baseline(kind: str, single_output: bool = False) -> Expression:
    """The baseline loss expression of a task kind (binary cross-entropy for a
    classifier with a single output column)."""
    if check_task_kind(kind) == CLASSIFICATION and single_output:
        return Expression.parse(BINARY_BASELINE)
    return Expression.parse(BASELINES[kind])


def known_losses(
    kind: str, single_output: bool = False, class_prior: bool = False
) -> list[Expression]:
    """The library of well-known losses for a task kind, the baseline first.

    With ``class_prior`` (classification only), the losses in the class-prior terminal
    ``p`` follow the baseline (:data:`PRIOR_LOSSES`, or :data:`BINARY_PRIOR_LOSSES` for
    one output column).

    Raises
    ------
    ValueError
        If ``class_prior`` is asked for a regression task (it has no classes).
    """
    first = baseline(kind, single_output)
    if class_prior and kind != CLASSIFICATION:
        raise ValueError("the class prior p exists for classification only")
    prior = BINARY_PRIOR_LOSSES if single_output else PRIOR_LOSSES
    texts = [*(prior.values() if class_prior else ()), *KNOWN_LOSSES[kind].values()]
    return [first, *(e for e in map(Expression.parse, texts) if e != first)]
