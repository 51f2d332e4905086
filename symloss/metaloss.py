"""The meta-loss network: an expression as an elementwise torch module, with the output
transform and reduction every loss of a task shares.

:class:`MetaLossNetwork` compiles an :class:`~symloss.expression.Expression` into an
elementwise torch module with one trainable scalar on every edge: each non-root node's
output is multiplied by its weight before its parent uses it. With all weights equal
to 1 it computes the symbolic expression exactly; the local search tunes the weights.
:func:`prepare_outputs` and :func:`reduce_loss` are docs/design.md's "Search space":
softmax (or sigmoid) and one-hot labels in, summed over outputs and averaged over the
batch out. What users keep is :class:`symloss.network.LearnedLoss`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from symloss.expression import Expression
from symloss.kinds import CLASSIFICATION
from symloss.primitives import CLASS_PRIOR, PRIMITIVES


def checked_prior(class_prior: Sequence[float] | None) -> tuple[float, ...] | None:
    """``class_prior`` as a tuple of floats in [0, 1] (None stays None).

    Raises
    ------
    ValueError
        If it is empty or holds anything but numbers from 0 to 1.
    """
    if class_prior is None:
        return None
    values = tuple(class_prior)
    if not values or not all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and 0.0 <= v <= 1.0
        for v in values
    ):
        raise ValueError(
            f"class_prior must be one frequency from 0 to 1 per class, got {list(values)!r}"
        )
    return tuple(float(v) for v in values)


def prior_values(
    class_prior: Sequence[float] | None, f: torch.Tensor, expression: Expression
) -> torch.Tensor:
    """The values of ``p`` in ``expression`` for predictions ``f`` (``[batch, classes]``,
    or ``[runs, batch, classes]`` stacked by :mod:`symloss.batched`): ``class_prior`` as a
    tensor of ``f``'s dtype and device, one value per column (the last dimension).

    Raises
    ------
    ValueError
        If there is no class prior, or its length is not the number of columns of ``f``.
    """
    if class_prior is None:
        raise ValueError(
            f"the loss {expression} uses the class prior p but has none; build it with "
            "class_prior= (the training frequency of each class)"
        )
    if f.dim() < 2 or f.shape[-1] != len(class_prior):
        raise ValueError(
            f"the loss {expression} has a class prior of {len(class_prior)} value(s) but the "
            f"predictions have shape {tuple(f.shape)}; it needs one value per class column"
        )
    return torch.tensor(class_prior, dtype=f.dtype, device=f.device)


class MetaLossNetwork(nn.Module):
    """An expression tree as an elementwise torch module with a weight on every edge.

    Parameters
    ----------
    expression : Expression or str
        The loss expression.
    weights : sequence of float, optional
        One weight per edge (``expression.size - 1`` values, in post-order of the
        child nodes). Defaults to all ones: the symbolic expression itself.
    class_prior : sequence of float, optional
        The value of the terminal ``p`` for each column of ``f`` (its class's training
        frequency); needed only by an expression that holds ``p``, and kept only there.

    Attributes
    ----------
    class_prior : tuple of float or None
        The values ``p`` takes (None when the expression has no ``p``).
    weights : torch.nn.Parameter
        The edge weights, shape ``[n_edges]``, float64 so that saved values are exact;
        0-dim weights do not change the dtype of the values they scale.
    """

    def __init__(
        self,
        expression: Expression | str,
        weights: Sequence[float] | torch.Tensor | None = None,
        class_prior: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.expression = Expression.parse(expression)
        # read on every forward call; Expression.variables walks the tree each time
        self._uses_prior = self.expression.uses_class_prior
        self.class_prior = checked_prior(class_prior) if self._uses_prior else None
        self._prior_tensors: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}
        self._program = self.expression.program()
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
        self,
        f: torch.Tensor,
        y: torch.Tensor,
        weights: torch.Tensor | None = None,
        prior: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Elementwise loss values for predictions ``f`` and targets ``y``.

        ``weights`` overrides the module's own (for functional use by the local search).
        ``p`` is the class prior, one value per column of ``f`` (``[batch, classes]``);
        ``prior`` overrides it with any tensor that broadcasts against ``f`` (a plot's
        single class).

        Raises
        ------
        ValueError
            If the expression holds ``p`` but no class prior is known, or the prior's
            length is not the number of columns of ``f``.
        """
        if prior is None and self._uses_prior:
            prior = self._prior_tensor(f)
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
            elif op == CLASS_PRIOR:
                v = prior
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

    def _prior_tensor(self, f: torch.Tensor) -> torch.Tensor:
        """:func:`prior_values` for ``f``, cached per dtype and device."""
        key = (f.dtype, f.device)
        if key not in self._prior_tensors or self._prior_tensors[key].shape[0] != f.shape[-1]:
            self._prior_tensors[key] = prior_values(self.class_prior, f, self.expression)
        return self._prior_tensors[key]

    def _frozen_scales(self) -> list[float | None]:
        """Edge weights as Python floats, ``None`` for exactly 1 (skipped), cached until
        the weights change. Saves a tensor op per edge when the weights are not trained."""
        version = (self.weights._version, self.weights.data_ptr())
        if self._scales_version != version:
            self._scales = [None if w == 1.0 else w for w in self.weights.detach().tolist()]
            self._scales_version = version
        return self._scales


def prepare_outputs(
    y_pred: torch.Tensor, y_true: torch.Tensor, task: str, *, long_softmax: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn model outputs and targets into the loss tree's ``(f, y)``.

    Classification: ``f = softmax(logits)`` (sigmoid for one output column) and
    ``y = one_hot(labels)``; probability or one-hot targets ``[B, C]`` are used as
    they are. Regression: predictions and targets as ``[B, k]`` float tensors (``[B]``
    becomes ``[B, 1]``; further dimensions are flattened into ``k``).
    :func:`reduce_loss` sums the tree's values over ``k`` and averages over the batch.

    With ``long_softmax``, on the CPU the softmax runs along the first dimension of the
    transposed logits: PyTorch's CPU softmax along a short last dimension (10 classes)
    measured about 6x slower, forward and backward, than along a long first one, which
    matters for the many rows of stacked runs (:mod:`symloss.batched`). It rounds
    differently from ``torch.softmax(y_pred, dim=1)``, so it is for callers that are not
    bound to match one model's training bit for bit.

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
    if task == CLASSIFICATION:
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
            f = (torch.softmax(y_pred.t(), dim=0).t()
                 if long_softmax and y_pred.device.type == "cpu"
                 else torch.softmax(y_pred, dim=1))
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
    """The scalar loss of elementwise values ``[batch, k]``: sum over ``k``, mean over the batch.

    ``k`` is the classes (classification) or the output values (regression), as the
    EvoMAL reference reduces: a ``k``-output regression loss is ``k`` times the mean over
    all values, so each output keeps the gradient it would have alone.

    Raises
    ------
    ValueError
        If ``elementwise`` is not 2-d (use :func:`prepare_outputs` to get ``[batch, k]``).
    """
    if elementwise.dim() != 2:
        what = "classes" if task == CLASSIFICATION else "outputs"
        raise ValueError(
            f"elementwise loss values must have shape [batch, {what}], got "
            f"{tuple(elementwise.shape)}; prepare_outputs gives the (f, y) of that shape"
        )
    return elementwise.sum(dim=1).mean()
