"""SymPy forms of loss expressions: exact, canonical (the cache key), readable, LaTeX.

SymPy reads a protected primitive as its mathematical meaning, which can fail where the
torch form cannot: ``log(y - y)`` is ``log(max(0, 1e-7))`` to the network but ``zoo``
(complex infinity) to SymPy, ``Max(zoo, f)`` then raises, and ``simplify`` can raise on
forms with ``sign`` or run for minutes. So every function here returns within a bounded
time (see :mod:`symloss.timelimit`) and never raises for a loss the network evaluates:

- where the exact form fails or holds ``zoo``, ``nan`` or ``oo``, the *opaque* form is
  used instead: ``+``, ``-`` and ``*`` stay arithmetic and every other primitive is an
  undefined SymPy function of its own name, so it reads like the expression text;
- where ``simplify`` fails or runs over, the unsimplified form is kept;
- where the canonical form fails, the cache key is the expression text (no merging).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Protocol

import sympy

from symloss.primitives import CLASS_PRIOR, PRIMITIVES, TERMINALS, VARIABLES
from symloss.timelimit import attempt


class Tree(Protocol):
    """What the SymPy forms read of an expression tree (an
    :class:`~symloss.expression.Expression` is one): its nodes in edge-weight order. A
    protocol, so that this module stays below ``expression``, which uses it."""

    @property
    def op(self) -> str: ...

    @property
    def value(self) -> float: ...

    def postorder(self) -> Sequence[Tree]: ...

SYMBOLS = {
    **{name: sympy.Symbol(name, real=True) for name in VARIABLES},
    CLASS_PRIOR: sympy.Symbol(CLASS_PRIOR, nonnegative=True),
}
"""The SymPy symbols of the terminals: ``y`` and ``f`` (real) and the class prior ``p``
(a frequency, so ``|p|`` is ``p``: ``log(p)`` reads as it means)."""

MAX_EXPANDED_TERMS = 1000
"""Largest expansion the canonical key computes (an estimate, see :func:`canonical`);
about 2,000 terms already take SymPy a second."""
MAX_SIMPLIFY_OPS = 60
"""Larger forms are not simplified: simplifying them can take minutes."""
SIMPLIFY_SECONDS = 2.0
"""Time limit of one ``simplify`` (cosmetic: one that runs over is skipped)."""
SYMPY_SECONDS = 5.0
"""Time limit of building, expanding or printing one form (milliseconds as a rule)."""

_NON_FINITE = (sympy.zoo, sympy.nan, sympy.oo, -sympy.oo)
_EXACT = {name: p.sympy for name, p in PRIMITIVES.items()}
_OPAQUE = {
    name: p.sympy if p.infix else sympy.Function(name) for name, p in PRIMITIVES.items()
}
KEY_FALLBACK_PREFIX = "tree:"
"""Start of a key taken from the expression text, never from a SymPy form (whose text
cannot contain a colon)."""


def _number(value: float) -> sympy.Expr:
    return sympy.Integer(int(value)) if float(value).is_integer() else sympy.Float(value)


def _build(
    expression: Tree,
    table: dict[str, Callable[..., sympy.Expr]],
    weights: Sequence[float] = (),
) -> sympy.Expr:
    """The form with ``table``'s primitives; node ``i`` in post-order (not the root) is
    multiplied by ``weights[i]`` unless that is 1."""
    stack: list[sympy.Expr] = []
    for i, node in enumerate(expression.postorder()):
        if node.op in TERMINALS:
            v = SYMBOLS[node.op]
        elif node.op == "const":
            v = _number(node.value)
        else:
            n = len(node.args)
            v = table[node.op](*stack[-n:])
            del stack[-n:]
        if i < len(weights) and weights[i] != 1.0:
            v = v * _number(weights[i])
        stack.append(v)
    return stack[-1]


def _finite(form: sympy.Expr) -> sympy.Expr:
    if form.has(*_NON_FINITE):
        raise ValueError(f"the SymPy form {form} is not finite")
    return form


def opaque_form(expression: Tree, weights: Sequence[float] = ()) -> sympy.Expr:
    """The form in which every primitive but ``+``, ``-``, ``*`` is an undefined function
    named like the primitive (``log(y - y)``); it cannot fail or take long."""
    return _build(expression, _OPAQUE, weights)


def sympy_form(expression: Tree, weights: Sequence[float] = ()) -> sympy.Expr:
    """The exact SymPy form (protected primitives as their mathematical meaning), with
    edge ``weights`` folded in; the opaque form where the exact one fails or holds
    ``zoo``, ``nan`` or ``oo``."""
    return attempt(
        lambda: _finite(_build(expression, _EXACT, weights)),
        lambda: opaque_form(expression, weights),
        SYMPY_SECONDS,
        unlimited_ok=True,
    )


def _expansion_size(form: sympy.Expr) -> tuple[int, int]:
    """Upper bounds of (terms, total work) of ``sympy.expand(form)``, capped just above
    :data:`MAX_EXPANDED_TERMS` so the numbers stay small."""
    cap = MAX_EXPANDED_TERMS + 1
    if form.is_Atom:
        return 1, 1
    parts = [_expansion_size(a) for a in form.args]
    work = sum(w for _, w in parts)
    if form.is_Add:
        terms = sum(t for t, _ in parts)
    elif form.is_Mul:
        terms = math.prod(min(t, cap) for t, _ in parts)
    elif form.is_Pow and form.exp.is_Integer:
        n, base = abs(int(form.exp)), min(parts[0][0], cap)
        # monomials of degree n in `base` terms; the exponent's own size is 1
        terms = cap if n > cap else math.comb(base + n - 1, n)
    else:  # a function: one term outside, its arguments expanded inside
        terms = 1
    return min(terms, cap), min(work + terms, cap)


def _expanded(form: sympy.Expr) -> sympy.Expr:
    return sympy.expand(form) if _expansion_size(form)[1] <= MAX_EXPANDED_TERMS else form


@functools.lru_cache(maxsize=65536)
def canonical(expression: Tree) -> sympy.Expr | None:
    """The expanded exact form behind :func:`canonical_key`, or None when SymPy cannot
    form it (``zoo``, ``nan``, ``oo``, an error, over time).

    Expansion, not simplify(): it merges what GP produces over and over (reordered
    products, (f - y)^2 vs (y - f)^2, cancelling terms) some 20x faster, and the
    gradient fingerprint merges the functionally equal rest. Forms whose expansion
    would exceed :data:`MAX_EXPANDED_TERMS` terms are left unexpanded (expanding them
    can take SymPy minutes); the size is estimated, so the key does not depend on the
    machine's speed.
    """
    return attempt(
        lambda: _finite(_expanded(_build(expression, _EXACT))),
        lambda: None,
        SYMPY_SECONDS,
        unlimited_ok=True,
    )


def canonical_key(expression: Tree) -> str:
    """The text of :func:`canonical`, or ``"tree:"`` and the expression text when there
    is no canonical form: forms with ``zoo`` would merge different losses."""
    form = canonical(expression)
    return KEY_FALLBACK_PREFIX + str(expression) if form is None else str(form)


def readable(form: sympy.Expr) -> sympy.Expr:
    """The simpler of ``form`` and its :func:`sympy.simplify` result, by operation count.

    ``simplify`` sometimes rewrites ``sign`` or ``Max`` into long piecewise forms that
    are correct but harder to read than the input. Large or high-power forms are left
    as they are (simplifying them can take minutes), and so is ``form`` when simplify
    fails or runs over :data:`SIMPLIFY_SECONDS`.
    """

    def simpler() -> sympy.Expr:
        ops = sympy.count_ops(form)
        if ops > MAX_SIMPLIFY_OPS or _expansion_size(form)[1] > MAX_EXPANDED_TERMS:
            return form
        result = _finite(sympy.simplify(form))
        return result if sympy.count_ops(result) <= ops else form

    return attempt(simpler, lambda: form, SIMPLIFY_SECONDS)


def round_floats(form: sympy.Expr, digits: int) -> sympy.Expr:
    """``form`` with every floating-point number rounded to ``digits`` significant
    digits (``form`` itself if rounding fails). Significant, not decimal, digits: a
    small coefficient rounded to decimals becomes 0 and can turn a loss into a constant."""
    return attempt(
        lambda: _finite(form.xreplace(
            {n: sympy.Float(significant(float(n), digits)) for n in form.atoms(sympy.Float)}
        )),
        lambda: form,
        SYMPY_SECONDS,
        unlimited_ok=True,
    )


def significant(value: float, digits: int) -> float:
    """``value`` rounded to ``digits`` significant digits."""
    return float(f"{value:.{digits}g}")


def _rounded(weights: Sequence[float], digits: int) -> list[float]:
    return [significant(w, digits) for w in weights]


def loss_sympy(expression: Tree, weights: Sequence[float], digits: int) -> sympy.Expr:
    """The readable SymPy form of a loss with its edge weights folded in, rounded to
    ``digits`` (weights that round to 1 are left out)."""
    rounded = _rounded(weights, digits)
    if all(w == 1.0 for w in rounded):
        return readable(sympy_form(expression))
    return round_floats(readable(sympy_form(expression, rounded)), digits)


def latex(form: sympy.Expr, fallback: Callable[[], str]) -> str:
    """``sympy.latex(form)``, or ``fallback()`` if printing fails or runs over."""
    return attempt(lambda: sympy.latex(form), fallback, SYMPY_SECONDS, unlimited_ok=True)
