"""The values of the class-prior terminal ``p``: each class's frequency in the training split.

A classification loss tree sees one class at a time, ``y`` and ``f`` of that class, so
on its own it cannot weigh a rare class more than a common one, which balanced metrics
reward (class-weighted and logit-adjusted cross-entropy do). The terminal ``p`` gives the
tree the frequency of the class it is looking at. It is a constant of the task, computed
once from the training labels, and it is saved with a loss that uses it, so the loss
computes the same values in another project (see docs/class_prior.md).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import torch

from symloss.kinds import CLASSIFICATION

if TYPE_CHECKING:
    from symloss.task import Task


def class_prior(labels: torch.Tensor, n_classes: int, single_output: bool = False
                ) -> tuple[float, ...]:
    """The frequency of each class among ``labels`` (integer labels ``0..n_classes-1``).

    For a classifier with one output column (``single_output``), the column is the
    probability of class 1, so the prior is the one frequency of class 1.

    Raises
    ------
    ValueError
        If there are no labels, or a label is outside ``0..n_classes-1``.
    """
    labels = labels.detach().reshape(-1).long().cpu()
    if labels.numel() == 0:
        raise ValueError("the class prior needs at least one training label")
    if int(labels.min()) < 0 or int(labels.max()) >= n_classes:
        raise ValueError(
            f"labels must be 0..{n_classes - 1} to compute the class prior, got labels from "
            f"{int(labels.min())} to {int(labels.max())}"
        )
    counts = torch.bincount(labels, minlength=n_classes).double()
    frequencies = (counts / labels.numel()).tolist()
    return (frequencies[1],) if single_output else tuple(frequencies)


_PRIORS: weakref.WeakKeyDictionary[Task, tuple[float, ...] | None] = (
    weakref.WeakKeyDictionary()
)


def task_prior(task: Task) -> tuple[float, ...] | None:
    """The class prior of a task's training split (None for regression, which has none);
    computed once per task."""
    if task not in _PRIORS:
        if task.kind != CLASSIFICATION or not task.n_classes:
            _PRIORS[task] = None
        else:
            _PRIORS[task] = class_prior(task.train.y, task.n_classes, task.single_output)
    return _PRIORS[task]
