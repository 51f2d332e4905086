"""Training many small models at once: :func:`train_many`.

A search trains the same small model hundreds of times, one candidate loss (or one seed)
at a time. For an MLP or a linear model, each step is a handful of tiny matrix products
whose cost is mostly the per-call overhead of PyTorch and Python, not arithmetic.
:func:`train_many` runs K such training runs as one computation: the K models' parameters
are stacked along a new first dimension, the forward pass is one
``torch.func.vmap`` of ``functional_call`` over the stack (batched matrix products), and
one backward pass gives all K gradients. Every run does exactly what
:func:`symloss.training.train` does alone: the same initialisation (``task.new_model``),
the same batches (a generator seeded with the run's seed), the same optimiser arithmetic
(:class:`symloss.optim.SGD` / :class:`symloss.optim.Adam`, elementwise, so stacking does
not change it), the same divergence checks and curve points. Results agree with
:func:`~symloss.training.train`'s to float rounding (batched and single matrix products
round differently), not bit for bit.

Only the model runs under ``vmap``. The losses run outside it, on the stacked outputs
flattened to ``[K * batch, classes]``: softmax and the one-hot targets are per row, so
flattening is exact, and the one-hot ``scatter_`` of
:func:`symloss.network.prepare_outputs`, which has no ``vmap`` batching rule, never runs
under ``vmap``. Runs whose losses are the same :class:`~symloss.network.LearnedLoss`
tree and weights (seeds of one candidate, or its rates) share one evaluation of the
tree; other losses are evaluated on their own slice of the outputs, K small elementwise
trees, still with one forward and one backward pass for the models.

When runs are batched (:func:`batch_rule`): the model is a built-in ``linear``, ``mlp``
or ``lenet5`` (:mod:`symloss.models`; other architectures may do things ``vmap`` cannot
follow), it has no buffers (batch-norm statistics would be updated once, not K times),
and, on the CPU, it has no convolutions: a convolution is compute-bound there, and the
batched (grouped) convolution measured slower than K single ones (docs/batched.md), while
on a GPU batching is what fills the device. Everything else trains one run at a time with
:func:`~symloss.training.train`, as does a group of one run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap

from symloss.models import MLP, LeNet5, LinearModel
from symloss.network import LearnedLoss, prepare_outputs
from symloss.optim import SGD, Adam
from symloss.task import Split, Task
from symloss.training import LossFn, SGDSettings, TrainResult, train

BATCHABLE_MODELS: tuple[type[nn.Module], ...] = (LinearModel, MLP, LeNet5)
"""Model classes whose forward pass is known to run under ``torch.func.vmap``."""
_CHECK_EVERY = 50  # as symloss.training.train: steps between finiteness checks


@dataclass(frozen=True)
class Run:
    """One training run of :func:`train_many`: a loss, a seed and the optimiser settings,
    as :func:`symloss.training.train` takes them."""

    loss: LossFn
    seed: int
    sgd: SGDSettings


def batch_rule(model: nn.Module, device: torch.device | str) -> str | None:
    """Why ``model`` cannot be trained batched on ``device``, or None when it can.

    Batched: an instance of :data:`BATCHABLE_MODELS` (exactly that class), every
    parameter trainable, no buffers, and no convolution when ``device`` is the CPU.
    """
    if type(model) not in BATCHABLE_MODELS:
        names = ", ".join(cls.__name__ for cls in BATCHABLE_MODELS)
        return f"{type(model).__name__} is not one of the batchable built-in models ({names})"
    if any(True for _ in model.buffers()):
        return "the model has buffers (e.g. batch-norm statistics)"
    if not all(p.requires_grad for p in model.parameters()):
        return "some of the model's parameters are frozen"
    if torch.device(device).type == "cpu" and any(
        isinstance(m, nn.Conv2d) for m in model.modules()
    ):
        return "convolutions train faster one model at a time on the CPU"
    return None


def train_many(
    task: Task,
    runs: Sequence[Run],
    steps: int,
    *,
    batched: bool | None = None,
    curve_split: Split | None = None,
    curve_points: int = 0,
) -> list[TrainResult]:
    """Train one fresh model per run for ``steps`` steps, batching runs where possible.

    Each result is what ``train(task, run.loss, steps, run.sgd, run.seed, ...)`` returns,
    to float rounding. Runs with equal optimiser settings (learning rate included) train
    together as one stacked computation.

    Parameters
    ----------
    task : Task
        The problem; its device is where the models train.
    runs : sequence of Run
        The training runs, in the order of the results.
    steps : int
        Optimiser steps of every run.
    batched : bool, optional
        ``None`` (default) applies :func:`batch_rule`; ``False`` trains one run at a
        time; ``True`` batches whenever the model runs under ``vmap`` at all (a built-in
        model without buffers), convolutions on the CPU included, for measuring.
    curve_split, curve_points
        As for :func:`symloss.training.train`.

    Returns
    -------
    list of TrainResult
        One per run, in order.

    Raises
    ------
    ValueError
        If ``steps`` is not positive.
    """
    if steps < 1:
        raise ValueError(f"steps must be a positive number of training steps, got {steps}")
    results: list[TrainResult | None] = [None] * len(runs)
    groups: dict[SGDSettings, list[int]] = {}
    for index, run in enumerate(runs):
        groups.setdefault(run.sgd, []).append(index)
    for sgd, indices in groups.items():
        models = [task.new_model(runs[i].seed) for i in indices]
        batchable = [i for i, model in zip(indices, models, strict=True)
                     if _may_batch(model, runs[i], task.device, batched)]
        if len(batchable) > 1:
            chosen = [models[indices.index(i)] for i in batchable]
            trained = _train_stacked(task, [runs[i] for i in batchable], chosen, steps, sgd,
                                     curve_split, curve_points)
            for i, result in zip(batchable, trained, strict=True):
                results[i] = result
        for i in indices:
            if results[i] is None:
                run = runs[i]
                results[i] = train(task, run.loss, steps, run.sgd, run.seed,
                                   curve_split=curve_split, curve_points=curve_points)
    return [result for result in results if result is not None]


def _may_batch(model: nn.Module, run: Run, device: torch.device, batched: bool | None) -> bool:
    """Whether ``run`` joins its group's stacked computation."""
    if batched is False:
        return False
    reason = batch_rule(model, device)
    if reason is not None and not (batched and reason.startswith("convolutions")):
        return False
    # A loss that does not reach the predictions leaves train() with no gradients, so
    # no update at all; stacked, it would get zero gradients, which weight decay moves.
    if isinstance(run.loss, LearnedLoss):
        return "f" in run.loss.expression.variables
    return run.sgd.weight_decay == 0


def _train_stacked(
    task: Task,
    runs: list[Run],
    models: list[nn.Module],
    steps: int,
    sgd: SGDSettings,
    curve_split: Split | None,
    curve_points: int,
) -> list[TrainResult]:
    """:func:`symloss.training.train` of every run, as one stacked computation."""
    names = [name for name, _ in models[0].named_parameters()]
    stacked = [
        torch.stack([dict(m.named_parameters())[name].detach() for m in models])
        .requires_grad_(True)
        for name in names
    ]
    optimizer = Adam(stacked, sgd.lr) if sgd.adam else SGD(
        stacked, sgd.lr, sgd.momentum, sgd.nesterov, sgd.weight_decay)
    forward = vmap(_forward(models[0], names))
    losses = _LossGroups(runs, task.kind)
    generators = [torch.Generator().manual_seed(run.seed) for run in runs]
    n_runs, size = len(runs), len(task.train)
    done: list[TrainResult | None] = [None] * n_runs
    record_at: set[int] = set()
    curves: list[list[tuple[int, float]]] = [[] for _ in runs]
    if curve_split is not None and curve_points > 0:
        record_at = {round(steps * i / curve_points) for i in range(curve_points + 1)}
        if 0 in record_at:
            for curve, model in zip(curves, models, strict=True):
                curve.append((0, task.metric(model, curve_split)))
    for step in range(1, steps + 1):
        # the indices Split.batch draws for each run, gathered in one indexing operation
        index = torch.stack([torch.randint(0, size, (sgd.batch_size,), generator=g)
                             for g in generators]).to(task.train.x.device)
        outputs = forward(tuple(stacked), task.train.x[index])
        values = losses(outputs, task.train.y[index])
        grads = torch.autograd.grad(values.sum(), stacked)
        optimizer.step(grads)
        if step % _CHECK_EVERY == 0 or step == steps:
            finite = torch.isfinite(values).tolist()
            for k in range(n_runs):
                if done[k] is None and not finite[k]:
                    done[k] = TrainResult(_load(models[k], stacked, k), step, True, curves[k])
            if all(result is not None for result in done):
                break
        if step in record_at and curve_split is not None:
            for k in range(n_runs):
                if done[k] is None:
                    curves[k].append((step, task.metric(_load(models[k], stacked, k),
                                                        curve_split)))
    return [
        result if result is not None
        else TrainResult(_load(models[k], stacked, k), steps, False, curves[k])
        for k, result in enumerate(done)
    ]


def _forward(
    model: nn.Module, names: list[str]
) -> Callable[[tuple[torch.Tensor, ...], torch.Tensor], torch.Tensor]:
    """``(parameters, x) -> model(x)`` with the parameters as a tuple in ``names`` order."""
    def call(params: tuple[torch.Tensor, ...], x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, dict(zip(names, params, strict=True)), (x,))
    return call


def _load(model: nn.Module, stacked: list[torch.Tensor], k: int) -> nn.Module:
    """``model`` with run ``k``'s slice of the stacked parameters copied in."""
    with torch.no_grad():
        for p, s in zip(model.parameters(), stacked, strict=True):
            p.copy_(s[k])
    return model


class _LossGroups:
    """The per-run loss values ``[K]`` of stacked outputs ``[K, batch, ...]``.

    Runs whose loss is a :class:`LearnedLoss` of the same tree and weights are one
    group: their outputs are flattened to ``[n * batch, ...]``, transformed once
    (``prepare_outputs``: softmax and one-hot are per row) and the tree is evaluated
    once; each run's value is its slice summed over outputs and averaged over the batch
    (:func:`symloss.network.reduce_loss`), times its scale. Any other loss is called on
    its own run's slice.
    """

    def __init__(self, runs: Sequence[Run], kind: str) -> None:
        self.kind = kind
        self.groups: dict[tuple[str, tuple[float, ...]], list[int]] = {}
        self.others: list[int] = []
        for k, run in enumerate(runs):
            if isinstance(run.loss, LearnedLoss) and run.loss.task == kind:
                key = (run.loss.expression.key(), tuple(run.loss.weights))
                self.groups.setdefault(key, []).append(k)
            else:
                self.others.append(k)
        self.runs = list(runs)
        self.scales = {key: torch.tensor([runs[k].loss.scale for k in ks])  # type: ignore[attr-defined]
                       for key, ks in self.groups.items()}

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        n_runs, batch = outputs.shape[:2]
        if not self.others and len(self.groups) == 1:  # one loss for every run
            return self._group(next(iter(self.groups)), outputs, targets)
        values: list[torch.Tensor | None] = [None] * n_runs
        for key, ks in self.groups.items():
            index = torch.tensor(ks, device=outputs.device)
            group_values = self._group(key, outputs[index], targets[index])
            for j, k in enumerate(ks):
                values[k] = group_values[j]
        for k in self.others:
            values[k] = self.runs[k].loss(outputs[k], targets[k])
        return torch.stack(values)  # type: ignore[arg-type]

    def _group(
        self, key: tuple[str, tuple[float, ...]], outputs: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """The values ``[n]`` of one group's runs, from their outputs ``[n, batch, ...]``."""
        n_runs, batch = outputs.shape[:2]
        f, y = prepare_outputs(outputs.reshape(n_runs * batch, *outputs.shape[2:]),
                               targets.reshape(n_runs * batch, *targets.shape[2:]), self.kind)
        network = self.runs[self.groups[key][0]].loss.network  # type: ignore[attr-defined]
        elementwise = network(f, y).reshape(n_runs, batch, -1)
        scale = self.scales[key].to(device=outputs.device, dtype=elementwise.dtype)
        return elementwise.sum(dim=2).mean(dim=1) * scale
