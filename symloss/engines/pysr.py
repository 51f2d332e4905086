"""The ``pysr`` engine: SymbolicRegression.jl (through PySR) drives the search.

PySR evolves trees over two features named ``y`` and ``f`` on a small dummy dataset;
its objective is a Julia function generated here (:func:`julia_objective_source`) that
prints the candidate tree as text and calls back into Python, where the text becomes an
:class:`~symloss.expression.Expression` (:func:`expression_from_pysr`) and is scored by
``context.evaluate``. The Julia operators are generated from the primitive table
(:func:`julia_operators_source`), so both sides compute the same functions.

``pysr`` (and with it Julia) is imported only when this engine is used, after torch:
importing torch after juliacall can crash on conflicting native libraries.

Decisions
---------
- **Penalty**: SymbolicRegression.jl compares losses arithmetically, so a rejected
  candidate (infinite fitness) is reported to it as :data:`PENALTY`, a large finite
  number; the :class:`~symloss.records.Evaluation` keeps the true ``inf``.
- **Budget**: at most ``population_size * generations`` evaluations (PySR's
  ``max_evals``); one population of ``population_size``, and per iteration about
  ``population_size`` children, so one PySR iteration is about one generation.
- **History**: a :class:`~symloss.records.GenerationStats` per ``population_size``
  distinct candidates evaluated (PySR has no generations of its own); its best is the
  best found so far (SymbolicRegression.jl keeps it in its hall of fame, and symloss
  does not score it twice), its median that of the new candidates.
- **Repeats**: SymbolicRegression.jl re-scores the same tree often; each distinct
  expression is sent to the evaluator once, later requests reuse its fitness.
- **No resume**: PySR's state is a Julia object, not JSON; a run always starts afresh.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import sympy

from symloss.config import Settings
from symloss.engines.base import Engine, SearchContext, is_installed, refuse_class_prior
from symloss.expression import Expression
from symloss.primitives import PRIMITIVES, VARIABLES
from symloss.records import Evaluation, GenerationStats, generation_stats

logger = logging.getLogger(__name__)

PYSR_VERSION = "2.7.2"
"""The PySR release this engine was written against (its parameter names)."""

SYMBOLIC_REGRESSION_COMPAT = "~2.7.2"
"""SymbolicRegression.jl version that PySR 2.7.2 requires (its ``juliapkg.json``)."""

SYMBOLIC_REGRESSION_UUID = "8254be44-1295-4e6a-a16d-46603ac705cb"

JULIA_PROJECT_ENV = "PYTHON_JULIAPKG_PROJECT"
"""juliapkg's variable naming the Julia project where packages are installed."""

JULIA_PROJECT_DIR = Path(__file__).resolve().parents[2] / "julia_env"
"""The pinned Julia project of a source checkout (absent from an installed wheel)."""

PENALTY = 1e10
"""Loss reported to SymbolicRegression.jl for a rejected or non-finite candidate."""

CALLBACK_NAME = "symloss_pysr_callback"
"""Julia global (in ``Main``) holding the Python objective during a search."""

OBJECTIVE_NAME = "symloss_pysr_objective"
"""Name of the generated Julia objective function."""

MAX_SIZE = 40
"""Cap on PySR's ``maxsize`` (PySR warns that larger sizes are exponentially slower)."""

MIN_SIZE = 7
"""PySR's smallest allowed ``maxsize``."""

_INSTALL_HINT = (
    "Julia itself is downloaded by juliapkg the first time PySR is imported, which needs "
    "internet; offline, install Julia 1.10+ yourself (https://julialang.org/install) and "
    "put `julia` on PATH (or set PYTHON_JULIAPKG_EXE). Check with: python -c 'import pysr'."
)
MISSING_MESSAGE = (
    "engine='pysr' needs PySR, which is not installed: pip install 'symloss[pysr]'. "
    + _INSTALL_HINT
)
JULIA_FAILED_MESSAGE = (
    "engine='pysr' could not start Julia through PySR ({cause}). " + _INSTALL_HINT
)

_INFIX_JULIA = ("+", "-", "*")
_PYSR_INDEX_NAMES = {"x0": VARIABLES[0], "x1": VARIABLES[1]}
_FROM_JULIA = {p.julia: p.name for p in PRIMITIVES.values()}
_TOKEN = re.compile(
    r"\s*(?:(\d+(?:\.\d*)?(?:[eEf][+-]?\d+)?|\.\d+(?:[eEf][+-]?\d+)?)|([A-Za-z_]\w*)|(\S))"
)
_OPTIONAL_PARAMETERS = ("input_stream",)


# -- Julia source ------------------------------------------------------------------------
def julia_operators() -> dict[int, list[str]]:
    """PySR operator names by arity, in primitive-table order."""
    return {
        arity: [p.julia for p in PRIMITIVES.values() if p.arity == arity] for arity in (2, 1)
    }


def julia_operators_source() -> str:
    """Julia source defining the custom operators (``aq``, ``plog``, ...) in ``Main``.

    Each definition comes from the primitive table's ``julia_definition``. A name already
    bound in ``Main`` is left alone: SymbolicRegression.jl exports ``square``, and
    redefining an imported name is an error in Julia. The engine then checks numerically
    that every operator computes the table's function (:func:`operator_mismatches`).
    """
    lines = [
        "begin",
        "    # symloss primitives as Julia operators, generated from symloss.primitives",
    ]
    for p in PRIMITIVES.values():
        if p.julia_definition:
            lines += [
                f"    if !isdefined(Main, :{p.julia})",
                f"        {p.julia_definition}",
                "    end",
            ]
    lines.append("end")
    return "\n".join(lines) + "\n"


def julia_objective_source(callback_name: str = CALLBACK_NAME) -> str:
    """Julia source of PySR's ``loss_function``: score a tree with a Python callable.

    The tree is printed with the variable names ``y`` and ``f``; ``callback_name`` is a
    global in ``Main`` holding a Python callable ``text -> float``. The search runs
    without the GIL, so the call takes it with ``PythonCall.GIL.@lock``.
    """
    if not re.fullmatch(r"[A-Za-z_]\w*", callback_name):
        raise ValueError(f"callback_name must be a Julia identifier, got {callback_name!r}")
    names = ", ".join(f'"{v}"' for v in VARIABLES)
    return (
        f"function {OBJECTIVE_NAME}(tree, dataset::Dataset{{T,L}}, options)::L where {{T,L}}\n"
        f"    text = string_tree(tree, options; variable_names=[{names}])\n"
        "    fitness = PythonCall.GIL.@lock begin\n"
        f"        PythonCall.pyconvert(Float64, {callback_name}(text))\n"
        "    end\n"
        "    return L(fitness)\n"
        "end\n"
    )


def operator_mismatches(call: Callable[[str, tuple[float, ...]], float]) -> list[str]:
    """Operators whose Julia value differs from the primitive table's SymPy form.

    ``call(julia_name, args)`` evaluates a Julia operator. Points avoid the protected
    regions, where the SymPy forms are the unprotected mathematics.
    """
    points = {1: [(-1.7,), (0.3,), (2.5,)], 2: [(-1.7, 0.9), (0.3, -2.2), (2.5, 2.5)]}
    wrong = []
    for p in PRIMITIVES.values():
        for args in points[p.arity]:
            expected = float(p.sympy(*(sympy.Float(a) for a in args)))
            got = float(call(p.julia, args))
            if not math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12):
                wrong.append(f"{p.julia}{args} = {got}, expected {expected} ({p.name})")
                break
    return wrong


# -- equation strings <-> Expression ----------------------------------------------------
def expression_from_pysr(text: str) -> Expression:
    """The :class:`~symloss.expression.Expression` of a PySR equation string.

    Reads SymbolicRegression.jl's printing (``"((y * plog(f)) * -1.0)"``,
    ``"aq(f, y)"``, ``1.0e-7``, Float32 literals such as ``2.5f-3``): Julia operator
    names map back to symloss primitives, symloss's own names are accepted too,
    and PySR's default feature names ``x0``/``x1`` mean ``y``/``f``.

    Raises
    ------
    ValueError
        For an operator or symbol outside the primitive set, naming it.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected a PySR equation string, got {type(text).__name__}")
    tokens: list[str] = []
    for m in _TOKEN.finditer(text):
        number, name, other = m.groups()
        if number is not None:
            tokens.append(re.sub(r"f(?=[+-]?\d)", "e", number))
        elif name is not None:
            tokens.append(_symloss_name(name, text))
        elif other is not None:
            if other not in "()+-*,":
                raise _conversion_error(text, f"symbol {other!r} is not in the primitive set")
            tokens.append(other)
    if not tokens:
        raise _conversion_error(text, "the text is empty")
    try:
        return Expression.parse(" ".join(tokens))
    except ValueError as exc:
        raise _conversion_error(text, str(exc)) from exc


def expression_to_pysr(expression: Expression) -> str:
    """PySR/Julia text of an expression (for ``guesses``), fully parenthesised."""
    e = expression
    if e.op in VARIABLES:
        return e.op
    if e.op == "const":
        number = repr(float(e.value))
        return f"({number})" if e.value < 0 else number
    p = PRIMITIVES[e.op]
    args = [expression_to_pysr(a) for a in e.args]
    if p.julia in _INFIX_JULIA:
        return f"({args[0]} {p.julia} {args[1]})"
    return f"{p.julia}({', '.join(args)})"


def _symloss_name(name: str, text: str) -> str:
    if name in VARIABLES or name in PRIMITIVES:
        return name
    if name in _FROM_JULIA:
        return _FROM_JULIA[name]
    if name in _PYSR_INDEX_NAMES:
        return _PYSR_INDEX_NAMES[name]
    if name in ("Inf", "NaN"):
        raise _conversion_error(text, f"constant {name} is not finite")
    raise _conversion_error(text, f"unknown operator or variable {name!r}")


def _conversion_error(text: str, what: str) -> ValueError:
    allowed = ", ".join(sorted(_FROM_JULIA, key=lambda n: (not n.isalpha(), n)))
    return ValueError(
        f"cannot convert PySR equation {text!r}: {what}; PySR operators are {allowed} "
        f"(no '/': division is aq(a, b) = a / sqrt(1 + b^2)), variables are "
        f"{', '.join(VARIABLES)} (or x0, x1)"
    )


# -- settings ----------------------------------------------------------------------------
def pysr_settings(settings: Settings, seed: int) -> dict[str, Any]:
    """``PySRRegressor`` keyword arguments for a search with these settings.

    The budget is ``population_size * generations`` evaluations (``max_evals``): one
    population of ``population_size``; per iteration ``ncycles_per_iteration`` rounds
    of ``ceil(population_size / tournament_size)`` tournaments, about
    ``population_size`` children, so ``niterations = generations``. Depth counts nodes
    in SymbolicRegression.jl (a leaf has depth 1) but edges in symloss, hence
    ``maxdepth = height_limit + 1``; ``maxsize`` is the node count of a full binary
    tree of that height, within PySR's range [7, 40]. Mutations are always accepted
    (``annealing=False``), as in the GP engine.
    """
    size = settings.population_size
    tournament = max(1, min(settings.tournament_size, size))
    tournaments_per_cycle = math.ceil(size / tournament)
    return {
        "binary_operators": julia_operators()[2],
        "unary_operators": julia_operators()[1],
        "extra_sympy_mappings": {
            p.julia: p.sympy for p in PRIMITIVES.values() if p.julia_definition
        },
        "loss_function": julia_objective_source(CALLBACK_NAME),
        "loss_scale": "linear",
        "should_optimize_constants": False,
        "parallelism": "serial",
        "deterministic": True,
        "random_state": int(seed),
        "niterations": settings.generations,
        "populations": 1,
        "population_size": size,
        "ncycles_per_iteration": math.ceil(size / tournaments_per_cycle),
        "tournament_selection_n": tournament,
        "topn": min(12, size),
        "max_evals": size * settings.generations,
        "crossover_probability": settings.crossover_prob,
        "annealing": False,
        "maxdepth": settings.height_limit + 1,
        "maxsize": max(MIN_SIZE, min(MAX_SIZE, 2 ** (settings.height_limit + 1) - 1)),
        "batching": False,
        "precision": 64,
        "verbosity": 0,
        "progress": False,
        "temp_equation_file": True,
        "delete_tempfiles": True,
        "input_stream": "devnull",
    }


def dummy_dataset(rows: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``X`` with columns ``y`` and ``f`` and a zero target: PySR needs data to fit on,
    the objective ignores it."""
    column = np.linspace(0.05, 0.95, rows)
    return np.column_stack([column[::-1], column]), np.zeros(rows)


# -- import and Julia environment ---------------------------------------------------------
def use_julia_project() -> str | None:
    """Point juliapkg at the pinned ``julia_env/`` unless the user chose a project.

    Returns the project juliapkg will use when this module chose it, else None. Must
    run before juliacall is first imported; without a source checkout (no
    ``julia_env/Project.toml``) juliapkg keeps its default project.
    """
    if os.environ.get(JULIA_PROJECT_ENV):
        return None
    if not (JULIA_PROJECT_DIR / "Project.toml").is_file():
        return None
    os.environ[JULIA_PROJECT_ENV] = str(JULIA_PROJECT_DIR)
    return str(JULIA_PROJECT_DIR)


def import_pysr() -> ModuleType:
    """Import PySR (and so start Julia), raising one actionable ImportError if it fails."""
    module = sys.modules.get("pysr")
    if module is not None:
        return module
    if not is_installed("pysr"):
        raise ImportError(MISSING_MESSAGE)
    use_julia_project()
    importlib.import_module("torch")  # before juliacall: see the module docstring
    try:
        module = importlib.import_module("pysr")
    except Exception as exc:
        raise ImportError(
            JULIA_FAILED_MESSAGE.format(cause=f"{type(exc).__name__}: {exc}")
        ) from exc
    version = getattr(module, "__version__", "unknown")
    if version.split(".")[:2] != PYSR_VERSION.split(".")[:2]:
        logger.warning(
            "symloss's pysr engine was written for PySR %s; PySR %s is installed",
            PYSR_VERSION, version,
        )
    return module


def _regressor_kwargs(
    regressor: Callable[..., Any], kwargs: dict[str, Any], guesses: Sequence[str]
) -> dict[str, Any]:
    """Drop optional parameters this PySR lacks; fail clearly on missing required ones."""
    parameters = inspect.signature(regressor).parameters
    kwargs = {
        k: v for k, v in kwargs.items() if k in parameters or k not in _OPTIONAL_PARAMETERS
    }
    if guesses:
        if "guesses" in parameters:
            kwargs["guesses"] = list(guesses)
        else:
            logger.warning("this PySR has no `guesses`; the seed expressions are not used")
    missing = sorted(set(kwargs) - set(parameters))
    if missing:
        raise ImportError(
            f"the installed PySR lacks parameter(s) {missing} that engine='pysr' needs: "
            f"pip install 'pysr>={PYSR_VERSION}'"
        )
    return kwargs


# -- the engine ---------------------------------------------------------------------------
class _Objective:
    """The Python side of the Julia objective: text -> fitness, with history."""

    def __init__(self, context: SearchContext) -> None:
        self.context = context
        self.by_text: dict[str, float] = {}
        self.by_expression: dict[Expression, float] = {}
        self.pending: list[Evaluation] = []
        self.history: list[GenerationStats] = []
        self.started = time.perf_counter()
        self.best: tuple[str, float] | None = None
        self.error: BaseException | None = None

    def __call__(self, text: Any) -> float:
        if self.error is not None:
            raise RuntimeError("an earlier evaluation failed; stopping the PySR search")
        text = str(text)
        if text not in self.by_text:
            self.by_text[text] = self.score(text)
        return self.by_text[text]

    def score(self, text: str) -> float:
        try:
            expression = expression_from_pysr(text)
        except ValueError as exc:
            logger.warning("scoring an unreadable PySR equation as %g: %s", PENALTY, exc)
            return PENALTY
        if expression not in self.by_expression:
            try:
                evaluation = self.context.evaluate([expression])[0]
            except BaseException as exc:
                self.error = exc
                raise
            self.by_expression[expression] = objective_value(evaluation)
            self.record(evaluation)
        return self.by_expression[expression]

    def record(self, evaluation: Evaluation) -> None:
        self.pending.append(evaluation)
        if len(self.pending) >= self.context.settings.population_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        population = [(e.expression, e.fitness) for e in self.pending]
        if self.best is not None:
            population.append(self.best)
        stats = generation_stats(len(self.history), population, self.pending, self.started)
        self.best = (stats.best_expression, stats.best_fitness)
        self.history.append(stats)
        self.pending = []
        self.started = time.perf_counter()
        self.context.on_generation(stats)


def objective_value(evaluation: Evaluation) -> float:
    """The loss SymbolicRegression.jl sees: the fitness, or :data:`PENALTY`."""
    fitness = evaluation.fitness
    return fitness if math.isfinite(fitness) and fitness < PENALTY else PENALTY


class PySREngine(Engine):
    """SymbolicRegression.jl, through PySR, proposes the candidates.

    See the module docstring for how settings map and what is reported.
    """

    name = "pysr"

    def check_available(self) -> None:
        """Import PySR and start Julia; raise an ImportError saying what to install."""
        pysr = import_pysr()
        _regressor_kwargs(pysr.PySRRegressor, pysr_settings(Settings(), 0), ())

    def search(self, context: SearchContext) -> list[GenerationStats]:
        """Run PySR with the symloss evaluator as its objective."""
        refuse_class_prior(context, self.name)
        pysr = import_pysr()
        jl = pysr.jl
        if context.load_state() is not None:
            logger.warning("the pysr engine cannot resume a search; starting afresh")
        _define_operators(jl)
        objective = _Objective(context)
        kwargs = _regressor_kwargs(
            pysr.PySRRegressor,
            pysr_settings(context.settings, context.seed),
            [expression_to_pysr(e) for e in context.seeds],
        )
        model = pysr.PySRRegressor(**kwargs)
        x, y = dummy_dataset()
        _set_julia_global(jl, CALLBACK_NAME, objective)
        try:
            model.fit(x, y, variable_names=list(VARIABLES))
        except Exception:
            if objective.error is not None:
                raise objective.error from None
            raise
        finally:
            _set_julia_global(jl, CALLBACK_NAME, None)
        if objective.error is not None:
            raise objective.error
        objective.flush()
        return objective.history


def _define_operators(jl: Any) -> None:
    jl.seval(julia_operators_source())
    wrong = operator_mismatches(lambda name, args: float(jl.seval(name)(*args)))
    if wrong:
        raise RuntimeError(
            "Julia operators do not match symloss's primitives (a name in Julia's Main "
            f"is bound to another function): {'; '.join(wrong)}"
        )


def _set_julia_global(jl: Any, name: str, value: Any) -> None:
    jl.seval(f"value -> (global {name} = value; nothing)")(value)
