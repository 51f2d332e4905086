"""Local search: refine a loss's edge weights by unrolled differentiation (EvoMAL).

Each meta-step initialises the base model afresh, takes ``unroll_steps`` differentiable
SGD steps on random training batches with the candidate loss, scores the stepped model
with the baseline objective (cross-entropy / MSE) on a random validation batch, and
back-propagates that score through the steps into the loss weights (Adam).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.func import functional_call

from symloss.config import Settings
from symloss.expression import Expression
from symloss.network import LearnedLoss
from symloss.task import Task
from symloss.training import unrolled_sgd


@dataclass(frozen=True)
class LocalSearchResult:
    """Learned weights and the meta-objective at every completed meta-step."""

    weights: tuple[float, ...]
    objective: tuple[float, ...]
    stopped_early: bool


def initial_weights(n_edges: int, std: float, seed: int) -> torch.Tensor:
    """Edge weights ``1 + std * N(0, 1)``: the loss starts as its symbolic expression."""
    generator = torch.Generator().manual_seed(seed)
    return 1.0 + std * torch.randn(n_edges, generator=generator, dtype=torch.float64)


def _meta_objective(
    w: torch.Tensor,
    loss: LearnedLoss,
    task: Task,
    model: torch.nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    validation: tuple[torch.Tensor, torch.Tensor],
    lr: float,
) -> torch.Tensor:
    """Baseline objective on a validation batch after unrolled steps with weights ``w``."""

    def candidate(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return loss(outputs, targets, w)

    stepped = unrolled_sgd(model, params, buffers, candidate, batches, lr)
    outputs = functional_call(model, (stepped, buffers), (validation[0],))
    return task.base_loss(outputs, validation[1])


def local_search(
    task: Task, expression: Expression | str, settings: Settings, seed: int
) -> LocalSearchResult:
    """Tune the edge weights of ``expression`` on ``task``.

    Deterministic for ``seed``. A meta-step whose objective or gradient is not finite
    stops the search; the last finite weights are kept.
    """
    loss = LearnedLoss(expression, task.kind)
    weights = initial_weights(loss.network.n_edges, settings.weight_init_std, seed)
    weights.requires_grad_(True)
    if settings.meta_steps == 0 or weights.numel() == 0:
        return LocalSearchResult(tuple(weights.tolist()), (), False)
    optimizer = torch.optim.Adam([weights], lr=settings.meta_lr)
    generator = torch.Generator().manual_seed(seed)
    history: list[float] = []
    for step in range(settings.meta_steps):
        model = task.new_model(seed + 1 + step)
        params = {k: v.detach() for k, v in model.named_parameters()}
        buffers = {k: v.detach() for k, v in model.named_buffers()}
        batches = [
            task.train.batch(settings.meta_batch_size, generator)
            for _ in range(settings.unroll_steps)
        ]
        val_x, val_y = task.val.batch(settings.meta_batch_size, generator)

        grad, value = torch.func.grad_and_value(_meta_objective)(
            weights.detach(), loss, task, model, params, buffers, batches, (val_x, val_y),
            settings.lr,
        )
        if not (math.isfinite(float(value)) and bool(torch.isfinite(grad).all())):
            return LocalSearchResult(tuple(weights.detach().tolist()), tuple(history), True)
        history.append(float(value))
        optimizer.zero_grad(set_to_none=True)
        weights.grad = grad
        optimizer.step()
    return LocalSearchResult(tuple(weights.detach().tolist()), tuple(history), False)
