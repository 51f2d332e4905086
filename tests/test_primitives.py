"""The primitive table: one row per function, every representation consistent."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import string

import numpy as np
import pytest
import sympy
import torch

from symloss.primitives import (
    CONSTANTS,
    EPS,
    INFIX,
    PREDICTION,
    PRIMITIVES,
    TARGET,
    VARIABLES,
    Primitive,
)

NAMES = sorted(PRIMITIVES)
PROTECTED = ("div", "log", "sqrt")
_NUMPY = [
    {
        "Min": lambda *a: functools.reduce(np.minimum, a),
        "Max": lambda *a: functools.reduce(np.maximum, a),
    },
    "numpy",
]


def _symbols(n: int) -> list[sympy.Symbol]:
    return list(sympy.symbols("a b", real=True))[:n]


def _inputs(n: int, seed: int, dtype=torch.float64) -> list[torch.Tensor]:
    """Random inputs with |x| in [0.1, 3], away from the protection threshold."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        mag = 0.1 + 2.9 * torch.rand(256, generator=g, dtype=dtype)
        sign = torch.where(torch.rand(256, generator=g) < 0.5, -1.0, 1.0).to(dtype)
        out.append(mag * sign)
    return out


def test_table_has_the_twelve_functions_of_the_design():
    assert set(PRIMITIVES) == {
        "add", "sub", "mul", "div", "min", "max",
        "sign", "square", "abs", "log", "sqrt", "tanh",
    }
    assert all(isinstance(p, Primitive) and p.name == name for name, p in PRIMITIVES.items())
    arities = {name: p.arity for name, p in PRIMITIVES.items()}
    assert {n for n, a in arities.items() if a == 2} == {"add", "sub", "mul", "div", "min", "max"}
    assert {n for n, a in arities.items() if a == 1} == {
        "sign", "square", "abs", "log", "sqrt", "tanh"
    }


def test_terminals():
    assert TARGET == "y" and PREDICTION == "f"
    assert VARIABLES == ("y", "f")
    assert CONSTANTS == (1.0, -1.0)
    assert EPS == 1e-7


def test_infix_map():
    assert INFIX == {"+": "add", "-": "sub", "*": "mul"}


def test_primitive_is_frozen():
    with pytest.raises(AttributeError):
        PRIMITIVES["add"].arity = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", NAMES)
def test_sympy_callable_takes_arity_arguments(name):
    p = PRIMITIVES[name]
    assert p.arity in (1, 2)
    form = p.sympy(*_symbols(p.arity))
    assert isinstance(form, sympy.Basic)
    assert form.free_symbols <= set(_symbols(2))
    if inspect.isfunction(p.sympy):
        assert len(inspect.signature(p.sympy).parameters) == p.arity
    else:  # a SymPy function class
        nargs = p.sympy.nargs
        assert p.arity in nargs


@pytest.mark.parametrize("name", NAMES)
def test_torch_callable_takes_arity_arguments(name):
    p = PRIMITIVES[name]
    args = _inputs(p.arity, seed=0)
    out = p.torch(*args)
    assert out.shape == args[0].shape and out.dtype == args[0].dtype
    with pytest.raises(TypeError):
        p.torch(*_inputs(p.arity + 1, seed=1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", NAMES)
def test_torch_form_agrees_with_sympy_form(name, dtype):
    p = PRIMITIVES[name]
    symbols = _symbols(p.arity)
    fn = sympy.lambdify(symbols, p.sympy(*symbols), modules=_NUMPY)
    for seed in range(3):
        args = _inputs(p.arity, seed=seed, dtype=dtype)
        expected = np.broadcast_to(fn(*(a.double().numpy() for a in args)), (256,))
        actual = p.torch(*args).double().numpy()
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


def test_protected_forms_by_value():
    x = torch.tensor([0.0, 1e-12, -1e-12, -4.0, 4.0, -math.e], dtype=torch.float64)
    log = PRIMITIVES["log"].torch(x)
    sqrt = PRIMITIVES["sqrt"].torch(x)
    floor_log, floor_sqrt = math.log(EPS), math.sqrt(EPS)
    expected_log = [floor_log, floor_log, floor_log, math.log(4), math.log(4), 1.0]
    expected_sqrt = [floor_sqrt, floor_sqrt, floor_sqrt, 2.0, 2.0, math.sqrt(math.e)]
    torch.testing.assert_close(log, torch.tensor(expected_log, dtype=torch.float64))
    torch.testing.assert_close(sqrt, torch.tensor(expected_sqrt, dtype=torch.float64))
    a = torch.tensor([3.0, -3.0, 0.0, 2.0], dtype=torch.float64)
    b = torch.tensor([4.0, 0.0, 0.0, -1e30], dtype=torch.float64)
    torch.testing.assert_close(
        PRIMITIVES["div"].torch(a, b),
        torch.tensor([3.0 / math.sqrt(17.0), -3.0, 0.0, 2e-30], dtype=torch.float64),
    )


_HARD = [0.0, 1e-30, 1e-12, 1e-8, EPS, 1e-6, -1e-30, -1e-12, -EPS, -1.0, -1e6, 1e6]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", PROTECTED)
def test_protected_ops_finite_values_and_gradients(name, dtype):
    p = PRIMITIVES[name]
    hard = torch.tensor(_HARD, dtype=dtype)
    if p.arity == 1:
        args = [hard.clone().requires_grad_(True)]
    else:  # every pair of hard values, numerator and denominator
        a, b = torch.meshgrid(hard, hard, indexing="ij")
        args = [a.reshape(-1).clone().requires_grad_(True),
                b.reshape(-1).clone().requires_grad_(True)]
    out = p.torch(*args)
    assert torch.isfinite(out).all(), out
    out.sum().backward()
    for a in args:
        assert a.grad is not None
        assert torch.isfinite(a.grad).all(), a.grad


def test_abs_is_torch_abs_in_value_and_gradient():
    x = torch.tensor([0.0, -0.0, 1e-40, -1e-40, -1.5, 2.0, math.inf, -math.inf, math.nan],
                     dtype=torch.float64, requires_grad=True)
    ours, theirs = PRIMITIVES["abs"].torch(x), torch.abs(x)
    torch.testing.assert_close(ours, theirs, equal_nan=True)
    (grad_ours,) = torch.autograd.grad(ours.sum(), x)
    (grad_theirs,) = torch.autograd.grad(theirs.sum(), x)
    torch.testing.assert_close(grad_ours, grad_theirs, equal_nan=True)


def _node_names(tensor: torch.Tensor) -> set[str]:
    names, stack, seen = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(node.name())
        stack.extend(child for child, _ in node.next_functions)
    return names


@pytest.mark.parametrize("name", NAMES)
def test_first_derivative_has_no_path_through_sign(name):
    # torch's sign backward returns an "efficient zero tensor", whose every use in a
    # meta-gradient runs Python meta kernels (see primitives._abs)
    x = torch.linspace(-2.0, 2.0, 9, dtype=torch.float64, requires_grad=True)
    args = (x,) if PRIMITIVES[name].arity == 1 else (x, torch.linspace(1.0, -1.0, 9))
    (grad,) = torch.autograd.grad(PRIMITIVES[name].torch(*args).sum(), x, create_graph=True,
                                  allow_unused=True)
    assert grad is None or not any("Sgn" in n or "Sign" in n for n in _node_names(grad))


@pytest.mark.parametrize("name", ["log", "sqrt"])
def test_protected_ops_are_even(name):
    x = _inputs(1, seed=4)[0]
    torch.testing.assert_close(PRIMITIVES[name].torch(x), PRIMITIVES[name].torch(-x))


@pytest.mark.parametrize("name", NAMES)
def test_latex_template_formats_with_placeholders(name):
    p = PRIMITIVES[name]
    marks = ["AAA", "BBB"][: p.arity]
    text = p.latex.format(*marks)
    for mark in marks:
        assert mark in text
    assert "{0}" not in text and "{1}" not in text
    if p.arity == 1:
        assert "BBB" not in p.latex.format("AAA", "BBB")
    else:
        assert text.index("AAA") < text.index("BBB")
    # braces in the result are balanced, so it is valid LaTeX grouping
    assert text.count("{") == text.count("}")
    assert text.count(r"\left") == text.count(r"\right")


def test_latex_templates_render_expected_commands():
    fmt = {n: PRIMITIVES[n].latex.format("a", "b") for n in NAMES}
    assert r"\frac" in fmt["div"] and r"\sqrt" in fmt["div"]
    assert r"\log" in fmt["log"]
    assert r"\sqrt" in fmt["sqrt"]
    assert r"\tanh" in fmt["tanh"]
    assert r"\min" in fmt["min"] and r"\max" in fmt["max"]
    assert "sign" in fmt["sign"]
    assert fmt["add"] == "a + b" and fmt["sub"] == "a - b"
    assert r"\cdot" in fmt["mul"]


@pytest.mark.parametrize("name", NAMES)
def test_julia_names(name):
    p = PRIMITIVES[name]
    assert p.julia and p.julia.strip() == p.julia
    if p.infix:
        assert p.julia == p.infix
    if p.julia_definition:
        assert p.julia_definition.startswith(f"{p.julia}(")
        assert "=" in p.julia_definition
        assert p.julia_definition.count("(") == p.julia_definition.count(")")
        params = p.julia_definition.split("(", 1)[1].split(")", 1)[0].split(",")
        assert len(params) == p.arity
    else:
        assert p.julia[0] in string.ascii_letters + "+-*"


def test_julia_names_are_unique_and_protected_ops_are_custom():
    julia = [p.julia for p in PRIMITIVES.values()]
    assert len(set(julia)) == len(julia)
    for name in PROTECTED:
        assert PRIMITIVES[name].julia_definition, name


def test_only_add_sub_mul_are_infix():
    assert {n for n, p in PRIMITIVES.items() if p.infix} == {"add", "sub", "mul"}


# -- the numpy forms with their derivatives (Primitive.dual) -------------------------------

# hard values: zero, both sides of the protection floor, ties between operands
_DUAL_VALUES = [0.0, 1e-8, -1e-8, EPS, -EPS, 1e-6, 0.5, -0.5, 1.0, -1.0, 2.0, -3.0, 40.0]


def _dual_operands(dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair of hard values (so every tie), as flat float tensors ``a`` and ``b``."""
    grid = torch.tensor(_DUAL_VALUES, dtype=dtype)
    a, b = torch.meshgrid(grid, grid, indexing="ij")
    return a.reshape(-1), b.reshape(-1)


def _jvp(name: str, args: list[torch.Tensor], tangents: list[torch.Tensor]) -> torch.Tensor:
    """Autograd's directional derivative of the torch form: the sum of gradient * tangent
    over the operands (the gradient of an elementwise form is its partial derivative)."""
    leaves = [a.clone().requires_grad_(True) for a in args]
    grads = torch.autograd.grad(PRIMITIVES[name].torch(*leaves).sum(), leaves)
    return sum(grad * tangent for grad, tangent in zip(grads, tangents, strict=True))


def test_every_primitive_has_a_dual():
    for p in PRIMITIVES.values():
        assert callable(p.dual), p.name
    fields = {f.name: f for f in dataclasses.fields(Primitive)}
    assert fields["dual"].kw_only and fields["dual"].default is dataclasses.MISSING


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", NAMES)
def test_dual_value_is_the_torch_value(name, dtype):
    p = PRIMITIVES[name]
    args = list(_dual_operands(dtype))[: p.arity]
    with np.errstate(all="ignore"):
        value, derivative = p.dual(*(x for a in args for x in (a.numpy(), None)))
    assert derivative is None  # no operand depends on f
    assert value.dtype == args[0].numpy().dtype
    torch.testing.assert_close(torch.from_numpy(np.asarray(value)), p.torch(*args),
                               rtol=1e-6 if dtype == torch.float32 else 1e-15, atol=0)


@pytest.mark.parametrize("name, varying", [
    *((name, "a") for name in NAMES),
    *((name, v) for name in NAMES if PRIMITIVES[name].arity == 2 for v in ("b", "ab")),
])
def test_dual_derivative_is_autograd_gradient(name, varying):
    """Forward mode with tangents on the ``varying`` operands (the others have derivative
    ``None``) equals autograd's gradient times the tangents, at kinks, ties and the
    protection floor too (float64, so that no rounding hides a wrong branch)."""
    p = PRIMITIVES[name]
    args = list(_dual_operands(torch.float64))[: p.arity]
    g = torch.Generator().manual_seed(0)
    tangents = [torch.randn(args[0].shape, generator=g, dtype=torch.float64)
                if "ab"[i] in varying else torch.zeros_like(args[0]) for i in range(p.arity)]
    derivatives = [t.numpy() if "ab"[i] in varying else None for i, t in enumerate(tangents)]
    with np.errstate(all="ignore"):
        _, derivative = p.dual(*(x for a, d in zip(args, derivatives, strict=True)
                                 for x in (a.numpy(), d)))
    expected = _jvp(name, args, tangents)
    if derivative is None:  # zero
        derivative = np.zeros_like(expected.numpy())
    torch.testing.assert_close(torch.from_numpy(derivative), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["min", "max"])
def test_dual_min_max_against_a_literal_is_clamp(name):
    """With a Python float operand the torch form is torch.clamp, whose gradient at the
    bound depends on the torch version; between tensors (a constant subtree is a 0-dim
    tensor) torch.minimum/maximum split it on a tie."""
    p = PRIMITIVES[name]
    a, da = np.array([0.5, 1.0, 2.0]), np.ones(3)
    leaf = torch.tensor(a, requires_grad=True)
    (clamp,) = torch.autograd.grad(p.torch(leaf, 1.0).sum(), leaf)
    (split,) = torch.autograd.grad(p.torch(leaf, torch.tensor(1.0, dtype=torch.float64)).sum(),
                                   leaf)
    assert split[1] == 0.5
    np.testing.assert_array_equal(p.dual(a, da, 1.0, None)[1], clamp.numpy())
    np.testing.assert_array_equal(p.dual(1.0, None, a, da)[1], clamp.numpy())
    np.testing.assert_array_equal(p.dual(a, da, np.asarray(1.0), None)[1], split.numpy())
