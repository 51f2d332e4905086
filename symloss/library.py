"""Well-known losses written in the primitive set.

The baselines (cross-entropy, squared error) and a small library of established losses
seed the search's initial population (see docs/design.md, "Outer loop"), so even a
small budget can never return a loss worse on validation than the baseline.
"""

from __future__ import annotations

from symloss.expression import Expression

TASK_KINDS = ("classification", "regression")

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


def quantile_loss(q: float) -> Expression:
    """The pinball (quantile) loss of quantile ``q`` in the primitive set:
    ``max(q (y - f), (q - 1) (y - f))``, minimised by the ``q``-quantile of the target.

    The random trees' constants are only +-1, so a search reaches this shape only
    through learned edge weights; a search scored by ``pinball:q`` is seeded with it.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"a quantile must be strictly between 0 and 1, got {q}")
    return Expression.parse(f"max({q:.12g} * (y - f), {q - 1.0:.12g} * (y - f))")


def check_task_kind(kind: str) -> str:
    """Return ``kind`` if it is a known task kind, else raise a ValueError."""
    if kind not in TASK_KINDS:
        raise ValueError(f"task must be one of {TASK_KINDS}, got {kind!r}")
    return kind


def baseline(kind: str, single_output: bool = False) -> Expression:
    """The baseline loss expression of a task kind (binary cross-entropy for a
    classifier with a single output column)."""
    if check_task_kind(kind) == "classification" and single_output:
        return Expression.parse(BINARY_BASELINE)
    return Expression.parse(BASELINES[kind])


def known_losses(kind: str, single_output: bool = False) -> list[Expression]:
    """The library of well-known losses for a task kind, the baseline first."""
    first = baseline(kind, single_output)
    rest = [Expression.parse(text) for text in KNOWN_LOSSES[check_task_kind(kind)].values()]
    return [first, *(e for e in rest if e != first)]
