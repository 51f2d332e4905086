"""Cheap checks that reject or merge a candidate before any model is trained.

Each check returns a rejection reason (``"category: detail"``) or ``None``. The
categories are the ones counted in the search history.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from symloss.config import Settings
from symloss.dual import DualLoss
from symloss.expression import Expression
from symloss.network import LearnedLoss
from symloss.optim import ArrayAdam
from symloss.primitives import PREDICTION, TARGET
from symloss.prior import task_prior
from symloss.task import Task

STRUCTURAL = "structural"
POOR_TRAINING = "poor training"
NON_FINITE = "non-finite"
FLAT = "flat"
FAILED = "failed check"
"""A check raised for this candidate (the message follows); the search goes on."""


def structural_reason(expression: Expression) -> str | None:
    """Reject expressions missing ``y`` or ``f``, or whose simplified form drops ``f``."""
    missing = [v for v in (TARGET, PREDICTION) if v not in expression.variables]
    if missing:
        return f"{STRUCTURAL}: does not use {' or '.join(missing)}"
    form = expression.canonical()  # None where SymPy cannot form it: the fingerprint decides
    if form is not None and PREDICTION not in {s.name for s in form.free_symbols}:
        return f"{STRUCTURAL}: constant in f after expansion"
    return None


def _fresh_outputs(task: Task, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = task.train.head(n)
    return task.outputs(task.new_model(seed), x), y


def poor_training_reason(
    expression: Expression, task: Task, settings: Settings, seed: int
) -> str | None:
    """Reject a loss that cannot improve the task metric even on free outputs.

    A fresh model's outputs on the first training examples become free variables,
    minimised with Adam under the candidate loss; the task metric must strictly improve.
    The loss must stay finite at every step.

    The steps run in numpy on the CPU, whatever the task's device, with the loss's
    gradient in forward mode (:mod:`symloss.dual`): on a hundred values, autograd's and
    a device's per-operation overheads would be nearly all the cost.
    """
    outputs, targets = _fresh_outputs(task, settings.poor_training_examples, seed)
    outputs, targets = outputs.cpu(), targets.cpu()
    before = task.metric_from_outputs(outputs, targets)
    loss = DualLoss(expression, task.kind, outputs, targets, task_prior(task))
    free = loss.from_outputs(outputs)
    optimizer = ArrayAdam(free, lr=settings.poor_training_lr)
    with np.errstate(all="ignore"):
        for _ in range(settings.poor_training_steps):
            value, grad = loss(free)
            if not math.isfinite(value):
                return f"{NON_FINITE}: loss is {value} while optimising free outputs"
            optimizer.step(grad)
    after = task.metric_from_outputs(loss.to_outputs(free), targets)
    if not math.isfinite(after) or not after < before:
        return f"{POOR_TRAINING}: metric {before:.4g} -> {after:.4g} on free outputs"
    return None


def probe(task: Task, settings: Settings, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed predictions and targets on which gradient fingerprints are taken.

    Half are a fresh model's outputs on training examples, half the same outputs spread
    wider, so that losses agreeing only near initialisation are told apart.
    """
    outputs, targets = _fresh_outputs(task, settings.fingerprint_size, seed)
    generator = torch.Generator().manual_seed(seed)
    scale = outputs.std().clamp(min=1.0) if outputs.numel() > 1 else torch.tensor(1.0)
    noise = torch.randn(outputs.shape, generator=generator).to(outputs.device)
    spread = outputs + 3.0 * scale * noise
    return torch.cat([outputs, spread]), torch.cat([targets, targets])


def fingerprint(expression: Expression, task: Task, probe_data: tuple) -> torch.Tensor:
    """Gradient of the loss with respect to the probe predictions (flattened)."""
    outputs, targets = probe_data
    free = outputs.detach().clone().requires_grad_(True)
    value = LearnedLoss(expression, task.kind, class_prior=task_prior(task))(free, targets)
    (grad,) = torch.autograd.grad(value, free, allow_unused=True)
    if grad is None:
        return torch.zeros(free.numel(), dtype=free.dtype, device=free.device)
    return grad.detach().reshape(-1)


def fingerprint_reason(grad: torch.Tensor) -> str | None:
    """Reject losses with non-finite or identically zero gradients on the probe."""
    if not bool(torch.isfinite(grad).all()):
        return f"{NON_FINITE}: gradient on the probe is NaN/inf"
    if not bool(grad.abs().max() > 0):
        return f"{FLAT}: zero gradient with respect to the predictions"
    return None


def same_gradient(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    """True when two fingerprints agree within ``rtol`` (relative to their scale)."""
    scale = float(torch.maximum(a.abs().max(), b.abs().max()))
    return bool(torch.allclose(a, b, rtol=rtol, atol=rtol * scale))
