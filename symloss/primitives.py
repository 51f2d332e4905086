"""The search space: the function set and terminals, one row per primitive.

This table is the single source of truth for every representation of a primitive:
parsing and printing (:mod:`symloss.expression`), torch evaluation
(:mod:`symloss.network`), SymPy and LaTeX rendering, and the Julia operators of the
PySR engine and the node names of the Operon engine. Adding a primitive is adding one
row.

The protected forms follow the EvoMAL reference: ``div`` is the analytic quotient
``a / sqrt(1 + b^2)``, ``log`` and ``sqrt`` act on ``max(|a|, 1e-7)``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import sympy
import torch

EPS = 1e-7
"""Floor applied to ``|a|`` by the protected ``log`` and ``sqrt``."""

TARGET = "y"
PREDICTION = "f"
VARIABLES = (TARGET, PREDICTION)
CONSTANTS = (1.0, -1.0)
"""Constant terminals available to the random tree generator."""


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


def _plog(a: torch.Tensor) -> torch.Tensor:
    return torch.log(torch.clamp(torch.abs(a), min=EPS))


def _psqrt(a: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(torch.clamp(torch.abs(a), min=EPS))


PRIMITIVES: dict[str, Primitive] = {
    p.name: p
    for p in (
        Primitive("add", 2, operator.add, lambda a, b: a + b, r"{0} + {1}", "+", infix="+",
                  operon="+"),
        Primitive("sub", 2, operator.sub, lambda a, b: a - b, r"{0} - {1}", "-", infix="-",
                  operon="-"),
        Primitive("mul", 2, operator.mul, lambda a, b: a * b, r"{0} \cdot {1}", "*", infix="*",
                  operon="*"),
        Primitive(
            "div", 2, _aq, lambda a, b: a / sympy.sqrt(1 + b**2),
            r"\frac{{{0}}}{{\sqrt{{1 + {1}^{{2}}}}}}", "aq",
            "aq(a, b) = a / sqrt(one(b) + b * b)", operon="aq",
        ),
        Primitive("min", 2, _minimum, sympy.Min, r"\min\left({0}, {1}\right)", "min",
                  operon="fmin"),
        Primitive("max", 2, _maximum, sympy.Max, r"\max\left({0}, {1}\right)", "max",
                  operon="fmax"),
        Primitive("sign", 1, torch.sign, sympy.sign, r"\operatorname{{sign}}\left({0}\right)",
                  "sign"),
        Primitive("square", 1, torch.square, lambda a: a**2, r"\left({0}\right)^{{2}}",
                  "square", "square(a) = a * a", operon="square"),
        Primitive("abs", 1, torch.abs, sympy.Abs, r"\left|{0}\right|", "abs", operon="abs"),
        Primitive(
            "log", 1, _plog, lambda a: sympy.log(sympy.Abs(a)), r"\log\left|{0}\right|",
            "plog", "plog(a) = log(max(abs(a), convert(typeof(a), 1f-7)))", operon="logabs",
        ),
        Primitive(
            "sqrt", 1, _psqrt, lambda a: sympy.sqrt(sympy.Abs(a)), r"\sqrt{{\left|{0}\right|}}",
            "psqrt", "psqrt(a) = sqrt(max(abs(a), convert(typeof(a), 1f-7)))",
            operon="sqrtabs",
        ),
        Primitive("tanh", 1, torch.tanh, sympy.tanh, r"\tanh\left({0}\right)", "tanh",
                  operon="tanh"),
    )
}
"""The 12 functions of the EvoMAL search space, by name."""

INFIX = {p.infix: p.name for p in PRIMITIVES.values() if p.infix}
"""Infix symbol -> primitive name (``+``, ``-``, ``*``)."""
