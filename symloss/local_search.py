"""Local search: refine a loss's edge weights by unrolled differentiation (EvoMAL).

Each meta-step initialises the base model afresh, takes ``unroll_steps`` differentiable
SGD steps on random training batches with the candidate loss, scores the stepped model
with the baseline objective (cross-entropy / MSE) on a random validation batch, and
back-propagates that score through the steps into the loss weights (Adam).
``settings.local_search_method = "online"`` takes the same steps from one model trained
on with the current loss instead (:func:`online_meta_train`), ``"implicit"`` the
alternative of :mod:`symloss.implicit`; :func:`meta_train` is the one place that chooses.
The evaluator decides whether the refined loss is kept (its guard, see
:mod:`symloss.evaluator`).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from symloss.config import Settings
from symloss.expression import Expression
from symloss.implicit import Candidate
from symloss.implicit import meta_train as implicit_meta_train
from symloss.network import LearnedLoss
from symloss.optim import Adam
from symloss.prior import task_prior
from symloss.scale import Reference, baseline_norm, gradient_norm
from symloss.task import Task
from symloss.training import LossFn, SGDSettings, sgd_settings, stateless_forward, unrolled_sgd


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


def unrolled_objective(
    task: Task,
    model: torch.nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    validation: tuple[torch.Tensor, torch.Tensor],
    sgd: SGDSettings,
) -> torch.Tensor:
    """The meta-objective (:meth:`Task.meta_objective`) on ``validation`` after
    differentiable SGD steps with ``loss_fn``.

    The steps use ``sgd``'s optimiser settings (see :func:`symloss.training.unrolled_sgd`).
    """
    stepped = unrolled_sgd(model, params, buffers, loss_fn, batches, sgd)
    return validation_objective(task, model, stepped, buffers, validation)


def validation_objective(
    task: Task,
    model: torch.nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    validation: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """The meta-objective (:meth:`~symloss.task.Task.meta_objective`) of the model ``params`` on
    ``validation`` (the one place the unrolled searches choose it)."""
    outputs = stateless_forward(model, buffers)(params, validation[0])
    return task.meta_objective(outputs, validation[1])


@dataclass(frozen=True)
class _MetaStep:
    """What one meta-step trains from: a fresh model's tensors and its batches."""

    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    batches: list[tuple[torch.Tensor, torch.Tensor]]
    validation: tuple[torch.Tensor, torch.Tensor]

    def nbytes(self) -> int:
        tensors = [*self.params.values(), *self.buffers.values(), *self.validation]
        tensors += [t for batch in self.batches for t in batch]
        return sum(t.numel() * t.element_size() for t in tensors)


# Meta-step schedules kept per task (weakly: dropped with the task) and per
# (seed, meta_steps, unroll_steps, meta_batch_size), up to this many bytes each.
_SCHEDULE_BYTES = 64 * 2**20
_SCHEDULES: weakref.WeakKeyDictionary[Task, dict[tuple[int, ...], list[_MetaStep]]] = (
    weakref.WeakKeyDictionary()
)


def _fresh_steps(task: Task, settings: Settings, seed: int) -> Iterator[_MetaStep]:
    generator = torch.Generator().manual_seed(seed)
    for step in range(settings.meta_steps):
        model = task.new_model(seed + 1 + step)
        yield _MetaStep(
            {k: v.detach() for k, v in model.named_parameters()},
            {k: v.detach() for k, v in model.named_buffers()},
            [task.train.batch(settings.meta_batch_size, generator)
             for _ in range(settings.unroll_steps)],
            task.val.batch(settings.meta_batch_size, generator),
        )


def _meta_steps(task: Task, settings: Settings, seed: int) -> Iterator[_MetaStep]:
    """The initialisations and batches of every meta-step, in order.

    They depend on the seed only, not on the loss being searched, so every candidate of
    a search sees the same ones: they are built once per process and reused (building a
    model is most of a meta-step's cost for a small network), unless all of them
    together would take more than ``_SCHEDULE_BYTES``; then each is built when needed.
    """
    key = (seed, settings.meta_steps, settings.unroll_steps, settings.meta_batch_size)
    cached = _SCHEDULES.get(task, {}).get(key)
    if cached is not None:
        yield from cached
        return
    steps = _fresh_steps(task, settings, seed)
    first = next(steps, None)
    if first is None:
        return
    if first.nbytes() * settings.meta_steps > _SCHEDULE_BYTES:
        yield first
        yield from steps
        return
    schedule = [first, *steps]
    _SCHEDULES.setdefault(task, {})[key] = schedule
    yield from schedule


def meta_train(
    task: Task,
    settings: Settings,
    seed: int,
    leaves: dict[str, torch.Tensor],
    candidate: Candidate,
) -> tuple[list[float], bool]:
    """Train ``leaves`` (the loss's parameters) by the configured local search, in place.

    ``settings.local_search_method == "implicit"`` hands over to
    :func:`symloss.implicit.meta_train`; the rest describes the unrolled method.

    Each meta-step initialises the model afresh, takes ``settings.unroll_steps``
    differentiable SGD steps (the fitness optimiser: learning rate, momentum, Nesterov and
    weight decay of ``settings``) with the loss ``candidate(leaves)`` on random
    training batches, scores the stepped model with the baseline objective on a random
    validation batch and updates ``leaves`` with Adam. ``candidate(leaves)`` is bound
    once per meta-step (its weights do not change within one). Returns the objective at every
    completed meta-step and whether a non-finite objective or gradient stopped it early
    (the leaves then keep their last finite values).
    """
    if settings.local_search_method == "implicit":
        return implicit_meta_train(task, settings, seed, leaves, candidate)
    if settings.local_search_method == "online":
        return online_meta_train(task, settings, seed, leaves, candidate)
    tensors = list(leaves.values())
    optimizer = Adam(tensors, lr=settings.meta_lr)
    sgd = sgd_settings(settings)
    history: list[float] = []
    # the stateless forward takes every parameter and buffer as given: one module serves
    # all steps
    model = task.new_model(seed)
    for step in _meta_steps(task, settings, seed):
        # buffers (batch-norm statistics) are updated in place: copies keep the shared
        # schedule unchanged for the next candidate
        buffers = {k: v.clone() for k, v in step.buffers.items()}
        value = unrolled_objective(task, model, step.params, buffers, candidate(leaves),
                                   step.batches, step.validation, sgd)
        grads = torch.autograd.grad(value, tensors, allow_unused=True)
        grads = tuple(
            torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads, strict=True)
        )
        objective = value.item()
        finite = math.isfinite(objective) and all(bool(torch.isfinite(g).all()) for g in grads)
        if not finite:
            return history, True
        history.append(objective)
        optimizer.step(grads)
    return history, False


def online_steps(settings: Settings) -> tuple[int, int]:
    """``(plain, unrolled)`` training steps per meta-step of the online search: the
    model advances ``fitness_steps / meta_steps`` steps per meta-step (at least the
    ``unroll_steps`` it differentiates through), so that the meta-steps together cover
    the horizon fitness training runs."""
    per_step = max(settings.unroll_steps, settings.fitness_steps // max(settings.meta_steps, 1))
    return per_step - settings.unroll_steps, settings.unroll_steps


def online_meta_train(
    task: Task,
    settings: Settings,
    seed: int,
    leaves: dict[str, torch.Tensor],
    candidate: Candidate,
) -> tuple[list[float], bool]:
    """Train ``leaves`` by unrolled differentiation along one training run, in place.

    The fresh-model search asks which weights make the first steps from a random
    initialisation good; fitness asks which loss ends well after ``fitness_steps``. Here
    one model, initialised from ``seed + 1``, is trained on with the current loss, as
    online loss learning does: each meta-step takes :func:`online_steps` plain SGD steps
    (the fitness optimiser, loss weights frozen), then ``unroll_steps`` differentiable
    ones, scores the stepped model on a random validation batch
    (:func:`validation_objective`) and updates ``leaves`` with Adam; the stepped model is
    where the next meta-step starts. Once a meta-step would take the model past
    ``fitness_steps``, it restarts from a fresh initialisation (the next seed). The
    momentum buffer starts fresh at every meta-step, as in the fresh-model search.

    Same contract as :func:`meta_train`.
    """
    tensors = list(leaves.values())
    optimizer = Adam(tensors, lr=settings.meta_lr)
    sgd = sgd_settings(settings)
    generator = torch.Generator().manual_seed(seed)
    plain_steps, unrolled_steps = online_steps(settings)
    model = task.new_model(seed + 1)
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    trained, restarts = 0, 0
    history: list[float] = []
    for _ in range(settings.meta_steps):
        if trained + plain_steps + unrolled_steps > settings.fitness_steps:
            restarts += 1
            fresh = task.new_model(seed + 1 + restarts)
            params = {k: v.detach() for k, v in fresh.named_parameters()}
            buffers = {k: v.detach().clone() for k, v in fresh.named_buffers()}
            trained = 0
        if plain_steps:
            frozen = candidate({k: v.detach() for k, v in leaves.items()})
            batches = [task.train.batch(settings.meta_batch_size, generator)
                       for _ in range(plain_steps)]
            params = unrolled_sgd(model, params, buffers, frozen, batches, sgd,
                                  create_graph=False)
            params = {k: v.detach() for k, v in params.items()}
        batches = [task.train.batch(settings.meta_batch_size, generator)
                   for _ in range(unrolled_steps)]
        validation = task.val.batch(settings.meta_batch_size, generator)
        stepped = unrolled_sgd(model, params, buffers, candidate(leaves), batches, sgd)
        value = validation_objective(task, model, stepped, buffers, validation)
        grads = torch.autograd.grad(value, tensors, allow_unused=True)
        grads = tuple(
            torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads, strict=True)
        )
        objective = value.item()
        if not (math.isfinite(objective) and all(bool(torch.isfinite(g).all()) for g in grads)):
            return history, True
        history.append(objective)
        optimizer.step(grads)
        params = {k: v.detach() for k, v in stepped.items()}
        trained += plain_steps + unrolled_steps
    return history, False


def normalised_candidate(loss: LearnedLoss, task: Task, reference: Reference) -> Candidate:
    """``loss`` with edge weights ``leaves["weights"]``, divided by its gradient scale.

    The factor is part of the differentiated graph, so the meta-gradient has no
    component that only rescales the loss: the edge weights learn its shape. For frozen
    weights (no gradient: plain training steps) it is a constant, computed once per
    binding (:data:`~symloss.implicit.Candidate`). For trainable weights it is computed
    at every call: one factor shared by a meta-step's unrolled steps has the same value
    but sums the meta-gradient's parts in another order, and on digits that rounding
    alone changed which loss a `quick` search returns (the search is chaotic in its
    fitness values), so the cheaper form would change decisions, not only time.
    """
    base = baseline_norm(task, reference)

    def candidate(leaves: dict[str, torch.Tensor]) -> LossFn:
        weights = leaves["weights"]

        def factor() -> torch.Tensor:
            norm = gradient_norm(lambda o, t: loss(o, t, weights), reference,
                                 create_graph=weights.requires_grad)
            return base / norm

        if weights.requires_grad:
            return lambda outputs, targets: loss(outputs, targets, weights) * factor()
        constant = factor()
        return lambda outputs, targets: loss(outputs, targets, weights) * constant

    return candidate


def local_search(
    task: Task,
    expression: Expression | str,
    settings: Settings,
    seed: int,
    reference: Reference | None = None,
) -> LocalSearchResult:
    """Tune the edge weights of ``expression`` on ``task`` (see :func:`meta_train`).

    With ``reference`` (a :func:`symloss.scale.reference_batch`), the loss is normalised
    to the baseline's gradient scale there at every step (:func:`normalised_candidate`).
    Deterministic for ``seed``. A meta-step whose objective or gradient is not finite
    stops the search; the last finite weights are kept.
    """
    loss = LearnedLoss(expression, task.kind, class_prior=task_prior(task))
    weights = initial_weights(loss.network.n_edges, settings.weight_init_std, seed)
    if settings.meta_steps == 0 or weights.numel() == 0:
        return LocalSearchResult(tuple(weights.tolist()), (), False)
    leaves = {"weights": weights.to(task.device).requires_grad_(True)}
    if reference is None:
        def candidate(leaves: dict[str, torch.Tensor]) -> LossFn:
            return lambda outputs, targets: loss(outputs, targets, leaves["weights"])
    else:
        candidate = normalised_candidate(loss, task, reference)
    history, stopped = meta_train(task, settings, seed, leaves, candidate)
    return LocalSearchResult(tuple(leaves["weights"].detach().cpu().tolist()), tuple(history),
                             stopped)
