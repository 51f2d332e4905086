"""Expression trees: parsing, printing, structure, SymPy/LaTeX rendering, keys."""

from __future__ import annotations

import dataclasses
import functools
import random

import numpy as np
import pytest
import sympy
import torch

from symloss.expression import (
    MAX_TEXT_LENGTH,
    PREDICTION_VAR,
    TARGET_VAR,
    Expression,
    readable,
)
from symloss.kinds import check_task_kind
from symloss.library import BASELINES, KNOWN_LOSSES, baseline, known_losses
from symloss.metaloss import MetaLossNetwork
from symloss.primitives import CONSTANTS, PRIMITIVES, VARIABLES

P = Expression.parse
f, y = Expression.var("f"), Expression.var("y")


def random_tree(rng: random.Random, height: int) -> Expression:
    """A random tree from the primitive table; leaves are variables and constants."""
    if height == 0 or rng.random() < 0.2:
        r = rng.random()
        if r < 0.6:
            return Expression.var(rng.choice(VARIABLES))
        if r < 0.8:
            return Expression.const(rng.choice(CONSTANTS))
        return Expression.const(
            rng.choice([0.5, -2.0, 3.0, -0.25, 1e-7, 2.5e20, -1.5e-9, 0.1, 0.0, 12345.678])
        )
    name = rng.choice(sorted(PRIMITIVES))
    args = [random_tree(rng, height - 1) for _ in range(PRIMITIVES[name].arity)]
    if name == "mul" and rng.random() < 0.3:  # exercise unary minus
        args[0] = Expression.const(-1.0)
    return Expression.call(name, *args)


RANDOM_TREES = [random_tree(random.Random(seed), height=1 + seed % 5) for seed in range(400)]

CANONICAL = [
    "f",
    "y",
    "1",
    "-1",
    "0.5",
    "-0.25",
    "1e-07",
    "f - y",
    "f + y",
    "f * y",
    "-f",
    "-(f - y)",
    "-(y * log(f))",
    "square(f - y)",
    "div(f, y)",
    "min(f, y) + max(y, 1)",
    "f - (y - 1)",
    "f - y - 1",
    "(f - y) * (f + y)",
    "f * y * f",
    "f * (y * f)",
    "f - -1",
    "f + -2",
    "f * -1",
    "-2 * f",
    "y * -f",
    "-f * y",
    "--f",
    "-(-2 * f)",
    "-square(f)",
    "-(f + y) * y",
    "sign(f) * abs(y) - tanh(sqrt(f))",
    "log(1 + square(f - y))",
    "max(0, 1 - y * f)",
    "-(y * square(1 - f) * log(f))",
    "sqrt(1 + square(f - y)) - 1",
    "div(div(f, y), div(y, f))",
    "f - -y",
    "0.30000000000000004 * f",
    "2.5e+20 * f",
]


@pytest.mark.parametrize("text", CANONICAL)
def test_canonical_text_round_trip(text):
    e = P(text)
    assert str(e) == text
    assert P(str(e)) == e


@pytest.mark.parametrize("index", range(0, 400, 20))
def test_random_tree_round_trip_batch(index):
    for e in RANDOM_TREES[index : index + 20]:
        text = str(e)
        back = P(text)
        assert back == e, text
        assert str(back) == text
        assert hash(back) == hash(e)


def test_random_trees_cover_the_whole_table():
    used = {n.op for e in RANDOM_TREES for n in e.nodes()}
    assert set(PRIMITIVES) <= used
    assert {"f", "y", "const"} <= used
    negations = [
        n for e in RANDOM_TREES for n in e.nodes()
        if n.op == "mul" and n.args[0] == Expression.const(-1.0)
    ]
    assert negations


def test_whitespace_is_insignificant_inside_text():
    assert P("  f-y") == P("f - y") == P("f\t-\ty") == P("(f)-(y)") == P("((f - y))")
    assert P("div( f ,y )") == P("div(f, y)")


def test_trailing_whitespace_is_ignored():
    assert P("f - y ") == P("f - y")


def test_whitespace_only_text_is_reported_empty():
    with pytest.raises(ValueError, match="empty"):
        P("   ")


def test_unary_minus_and_negative_constants():
    assert P("-f") == Expression.call("mul", Expression.const(-1.0), f)
    assert P("-2") == Expression.const(-2.0)
    assert P("- 2") == Expression.const(-2.0)
    assert P("-2 * f") == Expression.call("mul", Expression.const(-2.0), f)
    assert P("--f") == Expression.call(
        "mul", Expression.const(-1.0), Expression.call("mul", Expression.const(-1.0), f)
    )
    assert P("f - -2") == Expression.call("sub", f, Expression.const(-2.0))
    assert P("-0") == Expression.const(0.0)
    # -1 * f is the negation tree, printed as unary minus
    assert str(P("-1 * f")) == "-f"
    # a product of constants is not written as a negation
    assert str(Expression.call("mul", Expression.const(-1.0), Expression.const(2.0))) == "-1 * 2"


def test_precedence_and_associativity():
    assert P("f - y - 1") == Expression.call(
        "sub", Expression.call("sub", f, y), Expression.const(1.0)
    )
    assert P("f - (y - 1)") == Expression.call(
        "sub", f, Expression.call("sub", y, Expression.const(1.0))
    )
    assert P("f + y * f") == Expression.call("add", f, Expression.call("mul", y, f))
    assert P("(f + y) * f") == Expression.call("mul", Expression.call("add", f, y), f)
    # unary minus binds tighter than *
    assert P("-f * y") == Expression.call("mul", P("-f"), y)
    nested = Expression.call("sub", f, Expression.call("sub", y, Expression.call("sub", f, y)))
    assert str(nested) == "f - (y - (f - y))"
    assert P(str(nested)) == nested


def test_cross_entropy_example():
    e = P("-(y * log(f))")
    assert e == Expression.call(
        "mul", Expression.const(-1.0), Expression.call("mul", y, Expression.call("log", f))
    )
    assert str(e) == "-(y * log(f))"
    assert repr(e) == "Expression.parse('-(y * log(f))')"
    assert eval(repr(e), {"Expression": Expression}) == e
    assert (e.size, e.height) == (6, 3)
    assert e.variables == frozenset({"y", "f"})


def test_pysr_style_text():
    e = P("((y * log(f)) * -1.0)")
    assert e == Expression.call(
        "mul", Expression.call("mul", y, Expression.call("log", f)), Expression.const(-1.0)
    )
    assert str(e) == "y * log(f) * -1"
    assert P(str(e)) == e
    assert e.key() == P("-(y * log(f))").key()
    assert P("1.5e-3 * f") == Expression.call("mul", Expression.const(0.0015), f)
    assert P(".5 * f") == P("0.5 * f")
    assert P("2. * f") == P("2 * f")


def test_constants():
    assert Expression.const(-0.0) == Expression.const(0.0)
    assert str(Expression.const(-0.0)) == "0"
    assert str(Expression.const(3)) == "3"
    assert str(Expression.const(1e16)) == "1e+16"
    assert P(str(Expression.const(1e16))) == Expression.const(1e16)
    for bad in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(ValueError, match="finite"):
            Expression.const(bad)
    with pytest.raises(ValueError, match="finite"):
        P("1e999 * f")


def test_construction_errors():
    with pytest.raises(ValueError, match="'x'"):
        Expression.var("x")
    with pytest.raises(ValueError, match="'exp'.*div"):
        Expression.call("exp", f)
    with pytest.raises(ValueError, match="log takes 1"):
        Expression.call("log", f, y)
    with pytest.raises(ValueError, match="div takes 2"):
        Expression.call("div", f)
    assert y == TARGET_VAR and f == PREDICTION_VAR


def test_parse_type_errors_and_identity():
    e = P("f - y")
    assert P(e) is e
    with pytest.raises(TypeError, match="int"):
        P(3)  # type: ignore[arg-type]


def test_parse_reads_text_up_to_the_length_limit_with_any_whitespace():
    # a leading \s* in the token pattern made this quadratic: minutes for 100,000 spaces
    padded = "f - y" + " " * (MAX_TEXT_LENGTH - 10) + "\n\t "
    assert len(padded) <= MAX_TEXT_LENGTH
    assert P(padded) == P("f - y")
    assert P(" " * (MAX_TEXT_LENGTH - 1) + "f") == f


@pytest.mark.parametrize("text", ["f" + " " * MAX_TEXT_LENGTH, "(" * 2_000_000])
def test_parse_refuses_text_over_the_length_limit_before_reading_it(text):
    with pytest.raises(ValueError, match=f"more than the limit of {MAX_TEXT_LENGTH:,}"):
        P(text)


def _allowed_listed(message: str) -> bool:
    return all(name in message for name in [*VARIABLES, *PRIMITIVES])


@pytest.mark.parametrize(
    "text, offending",
    [
        ("f / y", "'/'"),
        ("exp(f)", "'exp'"),
        ("pow(f, 2)", "'pow'"),
        ("x - y", "'x'"),
        ("log(f, y)", "log takes 1 argument(s) but got 2"),
        ("div(f)", "div takes 2 argument(s) but got 1"),
        ("f y", "'y' at position 2"),
        ("f - y)", "')' at position 5"),
        ("(f - y", "end of text"),
        ("log(f", "end of text"),
        ("log f", "expected '(' but found token 'f'"),
        ("log()", "')'"),
        ("f +", "end of text"),
        ("", "empty"),
        ("f ^ 2", "'^'"),
        ("2f", "'f'"),
    ],
)
def test_parse_errors_name_the_problem_and_list_allowed_names(text, offending):
    with pytest.raises(ValueError) as info:
        P(text)
    message = str(info.value)
    assert offending in message
    assert repr(text) in message
    assert _allowed_listed(message)
    if text == "f / y":
        assert "div(a, b)" in message


def test_structure():
    e = P("square(f - y) + 1")
    assert e.size == 6
    assert e.height == 3
    assert e.variables == frozenset({"f", "y"})
    assert [n.op for n in e.nodes()] == ["add", "square", "sub", "f", "y", "const"]
    assert not e.is_leaf and f.is_leaf and Expression.const(1).is_leaf
    assert (f.size, f.height, f.variables) == (1, 0, frozenset({"f"}))
    c = Expression.const(2.0)
    assert (c.size, c.height, c.variables) == (1, 0, frozenset())
    assert P("log(y)").variables == frozenset({"y"})
    for tree in RANDOM_TREES[:100]:
        nodes = list(tree.nodes())
        assert len(nodes) == tree.size
        assert nodes[0] is tree
        assert tree.variables == frozenset(n.op for n in nodes if n.op in VARIABLES)
        assert tree.height == (1 + max(a.height for a in tree.args) if tree.args else 0)


def test_hash_equality_immutability():
    a, b = P("f - y"), P("f-y")
    assert a == b and hash(a) == hash(b) and a is not b
    assert P("f - y") != P("y - f")
    assert Expression.const(1.0) != Expression.const(2.0)
    assert Expression.const(1.0) != f
    assert len({a, b, P("y - f"), P("f * y"), P("y * f")}) == 4
    table = {P("square(f - y)"): "mse"}
    assert table[P("square(f-y)")] == "mse"
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.op = "add"  # type: ignore[misc]


@pytest.mark.parametrize(
    "left, right",
    [
        ("f * y", "y * f"),
        ("f - y", "-(y - f)"),
        ("f + y", "y + f"),
        ("square(f - y)", "square(y - f)"),
        ("abs(f - y)", "abs(y - f)"),
        ("-(y * log(f))", "y * log(f) * -1"),
        ("f - y + y", "f"),
        ("2 * f", "f + f"),
    ],
)
def test_key_merges_equal_expressions(left, right):
    assert P(left).key() == P(right).key()


@pytest.mark.parametrize(
    "left, right",
    [("f - y", "y - f"), ("f * y", "f + y"), ("square(f - y)", "abs(f - y)"), ("f", "y")],
)
def test_key_separates_different_expressions(left, right):
    assert P(left).key() != P(right).key()


def test_canonical_is_the_form_behind_the_key():
    e = P("f - y + y")
    assert e.canonical() == sympy.Symbol("f", real=True)
    assert str(e.canonical()) == e.key()
    assert e.canonical() is P("f - y + y").canonical()  # cached


def test_key_for_large_trees_uses_canonical_form():
    big = P(" + ".join(f"square(f - {k})" for k in range(1, 10)))
    assert big.size > 40
    a = Expression.call("add", big, P("f * y"))
    b = Expression.call("add", big, P("y * f"))
    assert a.key() == b.key()
    assert a.key() != Expression.call("add", big, P("f - y")).key()


_NUMPY = [
    {
        "Min": lambda *a: functools.reduce(np.minimum, a),
        "Max": lambda *a: functools.reduce(np.maximum, a),
    },
    "numpy",
]


def test_sympy_form():
    fs, ys = sympy.Symbol("f", real=True), sympy.Symbol("y", real=True)
    assert P("-(y * log(f))").sympy() == -ys * sympy.log(sympy.Abs(fs))
    assert P("div(f, y)").sympy() == fs / sympy.sqrt(1 + ys**2)
    assert P("2 * f").sympy() == 2 * fs
    assert isinstance(P("2").sympy(), sympy.Integer)
    assert P("0.5").sympy() == sympy.Float(0.5)


def _probe_values(expr: Expression, fv: torch.Tensor, yv: torch.Tensor) -> tuple:
    """Values of expr, and per point the smallest |argument| of log/sqrt/sign nodes."""
    risky = torch.full_like(fv, float("inf"))

    def ev(e: Expression) -> torch.Tensor:
        nonlocal risky
        if e.op == "f":
            return fv
        if e.op == "y":
            return yv
        if e.op == "const":
            return torch.full_like(fv, e.value)
        vals = [ev(a) for a in e.args]
        if e.op in ("log", "sqrt", "sign"):
            risky = torch.minimum(risky, vals[0].abs())
        return PRIMITIVES[e.op].torch(*vals)

    return ev(expr), risky


def test_sympy_form_agrees_with_network_on_random_trees():
    g = torch.Generator().manual_seed(0)
    fv = torch.rand(64, generator=g, dtype=torch.float64) * 4 - 2
    yv = torch.rand(64, generator=g, dtype=torch.float64) * 4 - 2
    checked = 0
    for tree in RANDOM_TREES[::3]:
        if tree.height > 4:
            continue
        form = tree.sympy()
        if form.has(sympy.zoo, sympy.nan, sympy.oo):
            continue
        fs, ys = sympy.symbols("f y", real=True)
        fn = sympy.lambdify((fs, ys), form, modules=_NUMPY)
        with np.errstate(all="ignore"):
            expected = np.broadcast_to(fn(fv.numpy(), yv.numpy()), (64,)).astype(float)
        actual = MetaLossNetwork(tree)(fv, yv).detach()
        direct, risky = _probe_values(tree, fv, yv)
        assert torch.equal(actual, direct), str(tree)
        mask = (risky > 1e-4).numpy() & np.isfinite(expected) & (np.abs(expected) < 1e12)
        if mask.sum() == 0:
            continue
        np.testing.assert_allclose(
            actual.numpy()[mask], expected[mask], rtol=1e-6, atol=1e-6, err_msg=str(tree)
        )
        checked += 1
    assert checked > 50


def test_latex_unsimplified_uses_templates():
    assert P("-(y * log(f))").latex(simplify=False) == r"-\left(y \cdot \log\left|f\right|\right)"
    assert P("div(f, y)").latex(simplify=False) == r"\frac{f}{\sqrt{1 + y^{2}}}"
    assert P("square(f - y)").latex(simplify=False) == r"\left(f - y\right)^{2}"
    assert P("f - (y - 1)").latex(simplify=False) == r"f - \left(y - 1\right)"
    text = P("sign(f) * abs(y) - tanh(sqrt(f)) + min(f, max(y, -1))").latex(simplify=False)
    for command in (r"\operatorname{sign}", r"\left|y\right|", r"\tanh", r"\sqrt", r"\min",
                    r"\max", r"\cdot", "-1"):
        assert command in text, (command, text)


def test_latex_simplified():
    ce = P("-(y * log(f))").latex()
    assert r"\log" in ce and "y" in ce and "f" in ce
    assert ce == P("-(y * log(f))").latex(simplify=True)
    assert ce == sympy.latex(readable(P("-(y * log(f))").sympy()))
    assert r"\frac" in P("div(f, y)").latex() and r"\sqrt" in P("div(f, y)").latex()
    assert P("f - y + y").latex() == "f"
    assert r"\tanh" in P("tanh(f - y)").latex()
    for tree in RANDOM_TREES[:20]:
        assert isinstance(tree.latex(), str) and isinstance(tree.latex(simplify=False), str)


def test_readable_never_longer_than_input():
    fs, ys = sympy.symbols("f y", real=True)
    for form in (sympy.sign(fs - ys), sympy.Max(fs, ys) - 1, (fs - ys) ** 2 + 2 * fs * ys):
        assert sympy.count_ops(readable(form)) <= sympy.count_ops(form)


# -- the library of known losses, written in the same syntax ---------------------------------


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_library_losses_parse_and_use_both_variables(kind):
    assert check_task_kind(kind) == kind
    assert baseline(kind) == P(BASELINES[kind])
    losses = known_losses(kind)
    assert losses[0] == baseline(kind)
    assert len(losses) == len(KNOWN_LOSSES[kind])
    for text, e in zip(KNOWN_LOSSES[kind].values(), losses, strict=True):
        assert e.variables == frozenset({"y", "f"}), text
        assert P(str(e)) == e
    assert len({e.key() for e in losses}) == len(losses)


def test_library_baselines_and_errors():
    assert str(baseline("classification")) == "-(y * log(f))"
    assert str(baseline("regression")) == "square(f - y)"
    with pytest.raises(ValueError, match="classification"):
        baseline("ranking")
    with pytest.raises(ValueError, match="'ranking'"):
        known_losses("ranking")
