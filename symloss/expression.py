"""The loss expression tree: the one currency between engines and the evaluator.

Text syntax: the primitive names of :mod:`symloss.primitives` as function calls
(``div(f, y)``, ``log(f)``), infix ``+``, ``-``, ``*`` with the usual precedence, unary
minus (``-x`` is ``mul(-1, x)``), the variables ``y`` (target) and ``f`` (prediction),
the class-prior terminal ``p`` (classification only, see
:data:`symloss.primitives.CLASS_PRIOR`) and numeric constants. ``str(expr)`` writes this
syntax and ``Expression.parse`` reads it back to an identical tree.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sympy import Expr as SymPyExpr  # Expression.sympy shadows the module in the class

from symloss.primitives import CLASS_PRIOR, INFIX, PREDICTION, PRIMITIVES, TARGET, TERMINALS
from symloss.symbolic import canonical, canonical_key, readable, sympy_form
from symloss.symbolic import latex as symbolic_latex

_NUMBER = r"\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?"
# No leading \s*: finditer skips whitespace itself, where a leading \s* would backtrack
# over a run of spaces at every position (time quadratic in the whitespace)
_TOKEN = re.compile(rf"({_NUMBER})|([A-Za-z_]\w*)|(\S)")
MAX_TEXT_LENGTH = 100_000
"""Longest expression text accepted, in characters. A full tree of the genetic
programming height limit (10) with 17-digit constants is about 40,000; longer text is
refused before it is read, so a corrupt or hostile file costs no time or memory."""
MAX_HEIGHT = 100
"""Deepest tree accepted (edges from root to leaf). Trees are walked recursively, by
symloss and by SymPy; the genetic programming height limit is 10 in the reference."""
PREC_SUM, PREC_PRODUCT, PREC_UNARY, PREC_ATOM = 1, 2, 3, 4
"""Binding strength of what a printer writes, loosest first: ``a + b``, ``a * b``,
``-a``, and atoms (names, calls, parenthesised text); Python and our syntax agree."""


@dataclass(frozen=True)
class Expression:
    """An immutable loss expression tree.

    A node is a primitive (``op`` in :data:`symloss.primitives.PRIMITIVES`, with
    ``args``), a named terminal (``op`` is ``"y"``, ``"f"`` or ``"p"``) or a constant (``op`` is
    ``"const"`` and ``value`` holds the number).

    Examples
    --------
    >>> e = Expression.parse("-(y * log(f))")
    >>> str(e)
    '-(y * log(f))'
    >>> e.size, e.height
    (6, 3)
    """

    op: str
    args: tuple[Expression, ...] = ()
    value: float = 0.0
    _hash: int = field(default=0, init=False, repr=False, compare=False)
    _height: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        height = 1 + max(a._height for a in self.args) if self.args else 0
        if height > MAX_HEIGHT:
            raise ValueError(
                f"expression is nested deeper than the limit of {MAX_HEIGHT} levels; "
                "write it with fewer nested calls or terms"
            )
        object.__setattr__(self, "_height", height)
        object.__setattr__(self, "_hash", hash((self.op, self.args, self.value)))

    def __hash__(self) -> int:
        return self._hash

    # -- construction -------------------------------------------------------------------
    @staticmethod
    def var(name: str) -> Expression:
        """A named leaf: ``"y"``, ``"f"`` or the class prior ``"p"``."""
        if name not in TERMINALS:
            raise ValueError(f"unknown variable {name!r}; the variables are {TERMINALS}")
        return Expression(name)

    @staticmethod
    def const(value: float) -> Expression:
        """A constant leaf."""
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"constants must be finite, got {value}")
        return Expression("const", value=value + 0.0)

    @staticmethod
    def call(op: str, *args: Expression) -> Expression:
        """A primitive applied to arguments, e.g. ``Expression.call("log", f)``."""
        primitive = PRIMITIVES.get(op)
        if primitive is None:
            raise ValueError(f"unknown function {op!r}; the functions are {sorted(PRIMITIVES)}")
        if len(args) != primitive.arity:
            raise ValueError(f"{op} takes {primitive.arity} argument(s), got {len(args)}")
        return Expression(op, tuple(args))

    @classmethod
    def parse(cls, text: str | Expression) -> Expression:
        """Read an expression from text.

        Raises
        ------
        ValueError
            If the text is not a valid expression; the message names the offending
            token and lists the allowed names.
        """
        if isinstance(text, Expression):
            return text
        if not isinstance(text, str):
            raise TypeError(f"expected expression text, got {type(text).__name__}")
        return _Parser(text).parse()

    # -- structure ----------------------------------------------------------------------
    @property
    def is_leaf(self) -> bool:
        """True for variables and constants."""
        return not self.args

    @property
    def size(self) -> int:
        """Number of nodes."""
        return 1 + sum(a.size for a in self.args)

    @property
    def height(self) -> int:
        """Edges on the longest root-to-leaf path (a leaf has height 0); at most
        :data:`MAX_HEIGHT`."""
        return self._height

    @property
    def variables(self) -> frozenset[str]:
        """The named terminals (``"y"``, ``"f"``, ``"p"``) the expression uses."""
        if self.op in TERMINALS:
            return frozenset((self.op,))
        return frozenset().union(*(a.variables for a in self.args))

    @property
    def uses_class_prior(self) -> bool:
        """True when the expression holds the class-prior terminal ``p``: it then needs
        the class frequencies of its task to be evaluated."""
        return CLASS_PRIOR in self.variables

    def nodes(self) -> Iterator[Expression]:
        """All nodes in prefix (root first) order."""
        yield self
        for a in self.args:
            yield from a.nodes()

    def postorder(self) -> list[Expression]:
        """The nodes, children before parents, root last: the order of the edge weights.

        Node ``i`` (every node but the root) carries edge weight ``i`` in the meta-loss
        network, the SymPy forms and the exported code; this is the one definition of
        that order.
        """
        order: list[Expression] = []
        stack = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded or not node.args:
                order.append(node)
            else:
                stack.append((node, True))
                stack.extend((a, False) for a in reversed(node.args))
        return order

    def program(self) -> list[tuple[str, tuple[int, ...], float]]:
        """:meth:`postorder` as instructions ``(op, positions of the children, constant)``,
        the form the torch and dual-number evaluators run."""
        program: list[tuple[str, tuple[int, ...], float]] = []
        stack: list[int] = []
        for i, node in enumerate(self.postorder()):
            split = len(stack) - len(node.args)
            program.append((node.op, tuple(stack[split:]), node.value))
            del stack[split:]
            stack.append(i)
        return program

    # -- rendering ----------------------------------------------------------------------
    def __str__(self) -> str:
        return _render(self, latex=False)[0]

    def __repr__(self) -> str:
        return f"Expression.parse({str(self)!r})"

    def sympy(self) -> SymPyExpr:
        """The SymPy form (protected operators written as their mathematical meaning).

        Where SymPy cannot form that (``log(y - y)`` would be ``zoo``), the primitives
        other than ``+``, ``-``, ``*`` are undefined SymPy functions of their names
        instead (see :mod:`symloss.symbolic`); this never raises.
        """
        return sympy_form(self)

    def latex(self, simplify: bool = True) -> str:
        """LaTeX of the expression.

        ``simplify=True`` renders the simplified SymPy form (time-bounded, falling back to
        less simplified forms); ``simplify=False`` renders the tree as it is, with the
        primitive table's LaTeX templates.
        """
        tree = functools.partial(_render, self, latex=True)
        if simplify:
            return symbolic_latex(readable(self.sympy()), lambda: tree()[0])
        return tree()[0]

    def canonical(self) -> SymPyExpr | None:
        """The canonical SymPy form behind :meth:`key` (cached), or None where SymPy
        cannot form it (see :func:`symloss.symbolic.canonical`)."""
        return canonical(self)

    def key(self) -> str:
        """Canonical key: expressions whose expanded SymPy forms agree share a key.

        SymPy's automatic canonical form (commutative reordering, collected terms) is
        expanded (products and integer powers multiplied out), e.g. ``f*y`` and ``y*f``,
        or ``square(f - y)`` and ``square(y - f)``, share a key. Forms whose expansion
        would be large are left unexpanded: multiplying them out can take SymPy
        minutes. Where SymPy cannot form the expression (``log(y - y)`` is ``zoo``), the
        key is ``"tree:"`` and the text, so such candidates are never merged by key.
        """
        return canonical_key(self)


def _number_text(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _is_negation(e: Expression) -> bool:
    return (
        e.op == "mul" and e.args[0].op == "const" and e.args[0].value == -1.0
        and e.args[1].op != "const"
    )


def infix(
    operator: str, left: tuple[str, int], right: tuple[str, int], template: str,
    wrap: Callable[[str], str],
) -> tuple[str, int]:
    """``left operator right`` (each ``(text, precedence)``) and its precedence, the
    operands wrapped only where needed; the operators associate to the left, so
    ``a - (b - c)`` keeps its parentheses and ``(a - b) - c`` loses them. ``template``
    places the two operands (``"{} - {}"``, or a LaTeX form)."""
    own = PREC_PRODUCT if operator == "*" else PREC_SUM
    (left_text, left_prec), (right_text, right_prec) = left, right
    left_text = left_text if left_prec >= own else wrap(left_text)
    right_text = right_text if right_prec > own else wrap(right_text)
    return template.format(left_text, right_text), own


def _render(e: Expression, latex: bool) -> tuple[str, int]:
    """Text (or LaTeX) of ``e`` and its precedence; parentheses only where needed, so
    that parsing the text gives back the same tree."""
    if e.op in TERMINALS:
        return e.op, PREC_ATOM
    if e.op == "const":
        text = _number_text(e.value)
        return text, PREC_UNARY if text.startswith("-") else PREC_ATOM

    def wrap(text: str) -> str:
        return rf"\left({text}\right)" if latex else f"({text})"

    if _is_negation(e):
        inner, prec = _render(e.args[1], latex)
        return "-" + (inner if prec >= PREC_UNARY else wrap(inner)), PREC_UNARY
    primitive = PRIMITIVES[e.op]
    parts = [_render(a, latex) for a in e.args]
    if primitive.infix:
        template = primitive.latex if latex else f"{{}} {primitive.infix} {{}}"
        return infix(primitive.infix, parts[0], parts[1], template, wrap)
    if latex:
        return primitive.latex.format(*(p[0] for p in parts)), PREC_ATOM
    return f"{e.op}({', '.join(p[0] for p in parts)})", PREC_ATOM


def _tokens(text: str) -> Iterator[tuple[str, str, int]]:
    """``(kind, text, position)`` of each token, kind ``"num"``, ``"name"`` or ``"op"``."""
    for m in _TOKEN.finditer(text):
        number, name, other = m.groups()
        if number is not None:
            yield "num", number, m.start(1)
        elif name is not None:
            yield "name", name, m.start(2)
        else:
            yield "op", other, m.start(3)


class _Parser:
    """Recursive-descent parser for the expression syntax."""

    def __init__(self, text: str) -> None:
        self.text = text
        if len(text) > MAX_TEXT_LENGTH:
            raise self._error(
                f"the text is {len(text):,} characters long, more than the limit of "
                f"{MAX_TEXT_LENGTH:,}"
            )
        # tokens are read as the parser needs them: the nesting limit stops a text of
        # nothing but "(" after MAX_HEIGHT tokens, not after tokenising all of it
        self._tokens = _tokens(text)
        self._next = next(self._tokens, None)
        self.depth = 0

    def _error(self, what: str) -> ValueError:
        allowed = ", ".join([*TERMINALS, *sorted(PRIMITIVES)])
        text = self.text if len(self.text) <= 80 else self.text[:80] + "..."
        return ValueError(
            f"cannot parse {text!r}: {what}; allowed names are {allowed}, "
            "with infix +, -, *, unary -, parentheses and numbers "
            "(division is the function div(a, b) = a / sqrt(1 + b^2))"
        )

    def _peek(self) -> tuple[str, str, int] | None:
        return self._next

    def _advance(self) -> None:
        self._next = next(self._tokens, None)

    def _take(self) -> tuple[str, str, int]:
        token = self._peek()
        if token is None:
            raise self._error("unexpected end of text")
        self._advance()
        return token

    def _expect(self, symbol: str) -> None:
        kind, text, at = self._take()
        if (kind, text) != ("op", symbol):
            raise self._error(f"expected {symbol!r} but found token {text!r} at position {at}")

    def parse(self) -> Expression:
        if self._next is None:
            raise self._error("the text is empty")
        e = self._sum()
        token = self._peek()
        if token is not None:
            raise self._error(f"unexpected token {token[1]!r} at position {token[2]}")
        return e

    def _sum(self) -> Expression:
        e = self._product()
        while (token := self._peek()) and token[0] == "op" and token[1] in "+-":
            self._advance()
            e = self._node(INFIX[token[1]], e, self._product(), at=token[2])
        return e

    def _product(self) -> Expression:
        e = self._unary()
        while (token := self._peek()) and token[0] == "op" and token[1] == "*":
            self._advance()
            e = self._node("mul", e, self._unary(), at=token[2])
        return e

    def _nested(self, at: int) -> None:
        """Enter one nesting level (a call, parentheses, a unary minus); the recursion of
        this parser, and of everything that walks the tree, grows with the nesting."""
        self.depth += 1
        if self.depth > MAX_HEIGHT:
            raise self._error(
                f"nesting deeper than the limit of {MAX_HEIGHT} levels at position {at}"
            )

    def _number(self, text: str, at: int) -> Expression:
        value = float(text)
        if not math.isfinite(value):
            raise self._error(f"the number at position {at} is too large to be a finite float")
        return Expression.const(value)

    def _node(self, op: str, *args: Expression, at: int) -> Expression:
        """A new node; one that makes the tree too high is a parse error at ``at``."""
        try:
            return Expression(op, args)
        except ValueError as error:
            raise self._error(f"{error} (at position {at})") from None

    def _unary(self) -> Expression:
        token = self._peek()
        if token and token[0] == "op" and token[1] == "-":
            self._advance()
            nxt = self._peek()
            if nxt and nxt[0] == "num":
                self._advance()
                return self._number("-" + nxt[1], nxt[2])
            self._nested(token[2])
            e = self._node("mul", Expression.const(-1.0), self._unary(), at=token[2])
            self.depth -= 1
            return e
        return self._atom()

    def _atom(self) -> Expression:
        kind, text, at = self._take()
        if kind == "num":
            return self._number(text, at)
        if kind == "op" and text == "(":
            self._nested(at)
            e = self._sum()
            self._expect(")")
            self.depth -= 1
            return e
        if kind == "name" and text in TERMINALS:
            return Expression(text)
        if kind == "name" and text in PRIMITIVES:
            self._expect("(")
            self._nested(at)
            args = [self._sum()]
            while (token := self._peek()) and token[:2] == ("op", ","):
                self._advance()
                args.append(self._sum())
            self._expect(")")
            self.depth -= 1
            arity = PRIMITIVES[text].arity
            if len(args) != arity:
                raise self._error(f"{text} takes {arity} argument(s) but got {len(args)}")
            return self._node(text, *args, at=at)
        raise self._error(f"unexpected token {text!r} at position {at}")


TARGET_VAR = Expression.var(TARGET)
PREDICTION_VAR = Expression.var(PREDICTION)
