"""Standalone source code of a learned loss, for projects that do not install symloss.

:func:`to_source` writes one self-contained Python function ``loss(y_pred, y_true)`` for
PyTorch, NumPy or JAX that computes what :class:`~symloss.network.LearnedLoss` computes:
the same output transform (softmax, or sigmoid for one output column, and one-hot
labels), the expression with the learned edge weights and the scale folded in, the same
reduction (summed over the classes or the outputs, averaged over the batch) and the same
protected operators (``div(a, b) = a / sqrt(1 + b^2)``, ``log`` and ``sqrt`` of
``max(|a|, 1e-7)``).

The code is generated from the expression tree itself, node by node, not through
SymPy's code printers: SymPy's forms of the protected operators drop the ``1e-7`` floor
(``log(|a|)``), and simplification reorders floating-point operations. Walking the tree
keeps every operation, weight and constant where the meta-loss network has it, so the
torch export reproduces the loss's values and gradients exactly.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from symloss.expression import PREC_ATOM, PREC_PRODUCT, PREC_UNARY, Expression
from symloss.expression import infix as expression_infix
from symloss.primitives import EPS, PRIMITIVES
from symloss.version import __version__

FRAMEWORKS = ("torch", "numpy", "jax")
"""Frameworks :func:`to_source` writes code for."""


class Exportable(Protocol):
    """What :func:`to_source` reads of a loss (a :class:`~symloss.network.LearnedLoss` has
    it): the expression, its edge weights in post-order, the scale, the task kind and the
    class prior (None unless the expression uses ``p``)."""

    @property
    def expression(self) -> Expression: ...
    @property
    def weights(self) -> Sequence[float]: ...
    @property
    def scale(self) -> float: ...
    @property
    def task(self) -> str: ...
    @property
    def class_prior(self) -> Sequence[float] | None: ...

_WIDTH = 88


@dataclass(frozen=True)
class _Framework:
    """How one framework spells the pieces of a loss."""

    imports: tuple[str, ...]
    array: str
    ns: str  # the array namespace: torch, np, jnp
    plog: str
    clamp_min: str  # max(a, constant) where the network clamps
    clamp_max: str
    prepare: dict[str, str]
    full_like: str
    prior: str  # the class prior, a list literal, as an array like f


_AQ = "a / (1.0 + b * b) ** 0.5"

_TORCH = _Framework(
    imports=("import torch",),
    array="torch.Tensor",
    ns="torch",
    plog=f"torch.clamp(torch.abs(a), min={EPS!r})",
    clamp_min="torch.clamp({0}, min={1})",
    clamp_max="torch.clamp({0}, max={1})",
    prepare={
        "classification": """\
    if y_pred.shape[1] == 1:
        f = torch.sigmoid(y_pred)
        y = y_true.reshape(-1, 1).to(f.dtype)
    else:
        f = torch.softmax(y_pred, dim=1)
        if y_true.ndim == 1:
            y = torch.nn.functional.one_hot(y_true.long(), f.shape[1]).to(f.dtype)
        else:
            y = y_true.to(f.dtype)
""",
        "regression": """\
    f = y_pred.reshape(y_pred.shape[0], -1)
    y = y_true.reshape(y_true.shape[0], -1).to(f.dtype)
""",
    },
    full_like="torch.full_like(f, {0})",
    prior="torch.tensor({0}, dtype=f.dtype, device=f.device)",
)

_NUMPY = _Framework(
    imports=("import numpy as np",),
    array="np.ndarray",
    ns="np",
    plog=f"np.maximum(np.abs(a), {EPS!r})",
    clamp_min="np.maximum({0}, {1})",
    clamp_max="np.minimum({0}, {1})",
    prepare={
        "classification": """\
    y_pred, y_true = np.asarray(y_pred), np.asarray(y_true)
    if y_pred.shape[1] == 1:
        f = np.exp(-np.logaddexp(0.0, -y_pred))  # sigmoid without overflow
        y = y_true.reshape(-1, 1).astype(f.dtype)
    else:
        e = np.exp(y_pred - y_pred.max(axis=1, keepdims=True))
        f = e / e.sum(axis=1, keepdims=True)
        if y_true.ndim == 1:
            y = np.eye(f.shape[1], dtype=f.dtype)[y_true]
        else:
            y = y_true.astype(f.dtype)
""",
        "regression": """\
    y_pred, y_true = np.asarray(y_pred), np.asarray(y_true)
    f = y_pred.reshape(y_pred.shape[0], -1)
    y = y_true.reshape(y_true.shape[0], -1).astype(f.dtype)
""",
    },
    full_like="np.full_like(f, {0})",
    prior="np.asarray({0}, dtype=f.dtype)",
)

_JAX = _Framework(
    imports=("import jax", "import jax.numpy as jnp"),
    array="jax.Array",
    ns="jnp",
    plog=f"jnp.maximum(jnp.abs(a), {EPS!r})",
    clamp_min="jnp.maximum({0}, {1})",
    clamp_max="jnp.minimum({0}, {1})",
    prepare={
        "classification": """\
    y_pred, y_true = jnp.asarray(y_pred), jnp.asarray(y_true)
    if y_pred.shape[1] == 1:
        f = jax.nn.sigmoid(y_pred)
        y = y_true.reshape(-1, 1).astype(f.dtype)
    else:
        f = jax.nn.softmax(y_pred, axis=1)
        if y_true.ndim == 1:
            y = jax.nn.one_hot(y_true, f.shape[1], dtype=f.dtype)
        else:
            y = y_true.astype(f.dtype)
""",
        "regression": """\
    y_pred, y_true = jnp.asarray(y_pred), jnp.asarray(y_true)
    f = y_pred.reshape(y_pred.shape[0], -1)
    y = y_true.reshape(y_true.shape[0], -1).astype(f.dtype)
""",
    },
    full_like="jnp.full_like(f, {0})",
    prior="jnp.asarray({0}, dtype=f.dtype)",
)

_FRAMEWORKS = {"torch": _TORCH, "numpy": _NUMPY, "jax": _JAX}

_REDUCTIONS = {
    "torch": "value.sum(dim=1).mean()",
    "numpy": "value.sum(axis=1).mean()",
    "jax": "value.sum(axis=1).mean()",
}
"""The reduction of :func:`symloss.metaloss.reduce_loss` per framework: sum over the
classes or outputs, mean over the batch (the export tests compare against ``LearnedLoss``
on multi-output data, so a change there that is not made here fails them)."""

_INPUTS = {
    "classification": (
        "Takes logits ``[batch, classes]`` and integer labels ``[batch]`` (or one-hot /\n"
        "    probability targets of the logits' shape); ``f = softmax(logits)`` (``sigmoid``\n"
        "    for one column) and ``y = one_hot(labels)``. The expression is applied per class,\n"
        "    summed over classes and averaged over the batch."
    ),
    "regression": (
        "Takes predictions and targets ``[batch]``, ``[batch, 1]`` or ``[batch, k]``; the\n"
        "    expression is applied to each value, summed over the outputs and averaged over\n"
        "    the batch."
    ),
}


def to_source(loss: Exportable, framework: str = "torch") -> str:
    """Source of a self-contained function ``loss(y_pred, y_true)`` computing ``loss``.

    Parameters
    ----------
    loss : Exportable
        The loss to export, e.g. a :class:`~symloss.network.LearnedLoss` (learned weights
        and scale are folded into the code).
    framework : {"torch", "numpy", "jax"}
        The only library the generated code imports.

    Returns
    -------
    str
        Python source defining ``loss(y_pred, y_true)``, which returns the scalar loss of
        a batch as the framework's array type.

    Raises
    ------
    ValueError
        If ``framework`` is not one of :data:`FRAMEWORKS`.

    Examples
    --------
    >>> import torch
    >>> from symloss import LearnedLoss
    >>> learned = LearnedLoss("-(y * log(f))", task="classification")
    >>> namespace = {}
    >>> exec(to_source(learned, "torch"), namespace)
    >>> logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 0])
    >>> bool(namespace["loss"](logits, labels) == learned(logits, labels))
    True
    """
    if framework not in _FRAMEWORKS:
        raise ValueError(
            f"cannot export to {framework!r}; choose one of {', '.join(FRAMEWORKS)}"
        )
    fw = _FRAMEWORKS[framework]
    helpers: dict[str, str] = {}
    body, _, constant = _render(loss.expression, loss.weights, fw, helpers)
    if constant is not None:
        body = fw.full_like.format(repr(constant))
    scale = loss.scale
    reduction = _REDUCTIONS[framework]
    if scale != 1.0:
        reduction = f"{scale!r} * {reduction}"
    lines = [*fw.imports, "", ""]
    lines.append(f"def loss(y_pred: {fw.array}, y_true: {fw.array}) -> {fw.array}:")
    lines.append(f'    """A {loss.task} loss learned by symloss {__version__}; needs only '
                 f'{framework}.')
    lines.append("")
    lines.extend(textwrap.wrap(f"Expression ``{loss.expression}``, learned weights folded in.",
                               _WIDTH, initial_indent="    ", subsequent_indent="    ",
                               break_long_words=False, break_on_hyphens=False))
    lines.append(f"    {_INPUTS[loss.task]}")
    lines.append(f"    Protected operators: div(a, b) = a / sqrt(1 + b^2); log and sqrt act on "
                 f"max(|a|, {EPS!r}).")
    lines.append('    """')
    for name in sorted(helpers):
        lines.append(f"    def {name}({'a, b' if name == 'aq' else 'a'}):")
        lines.append(f"        return {helpers[name]}")
        lines.append("")
    lines.append(fw.prepare[loss.task].rstrip("\n"))
    if loss.class_prior is not None:
        lines.extend(_prior_lines(loss.class_prior, fw))
    lines.extend(_assignment("value", body))
    lines.append(f"    return {reduction}")
    return "\n".join(lines) + "\n"


def _prior_lines(class_prior: Sequence[float], fw: _Framework) -> list[str]:
    """Code that sets ``p``, the training frequency of each class saved with the loss."""
    values = "[" + ", ".join(_literal(v) for v in class_prior) + "]"
    return [
        "    # p: the training frequency of each class (of class 1 for one output column)",
        *_assignment("p", fw.prior.format(values)),
        "    if f.shape[1] != p.shape[0]:",
        f"        raise ValueError(f\"this loss was learned for {len(class_prior)} output "
        "column(s), got {f.shape[1]}\")",
    ]


def _assignment(name: str, code: str) -> list[str]:
    """``name = code`` inside the function, wrapped in parentheses over several lines when
    long: the generated code only has spaces between operands, where a break is valid."""
    line = f"    {name} = {code}"
    if len(line) <= _WIDTH:
        return [line]
    wrapped = textwrap.wrap(code, _WIDTH - 8, break_long_words=False, break_on_hyphens=False)
    return [f"    {name} = (", *(f"        {part}" for part in wrapped), "    )"]


def _fold(op: str, args: Sequence[float]) -> float:
    """A primitive applied to constants, computed as the meta-loss network does (float64
    torch), so the folded literal is the network's value."""
    values = [torch.tensor(a, dtype=torch.float64) for a in args]
    return float(PRIMITIVES[op].torch(*values))


def _render(
    expression: Expression, weights: Sequence[float], fw: _Framework, helpers: dict[str, str]
) -> tuple[str, int, float | None]:
    """Code of ``expression`` with the edge weights applied, its precedence, and its value
    when it is constant (folded at export time, as the network computes constants once).

    Nodes are rendered in the order of ``weights``
    (:meth:`~symloss.expression.Expression.program`), each from its children's code.
    """
    program = expression.program()
    rendered: list[tuple[str, int, float | None]] = []
    for position, (op, children, constant) in enumerate(program):
        weight = None if position == len(program) - 1 else weights[position]
        rendered.append(_node(op, constant, [rendered[c] for c in children], weight, fw,
                              helpers))
    return rendered[-1]


def _node(
    op: str,
    constant: float,
    children: list[tuple[str, int, float | None]],
    weight: float | None,
    fw: _Framework,
    helpers: dict[str, str],
) -> tuple[str, int, float | None]:
    """One node of :func:`_render` (its primitive or leaf ``op`` and ``constant``), its
    rendered ``children`` given."""
    weight = None if weight == 1.0 else weight
    if op == "const" or (children and all(c[2] is not None for c in children)):
        value = constant if op == "const" else _fold(op, [c[2] for c in children])
        value = value if weight is None else value * weight
        return _literal(value), (PREC_UNARY if value < 0 else PREC_ATOM), value
    if op in ("y", "f", "p"):
        code, precedence = op, PREC_ATOM
    else:
        code, precedence = _call(op, [(c[0], c[1]) for c in children], children, fw, helpers)
    if weight is None:
        return code, precedence, None
    inner = code if precedence > PREC_PRODUCT else f"({code})"
    return f"{_literal(weight)} * {inner}", PREC_PRODUCT, None


def _call(
    op: str,
    args: list[tuple[str, int]],
    children: list[tuple[str, int, float | None]],
    fw: _Framework,
    helpers: dict[str, str],
) -> tuple[str, int]:
    """Code of primitive ``op`` applied to rendered arguments."""
    infix = PRIMITIVES[op].infix
    if infix:
        return expression_infix(infix, args[0], args[1], f"{{}} {infix} {{}}",
                                lambda text: f"({text})")
    plain = [code for code, _ in args]
    if op in ("min", "max"):
        constant = [c[2] is not None for c in children]
        template = fw.clamp_max if op == "min" else fw.clamp_min
        if fw is _TORCH and any(constant):  # torch.minimum takes no Python number
            tensor, number = (plain[1], plain[0]) if constant[0] else (plain[0], plain[1])
            return template.format(tensor, number), PREC_ATOM
        name = "minimum" if op == "min" else "maximum"
        return f"{fw.ns}.{name}({plain[0]}, {plain[1]})", PREC_ATOM
    if op == "div":
        helpers["aq"] = _AQ
        return f"aq({plain[0]}, {plain[1]})", PREC_ATOM
    if op in ("log", "sqrt"):
        name = "plog" if op == "log" else "psqrt"
        helpers[name] = f"{fw.ns}.{op}({fw.plog})"
        return f"{name}({plain[0]})", PREC_ATOM
    return f"{fw.ns}.{op}({plain[0]})", PREC_ATOM


def _literal(value: float) -> str:
    """A float literal that reads back to exactly ``value``."""
    if not math.isfinite(value):
        return f"float({str(value)!r})"
    return repr(float(value))
