"""Gradient scale: how hard a loss pushes a model's outputs, relative to the baseline.

With plain SGD at a fixed learning rate, ``c * L`` trains exactly like ``L`` at rate
``c * lr``. A search that scores losses by short training runs can therefore "improve"
a loss by scaling it, which only finds a step size: such a loss diverges in any loop
whose rate was tuned for the baseline. symloss separates the two. A loss's *gradient
scale* on a task is the norm of its gradient with respect to the model outputs,
divided by the baseline's (cross-entropy, binary cross-entropy or squared error), at
a freshly initialised model's outputs on a fixed batch of training data. A
*normalised* loss has gradient scale 1: it drops into a loop tuned for the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from symloss.config import Settings
from symloss.expression import Expression
from symloss.network import LearnedLoss
from symloss.prior import task_prior
from symloss.task import Task

REFERENCE_SIZE = 256
"""Training examples in the reference batch (fewer when the training split is smaller)."""

Reference = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def reference_batch(task: Task, seed: int = 0) -> Reference:
    """A fresh model's outputs (from ``seed``) on the first training examples, and their
    targets: the fixed point at which gradient scales are measured."""
    x, y = task.train.head(min(REFERENCE_SIZE, len(task.train)))
    with torch.no_grad():
        outputs = task.outputs(task.new_model(seed), x)
    return outputs.detach(), y


def gradient_norm(
    loss_fn: LossFn, reference: Reference, *, create_graph: bool = False
) -> torch.Tensor:
    """Norm of ``d loss_fn(outputs, targets) / d outputs`` at the reference outputs.

    With ``create_graph`` the norm stays differentiable with respect to whatever
    ``loss_fn`` closes over (the edge weights of a loss being searched).
    """
    outputs, targets = reference
    free = outputs.detach().clone().requires_grad_(True)
    value = loss_fn(free, targets)
    (grad,) = torch.autograd.grad(value, free, create_graph=create_graph, allow_unused=True)
    if grad is None:
        return torch.zeros((), dtype=free.dtype, device=free.device)
    return grad.norm()


def baseline_norm(task: Task, reference: Reference) -> float:
    """Gradient norm of the task's baseline loss (the user's, as they train with it) at
    the reference batch."""
    return float(gradient_norm(task.baseline_loss(), reference))


def gradient_scale(loss: LossFn, task: Task, seed: int = 0) -> float:
    """The gradient scale of ``loss`` on ``task``: 1 means the baseline's step size.

    Parameters
    ----------
    loss : callable
        ``loss(y_pred, y_true)``, e.g. a :class:`~symloss.network.LearnedLoss`.
    task : Task
        The problem (:func:`symloss.task.make_task`).
    seed : int
        Seed of the fresh model whose outputs form the reference batch.
    """
    reference = reference_batch(task, seed)
    return float(gradient_norm(loss, reference)) / baseline_norm(task, reference)


def normalising_factor(loss: LossFn, task: Task, reference: Reference) -> float:
    """The factor that gives ``loss`` gradient scale 1 on ``task``.

    Raises
    ------
    ValueError
        If the loss's gradient at the reference batch is zero or not finite (such a
        loss cannot be brought to the baseline's scale).
    """
    norm = float(gradient_norm(loss, reference))
    if not (math.isfinite(norm) and norm > 0):
        raise ValueError(
            f"the loss's gradient norm at the reference batch is {norm}; a loss with a "
            "zero or non-finite gradient there cannot be normalised"
        )
    return baseline_norm(task, reference) / norm


def search_loss(
    task: Task,
    settings: Settings,
    expression: Expression | str,
    weights: Sequence[float] = (),
    reference: Reference | None = None,
) -> LearnedLoss:
    """The loss as the search trains it: normalised to the baseline's gradient scale
    at ``reference`` when ``settings.normalize`` is on, as it is otherwise.

    Raises
    ------
    ValueError
        If the loss must be normalised but its gradient there is zero or not finite.
    """
    loss = LearnedLoss(expression, task.kind, weights or None, class_prior=task_prior(task))
    if not settings.normalize:
        return loss
    if reference is None:
        raise ValueError("a normalised search needs the reference batch")
    return loss.with_scale(normalising_factor(loss, task, reference))
