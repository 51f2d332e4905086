"""The kinds of task a loss is learned for: the one definition every module compares to.

A task kind decides the output transform (softmax or sigmoid and one-hot labels for
classification, raw values for regression), the baseline loss and the metric; kinds
are stored as these plain strings in run directories and saved losses.
"""

from __future__ import annotations

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASK_KINDS = (CLASSIFICATION, REGRESSION)
"""Every task kind, in the order messages list them."""


def check_task_kind(kind: str) -> str:
    """Return ``kind`` if it is a known task kind, else raise a ValueError."""
    if kind not in TASK_KINDS:
        raise ValueError(f"task must be one of {TASK_KINDS}, got {kind!r}")
    return kind
