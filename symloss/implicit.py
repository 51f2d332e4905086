"""Local search by implicit differentiation: hypergradients at a warm-started model.

The unrolled local search asks how the validation loss changes after a few SGD steps
from a fresh model. This one asks how it changes at the model the loss actually trains
towards. One model is kept for the whole search and trained on, with the current loss
and the same optimiser as fitness training, for ``implicit_inner_steps`` steps per
meta-step. At its weights ``w``, treated as a minimiser of the training loss
``L_train(w, phi)`` (``phi``: the loss's parameters), the implicit function theorem gives

    dL_val/dphi = -(d/dphi grad_w L_train(w, phi))^T  H^-1  grad_w L_val(w),

with ``H`` the Hessian of the training loss in ``w``. ``H^-1 v`` is approximated by the
truncated Neumann series ``alpha * sum_{j=0..K} (I - alpha H)^j v`` (``K`` =
``neumann_terms`` Hessian-vector products, ``alpha`` = ``neumann_alpha``); the mixed
second derivative is one more double-backward pass. Nothing is unrolled, so the cost per
meta-step does not grow with the training horizon.

Where the Hessian is partly or entirely zero (piecewise-linear losses), the series
degrades gracefully to ``alpha (K + 1) v``: the hypergradient of one gradient step
taken at the warm-started weights. See docs/implicit.md for what is approximated and
when the approximation is poor.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch

from symloss.config import Settings
from symloss.task import Task
from symloss.training import LossFn, sgd_settings, stateless_forward

Candidate = Callable[[dict[str, torch.Tensor]], LossFn]
"""A loss with trainable parameters: ``candidate(leaves)`` is the loss ``(outputs, targets)
-> value`` with the parameters ``leaves``. Binding once per set of values lets a
normalised loss with frozen parameters compute its scale once for many training steps."""
Tensors = list[torch.Tensor]
logger = logging.getLogger(__name__)


def _grad(
    outputs: Tensors,
    inputs: Tensors,
    grad_outputs: Tensors | None = None,
    create_graph: bool = False,
) -> Tensors:
    """``torch.autograd.grad`` with zeros for inputs the outputs do not depend on.

    Piecewise-linear losses make whole blocks of second derivatives identically zero:
    their gradients may not depend on the weights (or on some loss parameters) at all,
    and then carry no graph to differentiate.
    """
    weights = grad_outputs if grad_outputs is not None else [torch.ones_like(o) for o in outputs]
    pairs = [(o, w) for o, w in zip(outputs, weights, strict=True) if o.requires_grad]
    if not pairs:
        return [torch.zeros_like(t) for t in inputs]
    grads = torch.autograd.grad(
        [o for o, _ in pairs], inputs, grad_outputs=[w for _, w in pairs],
        create_graph=create_graph, retain_graph=True, allow_unused=True,
    )
    return [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads, strict=True)]


def neumann_inverse_hvp(
    hvp: Callable[[Tensors], Tensors], v: Tensors, terms: int, alpha: float
) -> Tensors:
    """``alpha * sum_{j=0..terms} (I - alpha H)^j v``, an approximation of ``H^-1 v``.

    Parameters
    ----------
    hvp : callable
        Hessian-vector product ``u -> H u`` on lists of tensors.
    v : list of torch.Tensor
        The vector to multiply by the inverse Hessian.
    terms : int
        Number of Hessian-vector products (series terms after the first).
    alpha : float
        Step of the series. It converges to ``H^-1 v`` when ``H`` is positive definite and
        ``alpha`` is below ``2 / lambda_max(H)``; truncated, it acts as a damped inverse that
        stays finite when ``H`` is singular.

    Returns
    -------
    list of torch.Tensor
        The approximation, shaped like ``v``.
    """
    term = [t.detach() for t in v]
    total = list(term)
    for _ in range(terms):
        product = hvp(term)
        term = [t - alpha * h for t, h in zip(term, product, strict=True)]
        total = [s + t for s, t in zip(total, term, strict=True)]
    return [alpha * s for s in total]


def hypergradient(
    task: Task,
    model: torch.nn.Module,
    candidate: Candidate,
    leaves: dict[str, torch.Tensor],
    train_batch: tuple[torch.Tensor, torch.Tensor],
    val_batch: tuple[torch.Tensor, torch.Tensor],
    settings: Settings,
) -> tuple[float, Tensors]:
    """The validation objective at ``model``'s weights and its implicit hypergradient.

    The training objective is ``candidate`` on ``train_batch`` plus the optimiser's weight
    decay (``weight_decay / 2 * |w|^2``, which adds ``weight_decay * I`` to the Hessian);
    momentum and Nesterov change the path to a stationary point, not the point, so they
    do not enter. Returns ``(objective, gradients)``, one gradient per entry of
    ``leaves``, in order (zeros where the loss's gradient does not depend on a leaf).
    """
    params = {k: p.detach().requires_grad_(True) for k, p in model.named_parameters()}
    weights = list(params.values())
    # Copies: a training-mode forward pass updates normalisation statistics in place,
    # and measuring the hypergradient must not change the model being trained.
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
    forward = stateless_forward(model, buffers)

    def outputs(x: torch.Tensor) -> torch.Tensor:
        return forward(params, x)

    objective = task.meta_objective(outputs(val_batch[0]), val_batch[1])
    v = _grad([objective], weights)
    train_loss = candidate(leaves)(outputs(train_batch[0]), train_batch[1])
    train_grad = _grad([train_loss], weights, create_graph=True)
    decay = settings.weight_decay

    def hvp(u: Tensors) -> Tensors:
        products = _grad(train_grad, weights, grad_outputs=u)
        return [h + decay * x for h, x in zip(products, u, strict=True)] if decay else products

    p = neumann_inverse_hvp(hvp, v, settings.neumann_terms, settings.neumann_alpha)
    mixed = _grad(train_grad, list(leaves.values()), grad_outputs=p)
    return objective.item(), [-m.detach() for m in mixed]


def meta_train(
    task: Task,
    settings: Settings,
    seed: int,
    leaves: dict[str, torch.Tensor],
    candidate: Candidate,
) -> tuple[list[float], bool]:
    """Train ``leaves`` (the loss's parameters) by implicit differentiation, in place.

    One model, initialised from ``seed + 1``, is trained on throughout with
    ``candidate(leaves)`` (the fitness-training optimiser, momentum kept
    across meta-steps): ``settings.implicit_inner_steps`` steps per meta-step. Then the
    baseline objective on a random validation batch, and its implicit hypergradient
    (:func:`hypergradient`, Hessian of the loss on a random training batch of
    ``settings.meta_batch_size``), update ``leaves`` with Adam.

    Same contract as :func:`symloss.local_search.meta_train`: returns the objective at
    every completed meta-step and whether a non-finite training loss, objective or
    hypergradient stopped it early (the leaves then keep their last finite values).
    """
    tensors = list(leaves.values())
    meta_optimizer = torch.optim.Adam(tensors, lr=settings.meta_lr)
    generator = torch.Generator().manual_seed(seed)
    sgd = sgd_settings(settings)
    model = task.new_model(seed + 1)
    optimizer = sgd.optimizer(model)
    history: list[float] = []
    for step in range(settings.meta_steps):
        frozen = candidate({k: v.detach() for k, v in leaves.items()})
        for _ in range(settings.implicit_inner_steps):
            x, y = task.train.batch(sgd.batch_size, generator)
            loss = frozen(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if not math.isfinite(loss.item()):
            return _stop(history, step, f"training loss became {loss.item()}")
        train_batch = task.train.batch(settings.meta_batch_size, generator)
        val_batch = task.val.batch(settings.meta_batch_size, generator)
        objective, grads = hypergradient(task, model, candidate, leaves, train_batch,
                                         val_batch, settings)
        if not math.isfinite(objective):
            return _stop(history, step, f"validation objective is {objective}")
        if not all(bool(torch.isfinite(g).all()) for g in grads):
            return _stop(history, step, "hypergradient is not finite")
        history.append(objective)
        for tensor, grad in zip(tensors, grads, strict=True):
            tensor.grad = grad
        meta_optimizer.step()
    return history, False


def _stop(history: list[float], step: int, reason: str) -> tuple[list[float], bool]:
    logger.info("implicit local search stopped at meta-step %d: %s; keeping the last finite "
                "loss parameters", step, reason)
    return history, True
