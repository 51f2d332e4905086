"""Expressions as torch modules: the meta-loss network and the loss users keep.

:class:`MetaLossNetwork` compiles an :class:`~symloss.expression.Expression` into an
elementwise torch module with one trainable scalar on every edge: each non-root node's
output is multiplied by its weight before its parent uses it. With all weights equal
to 1 it computes the symbolic expression exactly; the local search tunes the weights.

:class:`LearnedLoss` wraps a network with the output transform of DESIGN.md and is what
users put in their own training loops: ``loss(y_pred, y_true)`` returns a scalar.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import sympy
import torch
from torch import nn

from symloss.expression import Expression, readable, round_floats
from symloss.library import check_task_kind
from symloss.primitives import PRIMITIVES, VARIABLES
from symloss.serialization import check_header, read_json, write_json

FORMAT_NAME = "symloss.loss"
FORMAT_VERSION = 1


def _postorder(expression: Expression) -> list[tuple[str, tuple[int, ...], float]]:
    """Flatten a tree into instructions ``(op, child positions, constant)``, root last."""
    program: list[tuple[str, tuple[int, ...], float]] = []

    def visit(e: Expression) -> int:
        children = tuple(visit(a) for a in e.args)
        program.append((e.op, children, e.value))
        return len(program) - 1

    visit(expression)
    return program


class MetaLossNetwork(nn.Module):
    """An expression tree as an elementwise torch module with a weight on every edge.

    Parameters
    ----------
    expression : Expression or str
        The loss expression.
    weights : sequence of float, optional
        One weight per edge (``expression.size - 1`` values, in post-order of the
        child nodes). Defaults to all ones: the symbolic expression itself.

    Attributes
    ----------
    weights : torch.nn.Parameter
        The edge weights, shape ``[n_edges]``, float64 so that saved values are exact;
        0-dim weights do not change the dtype of the values they scale.
    """

    def __init__(
        self, expression: Expression | str, weights: Sequence[float] | torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.expression = Expression.parse(expression)
        self._program = _postorder(self.expression)
        n_edges = len(self._program) - 1
        if weights is None:
            tensor = torch.ones(n_edges, dtype=torch.float64)
        else:
            tensor = torch.as_tensor(weights, dtype=torch.float64).detach().clone().reshape(-1)
            if tensor.numel() != n_edges:
                raise ValueError(
                    f"expression {self.expression} has {n_edges} edges but "
                    f"{tensor.numel()} weights were given"
                )
        self.weights = nn.Parameter(tensor)
        self._scales: list[float | None] = []
        self._scales_version: tuple[int, int] | None = None

    @property
    def n_edges(self) -> int:
        """Number of edge weights."""
        return len(self._program) - 1

    def forward(
        self, f: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Elementwise loss values for predictions ``f`` and targets ``y``.

        ``weights`` overrides the module's own (for functional use by the local search).
        """
        if weights is None and not self.weights.requires_grad:
            scales: Sequence[Any] = self._frozen_scales()
        else:
            scales = (self.weights if weights is None else weights).unbind()
        values: list[Any] = []
        root = len(self._program) - 1
        for i, (op, children, constant) in enumerate(self._program):
            if op == "f":
                v: Any = f
            elif op == "y":
                v = y
            elif op == "const":
                v = constant
            else:
                args = [values[c] for c in children]
                if not any(isinstance(a, torch.Tensor) for a in args):
                    args = [torch.tensor(a, dtype=torch.float64) for a in args]
                v = PRIMITIVES[op].torch(*args)
            scale = scales[i] if i != root else None
            values.append(v if scale is None else v * scale)
        out = values[root]
        if not isinstance(out, torch.Tensor) or out.shape != f.shape:
            out = torch.as_tensor(out, dtype=f.dtype, device=f.device).expand_as(f)
        return out

    def _frozen_scales(self) -> list[float | None]:
        """Edge weights as Python floats, ``None`` for exactly 1 (skipped), cached until
        the weights change. Saves a tensor op per edge when the weights are not trained."""
        version = (self.weights._version, self.weights.data_ptr())
        if self._scales_version != version:
            self._scales = [None if w == 1.0 else w for w in self.weights.detach().tolist()]
            self._scales_version = version
        return self._scales


def prepare_outputs(
    y_pred: torch.Tensor, y_true: torch.Tensor, task: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn model outputs and targets into the loss tree's ``(f, y)``.

    Classification: ``f = softmax(logits)`` (sigmoid for one output column) and
    ``y = one_hot(labels)``; probability or one-hot targets ``[B, C]`` are used as
    they are. Regression: predictions and targets as ``[B, k]`` float tensors.

    Raises
    ------
    ValueError
        If the shapes of predictions and targets do not fit together.
    """
    if y_pred.dim() == 0 or y_true.dim() == 0 or y_pred.shape[0] != y_true.shape[0]:
        raise ValueError(
            f"predictions have shape {tuple(y_pred.shape)} and targets have shape "
            f"{tuple(y_true.shape)}; both need the batch as their first dimension"
        )
    batch = y_pred.shape[0]
    if task == "classification":
        if y_pred.dim() != 2:
            raise ValueError(
                f"classification predictions must be logits of shape [batch, classes], got "
                f"shape {tuple(y_pred.shape)} (targets {tuple(y_true.shape)})"
            )
        n_classes = y_pred.shape[1]
        if n_classes == 1:
            f = torch.sigmoid(y_pred)
            if y_true.dim() == 1 or (y_true.dim() == 2 and y_true.shape[1] == 1):
                return f, y_true.reshape(batch, 1).to(f.dtype)
        else:
            f = torch.softmax(y_pred, dim=1)
            if y_true.dim() == 1 and not torch.is_floating_point(y_true):
                # scatter builds the float one-hot directly (F.one_hot makes an integer
                # tensor, scans the labels for their maximum and needs a cast)
                return f, torch.zeros_like(f).scatter_(1, y_true.long().unsqueeze(1), 1.0)
            if y_true.shape == y_pred.shape:
                return f, y_true.to(f.dtype)
        raise ValueError(
            f"predictions have shape {tuple(y_pred.shape)} and targets have shape "
            f"{tuple(y_true.shape)}; targets must be integer labels [batch] or one-hot / "
            f"probability targets of the predictions' shape"
        )
    f = y_pred.reshape(batch, -1)
    y = y_true.reshape(batch, -1).to(f.dtype)
    if f.shape != y.shape:
        raise ValueError(
            f"regression predictions have shape {tuple(y_pred.shape)} but targets have shape "
            f"{tuple(y_true.shape)}; they need the same number of values per example"
        )
    return f, y


def reduce_loss(elementwise: torch.Tensor, task: str) -> torch.Tensor:
    """Sum over classes then mean over the batch (classification); mean (regression)."""
    if task == "classification":
        return elementwise.sum(dim=1).mean()
    return elementwise.mean()


class LearnedLoss(nn.Module):
    """A (learned) symbolic loss, usable as ``loss(y_pred, y_true)`` in any training loop.

    Parameters
    ----------
    expression : Expression or str
        The loss expression in ``y`` (target) and ``f`` (prediction).
    task : {"classification", "regression"}
        Classification losses take logits ``[B, C]`` and integer labels ``[B]`` (or
        one-hot / probability targets ``[B, C]``); the tree is applied to softmax
        outputs (sigmoid when ``C == 1``) and one-hot targets, summed over classes and
        averaged over the batch. Regression losses take ``[B]``, ``[B, 1]`` or ``[B, k]``
        predictions and targets and average over all values.
    weights : sequence of float, optional
        Edge weights learned by the local search; all ones by default.
    metadata : mapping, optional
        Free-form JSON-serialisable information saved with the loss.

    Examples
    --------
    >>> import torch
    >>> loss = LearnedLoss("-(y * log(f))", task="classification")
    >>> logits, labels = torch.randn(8, 3), torch.randint(0, 3, (8,))
    >>> bool(torch.isclose(loss(logits, labels),
    ...                    torch.nn.functional.cross_entropy(logits, labels), atol=1e-5))
    True

    See Also
    --------
    symloss.load : restore a saved loss.
    """

    def __init__(
        self,
        expression: Expression | str,
        task: str = "classification",
        weights: Sequence[float] | torch.Tensor | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.task = check_task_kind(task)
        self.network = MetaLossNetwork(expression, weights)
        self.network.weights.requires_grad_(False)
        self.metadata = dict(metadata or {})

    @property
    def expression(self) -> Expression:
        """The symbolic expression (without weights)."""
        return self.network.expression

    @property
    def weights(self) -> list[float]:
        """The edge weights as a list of floats."""
        return [float(w) for w in self.network.weights.detach().cpu()]

    def forward(
        self, y_pred: torch.Tensor, y_true: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The scalar loss of a batch."""
        f, y = prepare_outputs(y_pred, y_true, self.task)
        return reduce_loss(self.network(f, y, weights), self.task)

    def sympy(self, digits: int = 3) -> sympy.Expr:
        """The SymPy form with learned weights folded in, rounded to ``digits``."""
        if all(abs(w - 1.0) < 0.5 * 10**-digits for w in self.weights):
            return readable(self.expression.sympy())
        weights = self.weights
        program = _postorder(self.expression)
        values: list[sympy.Expr] = []
        for i, (op, children, constant) in enumerate(program):
            if op in VARIABLES:
                v = Expression.var(op).sympy()
            elif op == "const":
                v = Expression.const(constant).sympy()
            else:
                v = PRIMITIVES[op].sympy(*(values[c] for c in children))
            if i < len(weights) and round(weights[i], digits) != 1.0:
                v = v * sympy.Float(round(weights[i], digits))
            values.append(v)
        return round_floats(readable(values[-1]), digits)

    def latex(self, digits: int = 3) -> str:
        """LaTeX of the loss with learned weights folded in (rounded, simplified)."""
        return sympy.latex(self.sympy(digits))

    def extra_repr(self) -> str:
        return f"expression={str(self.expression)!r}, task={self.task!r}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-serialisable form written by :meth:`save`."""
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "expression": str(self.expression),
            "task": self.task,
            "weights": self.weights,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "data") -> LearnedLoss:
        """Rebuild a loss from :meth:`to_dict` output."""
        check_header(data, source, FORMAT_NAME, FORMAT_VERSION, "symloss loss")
        try:
            weights = [float(w) for w in data["weights"]]
            if not all(math.isfinite(w) for w in weights):
                raise ValueError("non-finite weight")
            return cls(data["expression"], data["task"], weights, data.get("metadata") or {})
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{source} is not a valid symloss loss: {error}") from error

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the loss as a small human-readable JSON file (atomically)."""
        return write_json(path, self.to_dict())


LOSS_FORMATS: dict[str, type] = {FORMAT_NAME: LearnedLoss}
"""Saved-loss format name -> class with ``from_dict(data, source)``; :func:`load` dispatches
on it. The baselines (:mod:`symloss.baselines`) register their formats when imported."""


def load(path: str | os.PathLike[str]) -> nn.Module:
    """Load a loss saved by :meth:`LearnedLoss.save` (or a baseline loss's ``save``).

    The file's ``"format"`` picks the class: :class:`LearnedLoss` for ``"symloss.loss"``,
    the baselines' classes for theirs (see :data:`LOSS_FORMATS`).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is corrupt or was written by a newer symloss.
    """
    data = read_json(path, "symloss loss")
    name = data.get("format") if isinstance(data, Mapping) else None
    if isinstance(name, str) and name not in LOSS_FORMATS:
        import symloss.baselines  # noqa: F401  (registers the baselines' formats)
    cls = LOSS_FORMATS.get(name, LearnedLoss) if isinstance(name, str) else LearnedLoss
    return cls.from_dict(data, source=str(path))
