"""The search space: the function set and terminals, one row per primitive.

This table is the single source of truth for every representation of a primitive:
parsing and printing (:mod:`symloss.expression`), torch evaluation
(:mod:`symloss.network`), numpy evaluation with the derivative in the predictions
(:mod:`symloss.dual`), SymPy and LaTeX rendering, and the Julia operators of the
PySR engine and the node names of the Operon engine. Adding a primitive is adding one
row.

The protected forms follow the EvoMAL reference: ``div`` is the analytic quotient
``a / sqrt(1 + b^2)``, ``log`` and ``sqrt`` act on ``max(|a|, 1e-7)``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import sympy
import torch

EPS = 1e-7
"""Floor applied to ``|a|`` by the protected ``log`` and ``sqrt``."""

TARGET = "y"
PREDICTION = "f"
VARIABLES = (TARGET, PREDICTION)
"""The variables every loss tree contains."""
CLASS_PRIOR = "p"
"""The class-prior terminal: the training frequency of the class a column of ``f``
stands for (the positive class for a one-column classifier). Classification only, and
offered to the search only when asked for (``Settings.class_prior``); to the loss it is
a constant per class, like ``y`` not differentiated."""
TERMINALS = (*VARIABLES, CLASS_PRIOR)
"""Every named leaf an expression may hold."""
CONSTANTS = (1.0, -1.0)
"""Constant terminals available to the random tree generator."""


Value = np.ndarray | float
"""Numpy forms take float arrays, Python floats (literal constants, as the torch forms
get them) and 0-d arrays (constant subtrees, which torch holds as 0-dim tensors)."""
Derivative = np.ndarray | None
"""A derivative with respect to the predictions ``f``, elementwise; ``None`` is zero
(targets, constants), so that their subtrees cost no arithmetic."""
Dual = tuple[Value, Derivative]


@dataclass(frozen=True)
class Primitive:
    """One function of the search space.

    Attributes
    ----------
    name : str
        Name used in expression text, e.g. ``"div"``.
    arity : int
        Number of arguments (1 or 2).
    torch : callable
        Elementwise torch implementation (protected where needed). Binary forms also
        accept a Python float for one operand, so constants cost no tensor.
    sympy : callable
        Builds the SymPy form from SymPy arguments.
    latex : str
        LaTeX template with ``{0}``/``{1}`` placeholders for the argument LaTeX.
    julia : str
        Julia operator name used by the PySR engine.
    julia_definition : str
        Julia source defining the operator ("" for Julia built-ins).
    infix : str
        Infix symbol in expression text ("" for function-call syntax).
    operon : str
        Name of the Operon node the operon engine uses ("" where Operon has none).
    dual : callable
        Numpy value and derivative with respect to the predictions ``f`` (forward mode):
        ``dual(a, da)`` or ``dual(a, da, b, db)`` returns ``(value, derivative)``, where
        a derivative of ``None`` is zero (see :data:`Value` and :data:`Derivative`). The
        derivative follows torch autograd's conventions at kinks and ties, so that it
        equals the gradient of the torch form (keyword-only, required).
    """

    name: str
    arity: int
    torch: Callable[..., torch.Tensor]
    sympy: Callable[..., sympy.Expr]
    latex: str
    julia: str
    julia_definition: str = ""
    infix: str = ""
    operon: str = ""
    dual: Callable[..., Dual] = field(kw_only=True)


Operand = torch.Tensor | float
"""Torch forms take tensors or Python floats (folded constants); one operand of a binary
function is always a tensor."""


def _aq(a: Operand, b: Operand) -> Operand:
    return a / (1.0 + b * b) ** 0.5


def _minimum(a: Operand, b: Operand) -> torch.Tensor:
    if isinstance(b, float):
        return torch.clamp(a, max=b)
    if isinstance(a, float):
        return torch.clamp(b, max=a)
    return torch.minimum(a, b)


def _maximum(a: Operand, b: Operand) -> torch.Tensor:
    if isinstance(b, float):
        return torch.clamp(a, min=b)
    if isinstance(a, float):
        return torch.clamp(b, min=a)
    return torch.maximum(a, b)


def _abs(a: torch.Tensor) -> torch.Tensor:
    # |a| with torch.abs's value (up to the sign of a zero, which no primitive tells
    # apart) and gradient, sign(a) (0 at 0), but a second derivative with no path
    # through sign: torch's sign backward is an "efficient zero tensor",
    # and every op on one goes through Python meta kernels (importing torch._dynamo, a
    # second per process, then tens of microseconds a call), which made an unrolled
    # meta-step through abs, log or sqrt a third slower.
    return a * torch.sign(a.detach())


def _plog(a: torch.Tensor) -> torch.Tensor:
    return torch.log(torch.clamp(_abs(a), min=EPS))


def _psqrt(a: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(torch.clamp(_abs(a), min=EPS))


# The numpy forms with their derivatives (Primitive.dual). Each matches torch autograd's
# gradient of the torch form, including its choices at kinks and ties, so that the
# poor-training check optimises the same loss with or without autograd. Floating-point
# warnings are expected (protected forms divide by zero in the branch they discard):
# callers evaluate under np.errstate(all="ignore").


def _clamp_passes_at_bound() -> bool:
    """Whether the installed torch's ``torch.clamp`` passes the gradient where its input
    equals a Python float bound. It did until torch adopted the minimum-norm subgradient,
    zero, there (pytorch/pytorch#184572; torch 2.14 has it); the protected forms and min
    and max against a literal are clamps, and their derivatives below follow the torch at
    hand."""
    with torch.inference_mode(False), torch.enable_grad():  # imported under no_grad too
        x = torch.ones(1, dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(torch.clamp(x, min=1.0).sum(), x)
    return bool(grad.item() == 1.0)


# where torch.clamp(a, max=bound) passes a's gradient (``_PASSES_BELOW(a, bound)``) and
# where torch.clamp(a, min=bound) does
_PASSES_BELOW, _PASSES_ABOVE = (
    (np.less_equal, np.greater_equal) if _clamp_passes_at_bound() else (np.less, np.greater)
)


def _plus(da: Derivative, db: Derivative) -> Derivative:
    if da is None:
        return db
    if db is None:
        return da
    return da + db


def _minus(da: Derivative, db: Derivative) -> Derivative:
    if db is None:
        return da
    if da is None:
        return -db
    return da - db


def _times(d: Derivative, factor: Value) -> Derivative:
    return None if d is None else d * factor


def _add_dual(a: Value, da: Derivative, b: Value, db: Derivative) -> Dual:
    return a + b, _plus(da, db)


def _sub_dual(a: Value, da: Derivative, b: Value, db: Derivative) -> Dual:
    return a - b, _minus(da, db)


def _mul_dual(a: Value, da: Derivative, b: Value, db: Derivative) -> Dual:
    return a * b, _plus(_times(da, b), _times(db, a))


def _aq_dual(a: Value, da: Derivative, b: Value, db: Derivative) -> Dual:
    s = (1.0 + b * b) ** 0.5
    value = a / s
    if db is None:
        return value, None if da is None else da / s
    # d(a/s) = (da - (a/s) (b/s) db) / s: |b/s| <= 1, so no product overflows where s
    # does (b = 1e30 in float32: s is inf and the derivative 0, as autograd's)
    change = value * (b / s) * db
    return value, (-change if da is None else da - change) / s


def _extremum_derivative(
    a: Value, da: Derivative, b: Value, db: Derivative, wins: np.ufunc, passes: np.ufunc
) -> Derivative:
    """The derivative of min (``wins`` is ``np.less``, ``passes`` ``_PASSES_BELOW``) or
    max (``np.greater``, ``_PASSES_ABOVE``)."""
    if da is None and db is None:
        return None
    # against a literal constant the torch form is torch.clamp
    if isinstance(b, float):
        return np.where(passes(a, b), da, 0.0)
    if isinstance(a, float):
        return np.where(passes(b, a), db, 0.0)
    # torch.minimum/maximum: the winner's gradient, half of each on a tie
    da = 0.0 if da is None else da
    db = 0.0 if db is None else db
    return np.where(wins(a, b), da, np.where(wins(b, a), db, (da + db) * 0.5))


def _min_dual(a: Value, da: Derivative, b: Value, db: Derivative) -> Dual:
    return np.minimum(a, b), _extremum_derivative(a, da, b, db, np.less, _PASSES_BELOW)


def _max_dual(a: Value, da: Derivative, b: Value, db: Derivative) -> Dual:
    return np.maximum(a, b), _extremum_derivative(a, da, b, db, np.greater, _PASSES_ABOVE)


def _sign_dual(a: Value, da: Derivative) -> Dual:
    return np.sign(a), None  # autograd's gradient of sign is zero


def _square_dual(a: Value, da: Derivative) -> Dual:
    return a * a, None if da is None else da * (a + a)


def _abs_dual(a: Value, da: Derivative) -> Dual:
    return np.abs(a), _times(da, np.sign(a))  # 0 at 0, as autograd's


def _plog_dual(a: Value, da: Derivative) -> Dual:
    size = np.abs(a)
    value = np.log(np.maximum(size, EPS))
    if da is None:
        return value, None
    # zero where torch.clamp holds |a| at the floor
    return value, np.where(_PASSES_ABOVE(size, EPS), da / a, 0.0)


def _psqrt_dual(a: Value, da: Derivative) -> Dual:
    size = np.abs(a)
    value = np.sqrt(np.maximum(size, EPS))
    if da is None:
        return value, None
    return value, np.where(_PASSES_ABOVE(size, EPS), da / np.copysign(value + value, a), 0.0)


def _tanh_dual(a: Value, da: Derivative) -> Dual:
    value = np.tanh(a)
    return value, None if da is None else da * (1.0 - value * value)


PRIMITIVES: dict[str, Primitive] = {
    p.name: p
    for p in (
        Primitive("add", 2, operator.add, lambda a, b: a + b, r"{0} + {1}", "+", infix="+",
                  operon="+", dual=_add_dual),
        Primitive("sub", 2, operator.sub, lambda a, b: a - b, r"{0} - {1}", "-", infix="-",
                  operon="-", dual=_sub_dual),
        Primitive("mul", 2, operator.mul, lambda a, b: a * b, r"{0} \cdot {1}", "*", infix="*",
                  operon="*", dual=_mul_dual),
        Primitive(
            "div", 2, _aq, lambda a, b: a / sympy.sqrt(1 + b**2),
            r"\frac{{{0}}}{{\sqrt{{1 + {1}^{{2}}}}}}", "aq",
            "aq(a, b) = a / sqrt(one(b) + b * b)", operon="aq", dual=_aq_dual,
        ),
        Primitive("min", 2, _minimum, sympy.Min, r"\min\left({0}, {1}\right)", "min",
                  operon="fmin", dual=_min_dual),
        Primitive("max", 2, _maximum, sympy.Max, r"\max\left({0}, {1}\right)", "max",
                  operon="fmax", dual=_max_dual),
        Primitive("sign", 1, torch.sign, sympy.sign, r"\operatorname{{sign}}\left({0}\right)",
                  "sign", dual=_sign_dual),
        Primitive("square", 1, torch.square, lambda a: a**2, r"\left({0}\right)^{{2}}",
                  "square", "square(a) = a * a", operon="square", dual=_square_dual),
        Primitive("abs", 1, _abs, sympy.Abs, r"\left|{0}\right|", "abs", operon="abs",
                  dual=_abs_dual),
        Primitive(
            "log", 1, _plog, lambda a: sympy.log(sympy.Abs(a)), r"\log\left|{0}\right|",
            "plog", "plog(a) = log(max(abs(a), convert(typeof(a), 1f-7)))", operon="logabs",
            dual=_plog_dual,
        ),
        Primitive(
            "sqrt", 1, _psqrt, lambda a: sympy.sqrt(sympy.Abs(a)), r"\sqrt{{\left|{0}\right|}}",
            "psqrt", "psqrt(a) = sqrt(max(abs(a), convert(typeof(a), 1f-7)))",
            operon="sqrtabs", dual=_psqrt_dual,
        ),
        Primitive("tanh", 1, torch.tanh, sympy.tanh, r"\tanh\left({0}\right)", "tanh",
                  operon="tanh", dual=_tanh_dual),
    )
}
"""The 12 functions of the EvoMAL search space, by name."""

INFIX = {p.infix: p.name for p in PRIMITIVES.values() if p.infix}
"""Infix symbol -> primitive name (``+``, ``-``, ``*``)."""
