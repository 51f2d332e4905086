"""Training many small models at once: :func:`train_many`.

A search trains the same small model hundreds of times, one candidate loss (or one seed)
at a time. For an MLP or a linear model, each step is a handful of tiny matrix products
whose cost is mostly the per-call overhead of PyTorch and Python, not arithmetic.
:func:`train_many` runs K such training runs as one computation: the K models' parameters
are stacked along a new first dimension, each layer runs once for all K models (a batched
matrix product ``baddbmm`` for a linear layer), and one backward pass gives all K
gradients. Every run does exactly what :func:`symloss.training.train` does alone: the
same initialisation (``task.new_model``), the same batches (a generator seeded with the
run's seed), the same optimiser arithmetic (:class:`symloss.optim.SGD` /
:class:`symloss.optim.Adam`, elementwise, so stacking does not change it), the same
divergence checks and curve points. Results agree with :func:`~symloss.training.train`'s
to float rounding (batched and single matrix products round differently), not bit for
bit.

The layers are stacked by hand rather than with ``torch.func.vmap`` of
``functional_call``: on the CPU, ``vmap``'s per-operation wrapping cost about as much as
the small products it batches (docs/batched.md measures both). Convolutions run once per
model on the CPU, where they are compute-bound and one grouped convolution measured
slower than K single ones, and as one grouped convolution on a GPU, where batching is
what fills the device.

The losses run on the stacked outputs flattened to ``[K * batch, classes]``: softmax and
one-hot targets are per row, so flattening is exact, and the output transform
(:func:`symloss.metaloss.prepare_outputs`) runs once for all K runs. Runs whose losses
are the same :class:`~symloss.network.LearnedLoss` tree and weights (seeds of one
candidate) share one evaluation of the tree; different trees are evaluated each on its
own runs' slice; a loss that is not a :class:`~symloss.network.LearnedLoss` is called on
its run's outputs.

When runs are batched (:func:`batch_rule`): the model is a built-in ``linear``, ``mlp``
or ``lenet5`` (:mod:`symloss.models`: chains of layers whose stacked form is written
here), it has no buffers (batch-norm statistics would be updated once, not K times),
every parameter is trainable, and, on the CPU, it has no convolution: stacked LeNet-5
measured slower there than one model at a time (docs/batched.md; K models' activations
at once no longer fit the caches, and the convolutions themselves gain nothing).
Everything else trains one run at a time with :func:`~symloss.training.train`. A
batchable run trains in the stacked form even alone (K = 1; about a third slower than
``train`` for one MLP), so that its numbers never depend on which runs it was grouped
with: a stacked product is computed one model at a time, and each run's results are the
same bit for bit in any group (``tests/test_batched.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from symloss.metaloss import prepare_outputs
from symloss.models import MLP, LeNet5, LinearModel, layer_chain
from symloss.network import LearnedLoss
from symloss.optim import SGD, Adam
from symloss.task import Split, Task
from symloss.training import LossFn, SGDSettings, TrainResult, train

BATCHABLE_MODELS: tuple[type[nn.Module], ...] = (LinearModel, MLP, LeNet5)
"""Model classes :func:`train_many` batches: each is a chain of the layers in
:data:`STACKED_LAYERS`."""
STACKED_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Flatten, nn.Linear, nn.ReLU, nn.Conv2d, nn.MaxPool2d)
"""Layer types with a stacked (K models at once) form."""
_CHECK_EVERY = 50  # as symloss.training.train: steps between finiteness checks
_INDEX_BLOCK = 50  # training steps whose batch indices are drawn at once
CHUNK_SIZE = 16
"""Most runs :func:`spread` stacks into one chunk: with MLP-sized models the gain per run
levels off near there on the CPU (docs/batched.md)."""


@dataclass(frozen=True)
class Run:
    """One training run of :func:`train_many`: a loss, a seed and the optimiser settings,
    as :func:`symloss.training.train` takes them."""

    loss: LossFn
    seed: int
    sgd: SGDSettings


def batch_rule(model: nn.Module, device: torch.device | str = "cpu") -> str | None:
    """Why ``model`` is not trained batched on ``device``, or None when it is.

    Batched: an instance of :data:`BATCHABLE_MODELS` (exactly that class) made of
    :data:`STACKED_LAYERS` only (a convolution with zero padding and no dilation), every
    parameter trainable, no buffers, and no convolution when ``device`` is the CPU.
    """
    reason = _unstackable(model)
    if reason is None and torch.device(device).type == "cpu" and _has_convolution(model):
        return "its convolutions train faster one model at a time on the CPU"
    return reason


def _has_convolution(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _unstackable(model: nn.Module) -> str | None:
    """Why ``model`` has no stacked form, or None when it has one."""
    if type(model) not in BATCHABLE_MODELS:
        names = ", ".join(cls.__name__ for cls in BATCHABLE_MODELS)
        return f"{type(model).__name__} is not one of the batchable built-in models ({names})"
    if any(True for _ in model.buffers()):
        return "the model has buffers (e.g. batch-norm statistics)"
    if not all(p.requires_grad for p in model.parameters()):
        return "some of the model's parameters are frozen"
    for layer in layer_chain(model):
        if type(layer) not in STACKED_LAYERS or (
            isinstance(layer, nn.Conv2d)
            and (layer.padding_mode != "zeros" or isinstance(layer.padding, str)
                 or layer.dilation != (1, 1))
        ) or (isinstance(layer, nn.Flatten) and (layer.start_dim, layer.end_dim) != (1, -1)):
            return f"its layer {layer} has no stacked form here"
    return None


def train_many(
    task: Task,
    runs: Sequence[Run],
    steps: int,
    *,
    batched: bool | None = None,
    curve_split: Split | None = None,
    curve_points: int = 0,
    stop: Callable[[Sequence[Sequence[tuple[int, float]]]], bool] | None = None,
) -> list[TrainResult]:
    """Train one fresh model per run for ``steps`` steps, batching runs where possible.

    Each result is what ``train(task, run.loss, steps, run.sgd, run.seed, ...)`` returns,
    to float rounding. Runs with equal optimiser settings train together as one stacked
    computation when :func:`batch_rule` allows; SGD runs of different learning rates
    too (:func:`stack_key`: a rate per model), Adam runs only at one rate.

    Parameters
    ----------
    task : Task
        The problem; its device is where the models train.
    runs : sequence of Run
        The training runs, in the order of the results.
    steps : int
        Optimiser steps of every run.
    batched : bool, optional
        ``None`` (default) follows :func:`batch_rule`; ``False`` trains one run at a
        time; ``True`` also stacks models with convolutions on the CPU (for measuring).
    curve_split, curve_points
        As for :func:`symloss.training.train`.
    stop : callable, optional
        Where all runs train as one stacked computation: called with their curves (in
        the order of ``runs``) each time a curve point was recorded; when it returns
        True, training stops there, and each run that had not diverged ends at that step
        with its curve so far (a result with ``steps`` below the ``steps`` asked for).
        Otherwise every run goes to the end.

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
        groups.setdefault(stack_key(run.sgd), []).append(index)
    for indices in groups.values():
        models = {i: task.new_model(runs[i].seed) for i in indices}
        joining = [i for i in indices
                   if _may_batch(models[i], runs[i], task.device, batched)]
        if joining:
            together = len(joining) == len(runs)
            trained = _train_stacked(task, [runs[i] for i in joining],
                                     [models[i] for i in joining], steps,
                                     curve_split, curve_points, stop if together else None)
            for i, result in zip(joining, trained, strict=True):
                results[i] = result
        for i in indices:
            if results[i] is None:
                run = runs[i]
                results[i] = train(task, run.loss, steps, run.sgd, run.seed,
                                   curve_split=curve_split, curve_points=curve_points)
    return [result for result in results if result is not None]


def stack_key(sgd: SGDSettings) -> SGDSettings:
    """What runs must share to train as one stacked computation: their optimiser
    settings, the learning rate aside for SGD (each model steps at its own rate; Adam's
    bias-corrected step is one number per step)."""
    return sgd if sgd.adam else dataclasses.replace(sgd, lr=0.0)


def spread(
    run: Callable[[Sequence[Sequence[Any]]], Iterable[Sequence[Any]]],
    items: Sequence[Any],
    key: Callable[[Any], Hashable],
    parts: int,
    size: int = CHUNK_SIZE,
    done: Callable[[Sequence[Any], Sequence[Any]], None] | None = None,
    unit: Callable[[Any], Hashable | None] | None = None,
) -> list[Any]:
    """Results of ``items`` in order, computed by ``run`` over chunks of them.

    The items of each ``key`` (runs that can train as one stacked computation: the same
    steps and optimiser settings) are split into near-equal chunks: at least ``parts``
    (the workers ``run`` spreads chunks over, so that each has a share) and as many as
    keep every chunk within ``size`` items (``size=1``: one run at a time), never more
    chunks than items. Items of one ``unit(item)`` (not ``None``) stay in one chunk
    (runs that must see each other, such as the seeds of a loss whose runs stop together);
    the count above is then of units. ``run`` maps a list of chunks to their per-chunk
    result lists (a list, or an iterator giving them as they finish). A stacked run's
    numbers do not depend on its chunk, so the results do not depend on ``parts``.
    ``done(chunk, results)`` is called as each chunk's results arrive, in chunk order."""
    groups: dict[Hashable, dict[Hashable, list[int]]] = {}
    for index, item in enumerate(items):
        together = None if unit is None else unit(item)
        units = groups.setdefault(key(item), {})
        units.setdefault(("unit", together) if together is not None else ("item", index),
                         []).append(index)
    chunks: list[list[int]] = []
    for units in groups.values():
        members = list(units.values())
        n_items = sum(len(m) for m in members)
        n = min(len(members), max(parts, -(-n_items // size)))
        step, extra = divmod(len(members), n)
        start = 0
        for j in range(n):
            stop = start + step + (j < extra)
            chunks.append([i for m in members[start:stop] for i in m])
            start = stop
    results: list[Any] = [None] * len(items)
    outputs = run([[items[i] for i in chunk] for chunk in chunks])
    for chunk, output in zip(chunks, outputs, strict=True):
        for i, result in zip(chunk, output, strict=True):
            results[i] = result
        if done is not None:
            done([items[i] for i in chunk], output)
    return results


def _may_batch(
    model: nn.Module, run: Run, device: torch.device, batched: bool | None
) -> bool:
    """Whether ``run`` joins its group's stacked computation."""
    if batched is False:
        return False
    reason = _unstackable(model) if batched else batch_rule(model, device)
    if reason is not None:
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
    curve_split: Split | None,
    curve_points: int,
    stop: Callable[[Sequence[Sequence[tuple[int, float]]]], bool] | None = None,
) -> list[TrainResult]:
    """:func:`symloss.training.train` of every run, as one stacked computation (the
    runs share their :func:`stack_key`), ended early where ``stop`` says (see
    :func:`train_many`)."""
    if len(runs) == 1:
        # torch's batched products take other kernels for a batch of one (matrix-vector
        # ones where a side is a vector: a model with one input or one output), which
        # round differently: a lone run trains beside a copy of itself, so that its
        # numbers are those it gets in any larger stack
        twin = task.new_model(runs[0].seed)
        return _train_stacked(task, runs * 2, [models[0], twin], steps, curve_split,
                              curve_points, None if stop is None else
                              lambda curves: stop(curves[:1]))[:1]
    per_model = [list(m.parameters()) for m in models]
    stacked = [torch.stack([params[j].detach() for params in per_model]).requires_grad_(True)
               for j in range(len(per_model[0]))]
    sgd = runs[0].sgd
    optimizer = Adam(stacked, sgd.lr) if sgd.adam else SGD(
        stacked, [run.sgd.lr for run in runs], sgd.momentum, sgd.nesterov, sgd.weight_decay)
    network = _StackedChain(models[0], stacked)
    losses = _StackedLosses(runs, task.kind)
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
        # the indices Split.batch draws for each run, _INDEX_BLOCK steps at a time: one
        # draw of [steps, batch] from a generator gives the same numbers as that many
        # draws of [batch] in turn
        if (step - 1) % _INDEX_BLOCK == 0:
            block = min(_INDEX_BLOCK, steps - step + 1)
            indices = torch.stack([torch.randint(0, size, (block, sgd.batch_size), generator=g)
                                   for g in generators]).to(task.train.x.device)
        index = indices[:, (step - 1) % _INDEX_BLOCK]
        values = losses(network(task.train.x[index]), task.train.y[index])
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
            if stop is not None and step < steps and stop(curves):
                steps = step
                break
    return [
        result if result is not None
        else TrainResult(_load(models[k], stacked, k), steps, False, curves[k])
        for k, result in enumerate(done)
    ]


def _load(model: nn.Module, stacked: list[torch.Tensor], k: int) -> nn.Module:
    """``model`` with run ``k``'s slice of the stacked parameters copied in."""
    with torch.no_grad():
        for p, s in zip(model.parameters(), stacked, strict=True):
            p.copy_(s[k])
    return model


class _StackedChain:
    """A built-in model's layer chain applied to K models at once: inputs ``[K, B, ...]``
    and the stacked parameters ``[K, ...]`` (in ``model.parameters()`` order) give the
    outputs ``[K, B, ...]``."""

    def __init__(self, model: nn.Module, stacked: list[torch.Tensor]) -> None:
        position = {id(p): j for j, p in enumerate(model.parameters())}
        self.layers = [
            (layer, [stacked[position[id(p)]] for p in layer.parameters(recurse=False)])
            for layer in layer_chain(model)
        ]
        self.grouped = stacked[0].device.type != "cpu"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer, params in self.layers:
            if isinstance(layer, nn.Linear):
                weight = params[0].transpose(1, 2)
                h = torch.baddbmm(params[1].unsqueeze(1), h, weight) if len(params) == 2 \
                    else torch.bmm(h, weight)
            elif isinstance(layer, nn.Conv2d):
                h = _stacked_conv(layer, h, params, self.grouped)
            elif isinstance(layer, nn.Flatten):
                h = h.flatten(2)
            elif isinstance(layer, nn.ReLU):
                h = torch.relu(h)
            else:  # MaxPool2d, on the models and their examples as one batch
                h = layer(h.flatten(0, 1)).unflatten(0, h.shape[:2])
        return h


def _stacked_conv(
    layer: nn.Conv2d, h: torch.Tensor, params: list[torch.Tensor], grouped: bool
) -> torch.Tensor:
    """``layer``'s convolution of K models: ``h`` is ``[K, B, C, H, W]``. ``grouped``:
    as one grouped convolution (on a GPU), else one convolution per model (on the CPU,
    where convolutions are compute-bound and K plain ones measured faster)."""
    weight, bias = params[0], (params[1] if len(params) == 2 else None)
    options = {"stride": layer.stride, "padding": layer.padding}
    n_models = h.shape[0]
    if not grouped:
        return torch.stack([
            F.conv2d(h[k], weight[k], None if bias is None else bias[k],
                     groups=layer.groups, **options)
            for k in range(n_models)
        ])
    # one grouped convolution: the K models' channels side by side
    grouped = h.transpose(0, 1).flatten(1, 2)
    out = F.conv2d(grouped, weight.flatten(0, 1), None if bias is None else bias.flatten(),
                   groups=layer.groups * n_models, **options)
    return out.unflatten(1, (n_models, -1)).transpose(0, 1)


class _StackedLosses:
    """The per-run loss values ``[K]`` of stacked outputs ``[K, batch, ...]``.

    The output transform (``prepare_outputs``: softmax and one-hot are per row) runs
    once on the outputs flattened to ``[K * batch, ...]``. Runs whose loss is a
    :class:`LearnedLoss` of the same tree and weights are one group: the tree runs once
    on their slice, and each run's value is its part summed over outputs and averaged
    over the batch (:func:`symloss.metaloss.reduce_loss`), times its scale. Any other
    loss is called on its own run's outputs.
    """

    def __init__(self, runs: Sequence[Run], kind: str) -> None:
        self.kind = kind
        groups: dict[tuple[str, tuple[float, ...]], list[int]] = {}
        self.others: list[int] = []
        for k, run in enumerate(runs):
            if isinstance(run.loss, LearnedLoss) and run.loss.task == kind:
                key = (run.loss.expression.key(), tuple(run.loss.weights))
                groups.setdefault(key, []).append(k)
            else:
                self.others.append(k)
        self.groups = [(runs[ks[0]].loss.network, ks, _scales(runs, ks))  # type: ignore[attr-defined]
                       for ks in groups.values()]
        self.runs = list(runs)
        order = [k for _, ks, _ in self.groups for k in ks] + self.others
        self.order = None if order == list(range(len(runs))) else torch.tensor(order).argsort()

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.groups:
            n_runs, batch = outputs.shape[:2]
            f, y = prepare_outputs(outputs.flatten(0, 1), targets.flatten(0, 1),
                                   self.kind, long_softmax=True)
            f, y = f.unflatten(0, (n_runs, batch)), y.unflatten(0, (n_runs, batch))
            for network, ks, scales in self.groups:
                if ks == list(range(ks[0], ks[-1] + 1)):  # contiguous runs: a view
                    f_k, y_k = f[ks[0]:ks[-1] + 1], y[ks[0]:ks[-1] + 1]
                else:
                    index = torch.tensor(ks, device=f.device)
                    f_k, y_k = f[index], y[index]
                values = network(f_k, y_k).sum(dim=2).mean(dim=1)
                if scales is not None:
                    values = values * scales.to(device=values.device, dtype=values.dtype)
                parts.append(values)
        parts += [self.runs[k].loss(outputs[k], targets[k]).reshape(1) for k in self.others]
        values = parts[0] if len(parts) == 1 else torch.cat(parts)
        return values if self.order is None else values[self.order.to(values.device)]


def _scales(runs: Sequence[Run], ks: list[int]) -> torch.Tensor | None:
    """The scales of runs ``ks`` (LearnedLosses), None when all are 1."""
    scales = [runs[k].loss.scale for k in ks]  # type: ignore[attr-defined]
    return None if all(s == 1.0 for s in scales) else torch.tensor(scales)
