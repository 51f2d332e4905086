"""User data and model -> a :class:`Task`: splits, fresh models, output transform, the
user's metric and baseline loss.

Everything the evaluator needs to know about the user's problem lives here, and every
check on the user's input runs here, before any training starts.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from symloss.expression import Expression
from symloss.inputs import (
    check_classes,
    check_consistent,
    check_finite,
    check_scale,
    encode_labels,
    infer_kind,
    is_text,
    numeric,
    split_off,
    to_arrays,
)
from symloss.kinds import CLASSIFICATION, REGRESSION
from symloss.library import baseline
from symloss.lossfile import load
from symloss.metaloss import prepare_outputs, reduce_loss
from symloss.metrics import ClassObjective, Metric, MetricFn, default_metric, resolve_metric
from symloss.network import LearnedLoss

ModelSpec = nn.Module | Callable[[], nn.Module] | str
MetricSpec = str | MetricFn | Metric | None
"""A registered metric name (:data:`symloss.metrics.METRICS`), a callable
``metric(y_true, y_pred) -> float`` (lower is better), or None for the kind's default."""
BaselineSpec = str | Expression | LearnedLoss | os.PathLike | None
"""The loss the user trains with today: expression text, an Expression, a
:class:`~symloss.network.LearnedLoss` or the path of a saved one; None for
cross-entropy / squared error."""
_DEFAULT_BASELINE_NAMES = {"classification": "cross-entropy", "regression": "MSE"}
_EVAL_BATCH = 4096


@dataclass(frozen=True)
class Split:
    """Inputs and targets of one split, as tensors on the task's device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch (sampled with replacement) drawn with ``generator``."""
        index = torch.randint(0, len(self), (size,), generator=generator)
        index = index.to(self.x.device)
        return self.x[index], self.y[index]

    def head(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` examples."""
        return self.x[:n], self.y[:n]


class Task:
    """A learning problem ready for loss search.

    Build one with :func:`make_task`. Holds non-overlapping ``train``, ``val`` and
    ``test`` splits, the task ``kind``, and creates freshly initialised models.

    Attributes
    ----------
    kind : {"classification", "regression"}
    n_classes : int or None
        Number of classes (classification only).
    train, val, test : Split
    device : torch.device
    single_output : bool
        True for a classifier with one output column (sigmoid, binary cross-entropy).
    scoring : Metric
        What every stage scores (the user's metric; error rate or MSE by default).
    """

    def __init__(
        self,
        kind: str,
        train: Split,
        val: Split,
        test: Split,
        model: nn.Module | Callable[[], nn.Module],
        n_classes: int | None,
        device: torch.device,
        *,
        metric: Metric | None = None,
        baseline_loss: LearnedLoss | None = None,
    ) -> None:
        self.kind = kind
        self.train, self.val, self.test = train, val, test
        self.n_classes = n_classes
        self.device = device
        self.single_output = False
        self.scoring = metric or default_metric(kind)
        self._model = model
        self._baseline = baseline_loss

    @property
    def baseline(self) -> Expression:
        """The baseline loss expression: the user's (``baseline=``), else cross-entropy
        (binary cross-entropy for a model with one output column) or squared error."""
        if self._baseline is not None:
            return self._baseline.expression
        return baseline(self.kind, self.single_output)

    @property
    def baseline_weights(self) -> tuple[float, ...]:
        """The edge weights of a saved loss given as the baseline (empty: all ones)."""
        if self._baseline is None or all(w == 1.0 for w in self._baseline.weights):
            return ()
        return tuple(self._baseline.weights)

    @property
    def custom_baseline(self) -> bool:
        """Whether the user gave the baseline (``baseline=``)."""
        return self._baseline is not None

    @property
    def default_baseline(self) -> bool:
        """Whether the baseline is the kind's default loss (:attr:`baseline` without
        ``baseline=``): none given, or one given with the default's canonical form
        (:meth:`~symloss.expression.Expression.key`), unit edge weights and scale 1,
        such as ``baseline="-(y * log(f))"``."""
        if self._baseline is None:
            return True
        cache = self.__dict__.setdefault("_default_baseline", {})
        if self.single_output not in cache:  # the key costs SymPy: once per task
            loss = self._baseline
            cache[self.single_output] = (
                loss.expression.key() == baseline(self.kind, self.single_output).key()
                and all(w == 1.0 for w in loss.weights) and loss.scale == 1.0)
        return bool(cache[self.single_output])

    @property
    def class_frequencies(self) -> tuple[float, ...]:
        """Each class's frequency in the training split, one per class even for a model
        with one output column (:func:`symloss.prior.task_prior` gives only class 1's
        there); computed once. What a balanced metric's surrogate weighs classes by
        (:attr:`symloss.metrics.Metric.class_objective`). Classification only."""
        if "_class_frequencies" not in self.__dict__:
            labels = self.train.y.detach().reshape(-1).long().cpu()
            counts = torch.bincount(labels, minlength=self.n_classes or 0).double()
            self.__dict__["_class_frequencies"] = tuple((counts / labels.numel()).tolist())
        return tuple(self.__dict__["_class_frequencies"])

    def baseline_loss(self) -> LearnedLoss:
        """The baseline as the user trains with it (a saved loss keeps its scale)."""
        if self._baseline is not None:
            return self._baseline
        return LearnedLoss(self.baseline, self.kind)

    @property
    def baseline_name(self) -> str:
        """How tables name the baseline: "cross-entropy", "MSE" or the user's expression."""
        if self._baseline is not None:
            return str(self._baseline.expression)
        return _DEFAULT_BASELINE_NAMES[self.kind]

    def new_model(self, seed: int) -> nn.Module:
        """A freshly initialised model, deterministic for ``seed``, on the task's device.

        A model given as an instance is deep-copied and re-initialised with each
        submodule's own ``reset_parameters``; a factory is called. The global torch RNG
        is left as it was.
        """
        with torch.random.fork_rng(devices=[]):
            if self.device.type == "cpu":
                # Only the CPU generator: torch.manual_seed also queues seeds for every
                # accelerator backend, formatting a stack trace each time, which made
                # this call most of a small model's construction cost.
                torch.default_generator.manual_seed(seed)
            else:
                torch.manual_seed(seed)
            if isinstance(self._model, nn.Module):
                model = copy.deepcopy(self._model)
                for module in model.modules():
                    reset = getattr(module, "reset_parameters", None)
                    if callable(reset):
                        reset()
            else:
                model = self._model()
        if not isinstance(model, nn.Module):
            raise ValueError(
                f"the model factory returned {type(model).__name__}, not an nn.Module; it must "
                "be a zero-argument callable returning a fresh torch module"
            )
        return model.to(self.device).train()

    def base_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The value of the baseline loss: the user's (``baseline=``), else cross-entropy,
        or squared error summed over the outputs and averaged over the batch
        (:func:`symloss.metaloss.reduce_loss`)."""
        if self._baseline is not None:
            return self._baseline(outputs, targets)
        if self.kind == CLASSIFICATION:
            if outputs.shape[1] == 1:
                return F.binary_cross_entropy_with_logits(
                    outputs.reshape(-1), targets.reshape(-1).to(outputs.dtype)
                )
            return F.cross_entropy(outputs, targets)
        f, y = prepare_outputs(outputs, targets, "regression")
        return reduce_loss(torch.square(f - y), "regression")

    def meta_objective(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The differentiable objective of the local search: the metric's own
        differentiable form where it has one (MSE, MAE, pinball), summed over the
        outputs and averaged over the batch; the metric's surrogate for a balanced
        classification metric with the default baseline, given or not
        (class-balanced cross-entropy);
        else the baseline loss (:meth:`base_loss`)."""
        surrogate = self._class_surrogate
        if surrogate is not None:
            return surrogate(outputs, targets, self.class_frequencies)
        objective = self.scoring.objective
        if objective is None or self.kind != REGRESSION:
            return self.base_loss(outputs, targets)
        f, y = prepare_outputs(outputs, targets, "regression")
        return reduce_loss(objective(f, y), "regression")

    @property
    def _class_surrogate(self) -> ClassObjective | None:
        """The classification metric's surrogate where :meth:`meta_objective` is it (else
        None): the surrogate re-weights cross-entropy, so it stands in for the baseline
        only where that is the default (:attr:`default_baseline`); with another loss of
        the user's the local search keeps that loss."""
        if self.kind != CLASSIFICATION or self.scoring.class_objective is None:
            return None
        return self.scoring.class_objective if self.default_baseline else None

    @property
    def meta_objective_name(self) -> str:
        """What :meth:`meta_objective` computes, in words (for records and reports)."""
        if self._class_surrogate is not None:
            return str(self.scoring.objective_name)
        if self.scoring.objective is not None and self.kind == REGRESSION:
            return str(self.scoring.objective_name)
        return f"the baseline loss {self.baseline}"

    def metric_from_outputs(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        """The task metric (``scoring``) of model outputs: on the predicted labels
        (argmax; logit > 0 for one output column) or the predictions in the targets'
        shape. Error rate and MSE by default."""
        if self.kind == CLASSIFICATION:
            if outputs.shape[1] == 1:
                predicted = (outputs.reshape(-1) > 0).long()
            else:
                predicted = outputs.argmax(dim=1)
            return self.scoring.from_tensors(targets.reshape(-1), predicted)
        if self.scoring.tensor_form is not None:
            f, y = prepare_outputs(outputs, targets, "regression")
            return self.scoring.from_tensors(y, f)
        return self.scoring.from_tensors(targets, outputs.reshape(targets.shape))

    @torch.no_grad()
    def outputs(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Model outputs on ``x``, in evaluation mode and in chunks."""
        was_training = model.training
        model.eval()
        try:
            return torch.cat([model(x[i : i + _EVAL_BATCH]) for i in range(0, len(x), _EVAL_BATCH)])
        finally:
            model.train(was_training)

    def metric(self, model: nn.Module, split: Split) -> float:
        """The task metric of ``model`` on a whole split (lower is better)."""
        return self.metric_from_outputs(self.outputs(model, split.x), split.y)

    @property
    def kind_metric(self) -> str:
        """How tables name the task metric: "error rate", "MSE", "MAE", ..."""
        return self.scoring.label

    def describe(self) -> str:
        """One line: kind, classes and split sizes."""
        classes = f", {self.n_classes} classes" if self.n_classes else ""
        return (
            f"{self.kind}{classes}: {len(self.train)} train / {len(self.val)} validation / "
            f"{len(self.test)} test examples"
        )


def resolve_data(data: Any, seed: int = 0) -> tuple[Any, str | None]:
    """User data or a built-in dataset name -> (data :func:`make_task` takes, task kind).

    A string names a built-in dataset (see :mod:`symloss.datasets`); a loaded
    :class:`symloss.datasets.Dataset` is used with its own train/test split.
    """
    from symloss.datasets import Dataset, load_dataset

    if isinstance(data, str):
        data = load_dataset(data, seed=seed)
    if isinstance(data, Dataset):
        parts = {"train": data.train}
        if data.val is not None:
            parts["val"] = data.val
        if data.test is not None:
            parts["test"] = data.test
        return parts, data.task
    return data, None


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device that can hold data here, or a ValueError saying why
    not (a malformed name, a backend this machine or torch build lacks, or ``"meta"``,
    which holds shapes but no values)."""
    try:
        device = torch.device(device)
        if device.type == "meta":
            raise ValueError("it holds tensor shapes but no values, so nothing can train there")
        torch.empty(1, device=device)
    except Exception as error:  # torch raises RuntimeError, AssertionError, ...
        why = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"device {str(device)!r} cannot be used: {why}") from None
    return device


def make_task(
    data: Any,
    model: ModelSpec,
    *,
    task: str | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    device: str | torch.device = "cpu",
    metric: MetricSpec = None,
    baseline: BaselineSpec = None,
) -> Task:
    """Turn user data and a model into a :class:`Task`.

    Parameters
    ----------
    data : (X, y) pair, Dataset, or dict
        Arrays/tensors ``(X, y)``; a map-style torch ``Dataset`` yielding ``(x, y)``; or a
        dict with ``"train"``, optional ``"val"`` and optional ``"test"`` entries, each
        one of those. Splits that are not given are split off (train first gives up the
        test split, then the validation split), stratified for classification.
    model : nn.Module or callable
        A module instance (re-initialised for every run through its submodules'
        ``reset_parameters``) or a zero-argument callable returning a fresh module.
    task : {"classification", "regression"}, optional
        Overrides the inference (integer targets: classification; float: regression).
    val_fraction, test_fraction : float
        Fractions split off when a split is not given.
    seed : int
        Seed of the splits.
    device : str or torch.device
        Where data and models live.
    metric : str or callable, optional
        What to score, lower is better (:mod:`symloss.metrics`): a registered name or a
        callable ``metric(y_true, y_pred) -> float`` on predicted labels
        (classification) or predictions (regression); error rate / MSE when None.
    baseline : str, Expression, LearnedLoss or path, optional
        The loss the user trains with today (expression text, a loss, or a saved loss's
        path); cross-entropy / squared error when None.

    Raises
    ------
    ValueError
        For inconsistent or unusable input, before any training: an unknown metric or
        one that fails on the validation targets, a baseline that is not a loss of the
        task's kind, splits with different
        features, the same data given as two splits (a search would reward memorising),
        classes missing from train, labels numbered far beyond their count, non-numeric
        inputs, or values so large (above 1e15) that float32 training overflows; values
        above 1e6 only warn.

    Notes
    -----
    Class labels given as strings are encoded as 0..C-1 in sorted order of the
    training split's labels.
    """
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {fraction}")
    device = check_device(device)
    if isinstance(data, Mapping):
        unknown = set(data) - {"train", "val", "test"}
        if unknown or "train" not in data:
            raise ValueError(
                f"a data dict needs a 'train' entry and may have 'val' and 'test'; got keys "
                f"{sorted(data)}"
            )
        parts = {name: to_arrays(value, name) for name, value in data.items() if value is not None}
    else:
        parts = {"train": to_arrays(data, "data")}

    for name, (x, y) in parts.items():
        if len(x) != len(y):
            raise ValueError(f"{name}: {len(x)} inputs but {len(y)} targets; they must match")
        if len(x) == 0:
            raise ValueError(f"{name} split is empty")
        parts[name] = (numeric(x, f"{name} inputs"), y)
        check_finite(parts[name][0], f"{name} inputs")
        check_finite(y, f"{name} targets")
    check_consistent(parts)

    kind = infer_kind(parts["train"][1], task)
    if kind == CLASSIFICATION and any(is_text(y) for _, y in parts.values()):
        parts = encode_labels(parts)
    parts = {k: (x, numeric(y, f"{k} targets")) for k, (x, y) in parts.items()}
    for name, (_, y) in parts.items():
        check_finite(y, f"{name} targets")
    check_scale(parts, kind)
    if kind == CLASSIFICATION:
        for name, (_, y) in parts.items():
            if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
                raise ValueError(
                    f"{name} targets are not integer class labels; pass task='regression' or "
                    "encode the classes as 0..C-1"
                )
            if y.ndim != 1:
                raise ValueError(f"{name}: class labels must be one-dimensional, got {y.shape}")
            if y.min() < 0:
                raise ValueError(f"{name}: class labels must be 0..C-1, found {y.min()}")
        parts = {k: (x, y.astype(np.int64)) for k, (x, y) in parts.items()}
    stratify = kind == CLASSIFICATION
    x, y = parts["train"]
    if "test" not in parts:
        x, y, test_x, test_y = split_off(x, y, test_fraction, stratify, seed, "test")
        parts["test"] = (test_x, test_y)
    if "val" not in parts:
        x, y, val_x, val_y = split_off(x, y, val_fraction, stratify, seed + 1, "validation")
        parts["val"] = (val_x, val_y)
    parts["train"] = (x, y)

    n_classes = None
    if kind == CLASSIFICATION:
        n_classes = check_classes(parts)

    def tensors(name: str) -> Split:
        x, y = parts[name]
        x_t = torch.as_tensor(x)
        x_t = x_t.float() if x_t.is_floating_point() else x_t.long()
        y_t = torch.as_tensor(y)
        y_t = y_t.long() if kind == CLASSIFICATION else y_t.float()
        return Split(x_t.to(device), y_t.to(device))

    if isinstance(model, str):
        model = _named_model(model, parts, kind, n_classes)
    result = Task(
        kind, tensors("train"), tensors("val"), tensors("test"), model, n_classes, device,
        metric=resolve_metric(metric, kind), baseline_loss=_baseline_loss(baseline, kind),
    )
    _check_metric(result.scoring, parts["val"][1], parts["train"][1], kind)
    _check_model(result, model)
    return result


def _baseline_loss(spec: BaselineSpec, kind: str) -> LearnedLoss | None:
    """The user's baseline as a loss of ``kind``; None for the default."""
    if spec is None:
        return None
    if isinstance(spec, os.PathLike) or (
            isinstance(spec, str) and (spec.endswith(".json") or os.path.isfile(spec))):
        loaded = load(spec)
        if not isinstance(loaded, LearnedLoss):
            raise ValueError(
                f"baseline {os.fspath(spec)!r} holds a {type(loaded).__name__}, not a symbolic "
                "loss; give expression text or a saved symloss loss"
            )
        spec = loaded
    if isinstance(spec, LearnedLoss):
        if spec.task != kind:
            raise ValueError(
                f"the baseline is a {spec.task} loss but this is a {kind} task"
            )
        return spec
    if isinstance(spec, str | Expression):
        try:
            return LearnedLoss(spec, kind)
        except ValueError as error:
            raise ValueError(f"baseline {str(spec)!r} is not a loss expression: {error}") from None
    raise ValueError(
        f"baseline must be expression text, an Expression, a LearnedLoss or the path of a "
        f"saved loss, got {type(spec).__name__}"
    )


def _check_metric(metric: Metric, val_y: np.ndarray, train_y: np.ndarray, kind: str) -> None:
    """Call the metric before any training, on the validation targets against
    themselves and against a constant prediction (the training mode or mean), so a
    metric that raises, returns NaN or returns a non-number fails now, naming it."""
    if kind == CLASSIFICATION:
        labels = val_y.reshape(-1).astype(np.int64)
        constant = np.full_like(labels, np.bincount(train_y.reshape(-1).astype(np.int64)).argmax())
        y_true = labels
    else:
        y_true = val_y.astype(np.float64)
        constant = np.full_like(y_true, float(train_y.mean()))
    metric(y_true, y_true.copy())
    metric(y_true, constant)


def _named_model(
    name: str, parts: dict[str, tuple[np.ndarray, np.ndarray]], kind: str, n_classes: int | None
) -> Callable[[], nn.Module]:
    """A built-in model sized to the data: input shape, outputs, vocabulary of tokens."""
    from symloss.models import build_model

    x, y = parts["train"]
    if kind == CLASSIFICATION:
        n_outputs = int(n_classes or 0)
    else:
        n_outputs = int(np.prod(y.shape[1:])) if y.ndim > 1 else 1
    vocab = None
    if x.dtype.kind in "iu":
        vocab = int(max(int(p[0].max()) for p in parts.values())) + 1
    return build_model(name, tuple(x.shape[1:]), n_outputs, vocab_size=vocab)


def _check_model(task: Task, model: ModelSpec) -> None:
    """Fail early, with a clear message, when the model cannot serve the task."""
    if not isinstance(model, nn.Module) and not callable(model):
        raise ValueError(
            f"model must be an nn.Module or a zero-argument callable returning one, got "
            f"{type(model).__name__}"
        )
    if isinstance(model, nn.Module):
        covered = {
            id(p)
            for m in model.modules()
            if callable(getattr(m, "reset_parameters", None))
            for p in m.parameters(recurse=False)
        }
        uncovered = [n for n, p in model.named_parameters() if id(p) not in covered]
        if uncovered:
            raise ValueError(
                f"model parameters {uncovered[:3]} belong to no submodule with "
                "reset_parameters(), so symloss cannot re-initialise the model between runs; "
                "pass a zero-argument callable that builds a fresh model instead"
            )
    built = task.new_model(0)
    x, y = task.train.head(2)
    try:
        out = task.outputs(built, x)
    except Exception as error:
        hint = ("; integer inputs are kept as int64 token ids (for embedding models such as "
                "'gru'): for numeric features, cast X to float, e.g. X.astype('float32')"
                if not x.is_floating_point() else "")
        raise ValueError(
            f"the model failed on a batch of inputs of shape {tuple(x.shape)} "
            f"(dtype {x.dtype}): {error}{hint}"
        ) from error
    if task.kind == CLASSIFICATION:
        c = task.n_classes
        ok = out.dim() == 2 and (out.shape[1] == c or (c == 2 and out.shape[1] == 1))
        if not ok:
            width = out.shape[1] if out.dim() == 2 else f"shape {tuple(out.shape)}"
            smallest = int(min(int(split.y.min()) for split in (task.train, task.val, task.test)))
            hint = (
                f" (the smallest label is {smallest}: labels must be 0..C-1, so subtract "
                f"{smallest} if your classes are numbered from {smallest})" if smallest > 0 else ""
            )
            raise ValueError(
                f"model output has {width} columns but the dataset has {c} classes{hint}; "
                f"make the last layer output {c} logits"
                + (" (or 1 logit for binary classification)" if c == 2 else "")
            )
        task.single_output = out.shape[1] == 1
    else:
        per_example = int(np.prod(y.shape[1:])) if y.dim() > 1 else 1
        got = int(np.prod(out.shape[1:])) if out.dim() > 1 else 1
        if out.dim() == 0 or out.shape[0] != x.shape[0] or got != per_example:
            raise ValueError(
                f"model output has shape {tuple(out.shape)} for a batch of 2 but the targets "
                f"have {per_example} value(s) per example; make the model output "
                f"[batch, {per_example}]"
            )
    _check_trainable(task, built)


def _check_trainable(task: Task, model: nn.Module) -> None:
    """One training step's forward and backward on a batch of the training split, so
    that a model no loss can train fails here, in words about the model, rather than
    in every candidate of a search."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(
            "the model has no trainable parameters (none, or all with requires_grad=False); "
            "a loss is learned by training the model, so it needs parameters to train"
        )
    x, y = task.train.head(4)
    # the global RNG (dropout) is left as it was: the search's runs must not depend on it
    with torch.random.fork_rng(devices=[] if task.device.type == "cpu" else None):
        try:
            out = model.train()(x)
            loss = task.base_loss(out, y)
        except Exception as error:
            raise ValueError(
                f"the model failed in training mode (model.train()) on a batch of inputs of "
                f"shape {tuple(x.shape)}: {type(error).__name__}: {error}"
            ) from error
        if not loss.requires_grad:
            raise ValueError(
                "the model's output does not depend on its parameters through autograd "
                "(detached, computed under torch.no_grad(), or through NumPy), so no loss "
                "can train it; return the output of torch operations on the parameters"
            )
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    if all(g is None for g in grads):
        raise ValueError(
            "no parameter of the model receives a gradient from its output; return the "
            "output of torch operations on the parameters"
        )


def task_summary(task: Task, dataset: Any, model: ModelSpec) -> dict[str, Any]:
    """What a report says about a search's data and model: where the data came from,
    split sizes, input shape, the targets' distribution, the model and its size."""
    from symloss.datasets import DATASETS

    name = dataset if isinstance(dataset, str) else getattr(dataset, "name", None)
    description = getattr(dataset, "description", None)
    if description is None and isinstance(dataset, str):
        description = DATASETS.get(dataset)
    network = task.new_model(0)
    targets = task.train.y.detach().cpu()
    summary: dict[str, Any] = {
        "format": "symloss.task", "version": 1, "kind": task.kind,
        "dataset": name, "description": description, "splits": task.describe(),
        "sizes": {"train": len(task.train), "val": len(task.val), "test": len(task.test)},
        "input_shape": list(task.train.x.shape[1:]), "input_dtype": str(task.train.x.dtype),
        "n_classes": task.n_classes, "single_output": task.single_output,
        "model": model if isinstance(model, str) else type(network).__name__,
        "model_parameters": sum(p.numel() for p in network.parameters()),
        "metric": task.kind_metric, "baseline": str(task.baseline),
        "metric_name": task.scoring.name, "meta_objective": task.meta_objective_name,
        "baseline_name": task.baseline_name,
    }
    if task.kind == CLASSIFICATION:
        counts = torch.bincount(targets.reshape(-1).long(), minlength=task.n_classes or 0)
        summary["class_counts"] = counts.tolist()
    else:
        values = targets.double().reshape(-1)
        quantiles = torch.quantile(values, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
        summary["targets"] = {
            "outputs": int(targets.reshape(len(task.train), -1).shape[1]),
            "mean": float(values.mean()), "std": float(values.std()),
            "min": float(values.min()), "max": float(values.max()),
            "quantiles": {"10%": float(quantiles[0]), "50%": float(quantiles[1]),
                          "90%": float(quantiles[2])},
        }
    return summary
