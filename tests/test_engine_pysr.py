"""The PySR engine: Julia code generation, equation strings, settings, availability.

Everything but the ``julia``-marked tests runs without Julia or PySR.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import sympy

from symloss.config import Settings
from symloss.engines import SearchContext, get_engine
from symloss.engines import pysr as engine
from symloss.engines.pysr import (
    CALLBACK_NAME,
    PENALTY,
    expression_from_pysr,
    expression_to_pysr,
    julia_objective_source,
    julia_operators,
    julia_operators_source,
    operator_mismatches,
    pysr_settings,
)
from symloss.expression import Expression
from symloss.library import KNOWN_LOSSES
from symloss.primitives import PRIMITIVES, VARIABLES
from symloss.records import OK, REJECTED, Evaluation, GenerationStats

CUSTOM = [p for p in PRIMITIVES.values() if p.julia_definition]
_OPENERS = {"function", "begin", "if", "let", "for", "while", "module", "do", "try", "quote"}


def block_balance(source: str) -> None:
    """Assert Julia blocks (``function``/``begin``/``if``... ``end``) and brackets nest."""
    code = re.sub(r'"[^"]*"', '""', re.sub(r"#[^\n]*", "", source))
    stack: list[str] = []
    for token in re.findall(r"[A-Za-z_]\w*|[()\[\]{}]", code):
        if token in _OPENERS or token in "([{":
            stack.append(token)
        elif token == "end" or token in ")]}":
            assert stack, f"unmatched {token!r}"
            opener = stack.pop()
            expected = {")": "(", "]": "[", "}": "{"}.get(token)
            assert (opener == expected) if expected else opener in _OPENERS, (opener, token)
    assert not stack, f"unclosed {stack}"


def e(text: str) -> Expression:
    return Expression.parse(text)


# -- Julia source ------------------------------------------------------------------------
def test_block_balance_checker_catches_errors():
    block_balance("function g(x)\n    if x > 0\n        (x)\n    end\nend")
    for bad in ("function g(x)\n x", "begin (x end", "end", "f(x))"):
        with pytest.raises(AssertionError):
            block_balance(bad)


def test_operator_lists_follow_the_primitive_table():
    assert julia_operators() == {
        2: ["+", "-", "*", "aq", "min", "max"],
        1: ["sign", "square", "abs", "plog", "psqrt", "tanh"],
    }


def test_operators_source_defines_each_custom_operator_once():
    source = julia_operators_source()
    block_balance(source)
    for p in CUSTOM:
        assert source.count(p.julia_definition) == 1
        assert source.count(f"if !isdefined(Main, :{p.julia})") == 1
    defined = re.findall(r"^\s*([A-Za-z_]\w*)\(.*\)\s*=", source, flags=re.M)
    assert sorted(defined) == sorted(p.julia for p in CUSTOM)
    assert {p.julia for p in CUSTOM} == {"aq", "square", "plog", "psqrt"}
    assert source.lstrip().startswith("begin") and source.rstrip().endswith("end")


def test_objective_source_calls_python_under_the_gil():
    source = julia_objective_source("my_callback")
    block_balance(source)
    assert source.startswith(f"function {engine.OBJECTIVE_NAME}(tree, dataset::Dataset{{T,L}}")
    assert 'string_tree(tree, options; variable_names=["y", "f"])' in source
    assert "PythonCall.GIL.@lock" in source
    assert "PythonCall.pyconvert(Float64, my_callback(text))" in source
    assert source.count("function") == 1 and "return L(fitness)" in source
    with pytest.raises(ValueError, match="Julia identifier"):
        julia_objective_source("not a name")


def test_operator_mismatches_finds_a_wrong_binding():
    reference = {
        "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
        "aq": lambda a, b: a / math.sqrt(1 + b * b), "min": min, "max": max,
        "sign": lambda a: math.copysign(1.0, a), "square": lambda a: a * a, "abs": abs,
        "plog": lambda a: math.log(max(abs(a), 1e-7)),
        "psqrt": lambda a: math.sqrt(max(abs(a), 1e-7)), "tanh": math.tanh,
    }
    assert operator_mismatches(lambda name, args: reference[name](*args)) == []
    wrong = dict(reference, square=lambda a: a**3)
    assert [m.split("(")[0] for m in operator_mismatches(lambda n, a: wrong[n](*a))] == [
        "square"
    ]


# -- equation strings --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("((y * plog(f)) * -1.0)", "y * log(f) * -1"),
        ("((y * log(f)) * -1.0)", "y * log(f) * -1"),
        ("aq(f, y)", "div(f, y)"),
        ("plog(f)", "log(f)"),
        ("psqrt(y)", "sqrt(y)"),
        ("square(f - y)", "square(f - y)"),
        ("(tanh(sign(f)) + abs(y))", "tanh(sign(f)) + abs(y)"),
        ("min(max(y, f), -1.0)", "min(max(y, f), -1)"),
        ("(f - -1.0)", "f - (-1)"),
        ("(-1.0 * square(y))", "-1 * square(y)"),
        ("(y + 1.0e-7)", "y + 1e-07"),
        ("(f * 2.5f-3)", "f * 0.0025"),
        ("(y * 3.0e+2)", "y * 300"),
        ("psqrt(x0 - x1)", "sqrt(y - f)"),
        ("0.5", "0.5"),
    ],
)
def test_expression_from_pysr(text, expected):
    assert expression_from_pysr(text) == e(expected)


def test_every_operator_converts():
    text = (
        "((((y + f) - (y * f)) + aq(min(y, f), max(y, f)))"
        " * ((sign(y) + square(f)) + ((abs(y) + plog(f)) + (psqrt(y) - tanh(f)))))"
    )
    found = {node.op for node in expression_from_pysr(text).nodes()}
    assert found == set(PRIMITIVES) | set(VARIABLES)


@pytest.mark.parametrize(
    "text",
    [
        *(t for losses in KNOWN_LOSSES.values() for t in losses.values()),
        "div(min(y, -0.5), max(f, 1e-07)) - tanh(sign(abs(y * f)))",
        "sqrt(square(f) - 2.5) * -(y - log(1 + f))",
    ],
)
def test_round_trip_through_pysr_text(text):
    expression = e(text)
    assert expression_from_pysr(expression_to_pysr(expression)) == expression
    assert expression_from_pysr(str(expression)) == expression


def test_pysr_text_uses_julia_names_only():
    text = expression_to_pysr(e("-(y * log(div(f, sqrt(y))))"))
    assert text == "((-1.0) * (y * plog(aq(f, psqrt(y)))))"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("cos(y)", "unknown operator or variable 'cos'"),
        ("exp(f - y)", "'exp'"),
        ("(y / f)", "symbol '/'"),
        ("(y ^ 2.0)", "symbol '\\^'"),
        ("(Inf * y)", "not finite"),
        ("x2 + y", "'x2'"),
        ("aq(y)", "div takes 2"),
        ("", "empty"),
    ],
)
def test_unknown_operator_is_a_clear_error(text, match):
    with pytest.raises(ValueError, match=match) as info:
        expression_from_pysr(text)
    assert "PySR operators are" in str(info.value) and "aq" in str(info.value)


# -- settings ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings",
    [Settings(), Settings(population_size=12, generations=6), Settings(population_size=5,
                                                                        generations=3)],
)
def test_settings_mapping(settings):
    kwargs = pysr_settings(settings, seed=7)
    size, generations = settings.population_size, settings.generations
    assert kwargs["max_evals"] == size * generations
    assert kwargs["populations"] == 1 and kwargs["population_size"] == size
    assert kwargs["niterations"] == generations
    children = kwargs["ncycles_per_iteration"] * math.ceil(
        size / kwargs["tournament_selection_n"]
    )
    assert size <= children < size + kwargs["tournament_selection_n"] + 4
    assert kwargs["tournament_selection_n"] <= size and kwargs["topn"] <= size
    assert kwargs["maxdepth"] == settings.height_limit + 1
    assert 7 <= kwargs["maxsize"] <= 40
    assert kwargs["parallelism"] == "serial" and kwargs["deterministic"] is True
    assert kwargs["random_state"] == 7
    assert kwargs["should_optimize_constants"] is False
    assert kwargs["loss_scale"] == "linear"
    assert kwargs["batching"] is False and kwargs["precision"] == 64
    assert kwargs["loss_function"] == julia_objective_source(CALLBACK_NAME)
    assert kwargs["binary_operators"] == julia_operators()[2]
    assert kwargs["unary_operators"] == julia_operators()[1]


def test_sympy_mappings_match_the_primitive_table():
    mappings = pysr_settings(Settings(), 0)["extra_sympy_mappings"]
    assert set(mappings) == {p.julia for p in CUSTOM}
    a, b = sympy.symbols("a b", real=True)
    for p in CUSTOM:
        args = (a, b)[: p.arity]
        assert sympy.simplify(mappings[p.julia](*args) - p.sympy(*args)) == 0


def test_maxsize_and_depth_follow_height_limit():
    small = pysr_settings(Settings(height_limit=2, init_min_height=1, init_max_height=2), 0)
    assert small["maxdepth"] == 3 and small["maxsize"] == 7
    assert pysr_settings(Settings(height_limit=4), 0)["maxsize"] == 31


def test_dummy_dataset_has_two_features():
    x, y = engine.dummy_dataset()
    assert x.shape == (8, 2) and y.shape == (8,)
    assert np.isfinite(x).all()


def test_objective_value_is_finite():
    ok = Evaluation("f - y", "f - y", OK, fitness=0.25)
    rejected = Evaluation("y", "y", REJECTED, reason="missing variable: f")
    huge = Evaluation("f", "f", OK, fitness=1e30)
    assert engine.objective_value(ok) == 0.25
    assert engine.objective_value(rejected) == PENALTY == engine.objective_value(huge)


def _context(evaluate, reported):
    settings = Settings(population_size=3, generations=2)
    return SearchContext(kind="regression", settings=settings, seed=0, seeds=[],
                         evaluate=evaluate, on_generation=reported.append)


def test_objective_scores_each_expression_once_and_reports_generations():
    calls: list[Expression] = []
    reported: list[GenerationStats] = []

    def evaluate(expressions):
        calls.extend(expressions)
        return _score(expressions)

    objective = engine._Objective(_context(evaluate, reported))
    assert objective("square(f - y)") == 0.0
    assert objective("(y * f)") > 0
    assert objective("square(f - y)") == 0.0  # repeated text
    assert objective("square(x1 - x0)") == 0.0  # same expression, other text
    assert objective("cos(y)") == PENALTY  # unreadable: not sent to the evaluator
    assert objective("y") == PENALTY  # rejected by the evaluator
    assert calls == [e("square(f - y)"), e("y * f"), e("y")]
    assert len(reported) == 1 and reported[0].evaluated == 3
    assert reported[0].best_expression == "square(f - y)"
    assert reported[0].rejected == {"missing variable": 1}
    objective("aq(f, y)")
    objective.flush()
    objective.flush()  # nothing pending: no empty generation
    assert [s.generation for s in objective.history] == [0, 1] and reported == objective.history
    assert objective.history[1].evaluated == 1
    assert objective.history[1].best_fitness == 0.0  # the best so far carries over
    assert objective.history[1].best_expression == "square(f - y)"


def test_objective_keeps_the_evaluator_error():
    def evaluate(expressions):
        raise KeyError("broken evaluator")

    objective = engine._Objective(_context(evaluate, []))
    with pytest.raises(KeyError, match="broken evaluator"):
        objective("(y * f)")
    assert isinstance(objective.error, KeyError)
    with pytest.raises(RuntimeError, match="earlier evaluation failed"):
        objective("(y - f)")


# -- availability and the Julia project -----------------------------------------------------
def test_missing_pysr_gives_one_actionable_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pysr", None)
    monkeypatch.delenv(engine.JULIA_PROJECT_ENV, raising=False)
    eng = get_engine("pysr")
    assert eng.name == "pysr"
    with pytest.raises(ImportError) as info:
        eng.check_available()
    message = str(info.value)
    assert "pip install 'symloss[pysr]'" in message
    assert "Julia" in message and "internet" in message and "PATH" in message
    assert engine.JULIA_PROJECT_ENV not in os.environ


def test_julia_project_env_is_set_unless_user_chose(monkeypatch, tmp_path):
    monkeypatch.delenv(engine.JULIA_PROJECT_ENV, raising=False)
    assert engine.use_julia_project() == str(engine.JULIA_PROJECT_DIR)
    assert os.environ[engine.JULIA_PROJECT_ENV] == str(engine.JULIA_PROJECT_DIR)
    monkeypatch.setenv(engine.JULIA_PROJECT_ENV, str(tmp_path))
    assert engine.use_julia_project() is None
    assert os.environ[engine.JULIA_PROJECT_ENV] == str(tmp_path)


def test_project_toml_pins_symbolic_regression():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((engine.JULIA_PROJECT_DIR / "Project.toml").read_text())
    assert project["deps"]["SymbolicRegression"] == engine.SYMBOLIC_REGRESSION_UUID
    assert project["compat"]["SymbolicRegression"] == engine.SYMBOLIC_REGRESSION_COMPAT
    assert engine.SYMBOLIC_REGRESSION_COMPAT.lstrip("~=^") == engine.PYSR_VERSION


def test_importing_the_engine_module_does_not_import_pysr():
    code = (
        "import sys, symloss, symloss.engines.pysr\n"
        "assert not {'pysr', 'juliacall'} & set(sys.modules), sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


# -- a real search (needs Julia and PySR) -----------------------------------------------------
def _julia_skip_reason() -> str | None:
    if shutil.which("julia") is None:
        return "Julia is not on PATH (install Julia 1.10 to run the PySR engine tests)"
    try:
        if importlib.util.find_spec("pysr") is None:
            return "PySR is not installed (pip install 'symloss[pysr]')"
    except ValueError:
        return "pysr is not importable"
    return None


def _score(expressions):
    """Deterministic stand-in for the evaluator: distance from squared error on a grid."""
    y, f = np.meshgrid(np.linspace(0, 1, 5), np.linspace(0.05, 0.95, 5))
    out = []
    for expression in expressions:
        if expression.variables != set(VARIABLES):
            out.append(Evaluation(str(expression), str(expression), REJECTED,
                                  reason="missing variable: needs y and f"))
            continue
        value = sympy.lambdify(sympy.symbols("y f", real=True), expression.sympy(), "numpy")(y, f)
        fitness = float(np.mean(np.abs(np.broadcast_to(value, y.shape) - (f - y) ** 2)))
        status = OK if math.isfinite(fitness) else REJECTED
        out.append(Evaluation(str(expression), str(expression), status,
                              fitness=fitness if math.isfinite(fitness) else math.inf,
                              reason="" if status == OK else "non-finite: fitness"))
    return out


@pytest.mark.julia
@pytest.mark.skipif(_julia_skip_reason() is not None, reason=str(_julia_skip_reason()))
def test_real_search_end_to_end():
    eng = get_engine("pysr")
    eng.check_available()
    settings = Settings(population_size=10, generations=3, height_limit=4)
    evaluated: list[Expression] = []
    reported: list[GenerationStats] = []

    def evaluate(expressions):
        evaluated.extend(expressions)
        return _score(expressions)

    context = SearchContext(
        kind="regression", settings=settings, seed=3,
        seeds=[e("abs(f - y)"), e("square(f - y)")], evaluate=evaluate,
        on_generation=reported.append,
    )
    history = eng.search(context)
    assert history and history == reported
    assert all(isinstance(s, GenerationStats) for s in history)
    assert [s.generation for s in history] == list(range(len(history)))
    assert sum(s.evaluated for s in history) == len(evaluated) == len(set(evaluated))
    assert len(evaluated) <= 2 * settings.population_size * settings.generations
    assert e("square(f - y)") in evaluated  # the seed went in as a PySR guess
    assert min(s.best_fitness for s in history) == pytest.approx(0.0, abs=1e-12)
