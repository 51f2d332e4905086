"""A loss's value and its gradient with respect to the model outputs, in numpy, no autograd.

The loss tree is elementwise in ``(y, f)``, so its derivative with respect to the
predictions ``f`` is elementwise too: each node is evaluated as a pair (value,
derivative in ``f``) with the rules of the primitive table (``Primitive.dual``), in one
forward pass. The nodes that do not involve ``f`` (the targets, constants and their
subtrees) are evaluated once, when the tree is compiled. :class:`DualLoss` adds
:class:`~symloss.network.LearnedLoss`'s output transform and reduction.

This is for loops of many steps on a hundred values (the poor-training check), where
autograd's per-operation overhead, not the arithmetic, is the cost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from symloss.expression import Expression
from symloss.kinds import REGRESSION, check_task_kind
from symloss.metaloss import checked_prior, prepare_outputs, prior_values
from symloss.primitives import CLASS_PRIOR, PRIMITIVES, Derivative, Dual, Value


class DualTree:
    """A loss tree compiled for fixed targets: ``tree(f)`` is ``(value, d value / d f)``.

    Parameters
    ----------
    expression : Expression or str
        The loss tree.
    y : numpy.ndarray
        The targets, the shape (and float dtype) of every ``f`` to come.
    prior : numpy.ndarray, optional
        The values of the class-prior terminal ``p``, broadcasting against ``y`` (needed
        only by a tree that holds ``p``). Like ``y``, a constant of the tree.

    Raises
    ------
    ValueError
        If the tree holds ``p`` and no ``prior`` is given.
    """

    def __init__(
        self, expression: Expression | str, y: np.ndarray, prior: np.ndarray | None = None
    ) -> None:
        expression = Expression.parse(expression)
        if expression.uses_class_prior and prior is None:
            raise ValueError(f"the loss {expression} uses the class prior p but has none")
        program = expression.program()
        self._ones = np.ones_like(y)  # d f / d f
        self._values: list[Value] = []
        self._derivatives: list[Derivative] = [None] * len(program)
        self._leaves: list[int] = []  # positions of f
        # the nodes involving f, in order: (position, rule, children)
        self._steps: list[tuple[int, Callable[..., Dual], tuple[int, ...]]] = []
        depends = [False] * len(program)  # on f
        folded = [False] * len(program)  # a constant subtree, not a literal
        with np.errstate(all="ignore"):
            for i, (op, children, constant) in enumerate(program):
                value: Value = constant
                if op == "f":
                    self._leaves.append(i)
                    depends[i] = True
                elif op == "y":
                    value = y
                elif op == CLASS_PRIOR:
                    value = prior
                elif op != "const":
                    depends[i] = any(depends[c] for c in children)
                    constant_only = all(program[c][0] == "const" or folded[c] for c in children)
                    for c in children:
                        if folded[c] and not constant_only:
                            # torch holds a constant subtree as a 0-dim tensor (computed in
                            # float64, cast to f's dtype where it meets f or y): not a float
                            # literal, so min/max split ties with it as torch.minimum does
                            self._values[c] = np.asarray(self._values[c], dtype=y.dtype)
                    if depends[i]:
                        self._steps.append((i, PRIMITIVES[op].dual, children))
                    elif constant_only:
                        # in float64, as torch's float64 0-dim tensors
                        args = [np.float64(self._values[c]) for c in children]
                        value = PRIMITIVES[op].dual(*_interleave(args))[0]
                        folded[i] = True
                    else:
                        args = [self._values[c] for c in children]
                        value = PRIMITIVES[op].dual(*_interleave(args))[0]
                self._values.append(value)
            if not depends[-1]:  # torch expands a tree without f to f's shape and dtype
                self._values[-1] = np.full_like(y, self._values[-1])

    def __call__(self, f: np.ndarray) -> tuple[np.ndarray, Derivative]:
        """The tree's values at ``f`` and their derivatives in ``f`` (``None``: zero).

        Call under ``np.errstate(all="ignore")``: the protected forms compute, and
        discard, divisions by zero.
        """
        values, derivatives = self._values, self._derivatives
        for i in self._leaves:
            values[i], derivatives[i] = f, self._ones
        for i, rule, children in self._steps:
            if len(children) == 1:
                (a,) = children
                values[i], derivatives[i] = rule(values[a], derivatives[a])
            else:
                a, b = children
                values[i], derivatives[i] = rule(
                    values[a], derivatives[a], values[b], derivatives[b]
                )
        return values[-1], derivatives[-1]


def _interleave(values: list[Value]) -> list[Value | None]:
    """``dual``'s arguments for operands without derivatives: ``a, None, b, None``."""
    return [x for v in values for x in (v, None)]


class DualLoss:
    """``LearnedLoss(expression, kind)`` on numpy outputs, for fixed targets: its value and
    its gradient with respect to the outputs.

    The outputs are held as a ``[k, batch]`` array (:meth:`from_outputs`,
    :meth:`to_outputs`): the tree is elementwise, and the softmax's reductions over the
    classes then run along the first axis, several times faster in numpy than along the
    last on a hundred short rows.

    Parameters
    ----------
    expression : Expression or str
        The loss tree.
    kind : {"classification", "regression"}
        As for :class:`~symloss.network.LearnedLoss`.
    outputs, targets : torch.Tensor
        Model outputs (their shape and dtype; float64 stays float64, any other float
        becomes float32) and the targets.
    class_prior : sequence of float, optional
        The values of ``p`` per class column, as for
        :class:`~symloss.network.LearnedLoss` (used only by a tree that holds ``p``).

    Raises
    ------
    ValueError
        If ``kind`` is unknown, or the shapes of outputs and targets do not fit together
        (see :func:`~symloss.metaloss.prepare_outputs`).
    """

    def __init__(
        self, expression: Expression | str, kind: str, outputs: torch.Tensor,
        targets: torch.Tensor,
        class_prior: Sequence[float] | None = None,
    ) -> None:
        kind = check_task_kind(kind)
        dtype = torch.float64 if outputs.dtype == torch.float64 else torch.float32
        outputs = outputs.detach().cpu().to(dtype)
        _, y = prepare_outputs(outputs, targets.detach().cpu(), kind)
        self._dtype = y.numpy().dtype
        self._shape = outputs.shape
        self._batch = y.shape[0]
        self._transform = "identity" if kind == REGRESSION else (
            "sigmoid" if y.shape[1] == 1 else "softmax"
        )
        expression = Expression.parse(expression)
        prior = None
        if expression.uses_class_prior:
            # the network's checks and errors: the prior is one value per class column
            prior = prior_values(checked_prior(class_prior), y, expression).numpy()
            prior = prior.reshape(-1, 1)
        self._tree = DualTree(expression, y.numpy().T.copy(), prior)

    def from_outputs(self, outputs: torch.Tensor) -> np.ndarray:
        """Model outputs as a new ``[k, batch]`` array."""
        values = outputs.detach().cpu().reshape(self._batch, -1).numpy()
        return np.array(values.T, dtype=self._dtype, order="C")

    def to_outputs(self, z: np.ndarray) -> torch.Tensor:
        """A ``[k, batch]`` array as model outputs (a new CPU tensor)."""
        return torch.from_numpy(z.T.copy()).reshape(self._shape)

    def __call__(self, z: np.ndarray) -> tuple[float, np.ndarray]:
        """The loss at outputs ``z`` (``[k, batch]``) and its gradient with respect to ``z``.

        Call under ``np.errstate(all="ignore")``; a non-finite loss is returned as it is.
        """
        if self._transform == "softmax":
            e = np.exp(z - z.max(axis=0))
            f = e / e.sum(axis=0)
        elif self._transform == "sigmoid":
            f = 1.0 / (1.0 + np.exp(-z))
        else:
            f = z
        values, derivative = self._tree(f)
        # sum over the k outputs, mean over the batch: each value weighs 1 / batch
        value = float(np.add.reduce(values, axis=None)) / self._batch
        if derivative is None:
            return value, np.zeros_like(z)
        g = derivative / self._batch
        if self._transform == "softmax":
            return value, f * (g - (g * f).sum(axis=0))
        if self._transform == "sigmoid":
            return value, g * (1.0 - f) * f
        return value, g
