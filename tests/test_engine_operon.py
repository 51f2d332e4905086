"""The Operon engine: tree <-> Expression conversion, node semantics, the NSGA-II loop.

Everything but the missing-package tests runs the real pyoperon (a ``dev`` dependency);
engine-level tests drive ``OperonEngine.search`` with a cheap synthetic objective, the
``fit`` tests run the whole search with real training on a tiny budget.
"""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys

import numpy as np
import pytest
import sympy
from synthetic_search import Recorder, synthetic_context

import symloss
from symloss.config import preset
from symloss.engines import ENGINES, get_engine
from symloss.engines import operon as engine
from symloss.engines.operon import (
    MISSING_MESSAGE,
    PENALTY,
    OperonEngine,
    OperonSpace,
    crossover_probability,
    objectives,
    operator_mismatches,
    repair,
    supported_primitives,
    unsupported_primitives,
)
from symloss.expression import Expression
from symloss.library import baseline, known_losses
from symloss.primitives import PRIMITIVES
from symloss.runs import CHECKPOINT_FILE, RunDirectory

needs_operon = pytest.mark.skipif(
    importlib.util.find_spec("pyoperon") is None,
    reason="pyoperon is not installed (pip install 'symloss[operon]')",
)

TINY = {"selection_seeds": 2, "height_limit": 5, "init_min_height": 2,
        "init_max_height": 3}  # over the tiny preset

ASYMMETRIC = [
    "div(y - f, 1 + f)", "square(y) - tanh(f)", "min(y, -1 * f) - max(f, 0)",
    "log(1 + square(f - y))", "sqrt(f - y)", "div(abs(y), f) * -1", "max(y - f, 0.5)",
]


@pytest.fixture(scope="module")
def space():
    op = pytest.importorskip("pyoperon")
    return OperonSpace(op)


def e(text: str) -> Expression:
    return Expression.parse(text)


# -- availability -------------------------------------------------------------------------------
def test_engine_is_listed_and_made_by_name():
    assert "operon" in ENGINES
    assert get_engine("operon").name == "operon"


def test_missing_pyoperon_gives_one_actionable_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyoperon", None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ImportError) as info:
        get_engine("operon").check_available()
    assert str(info.value) == MISSING_MESSAGE
    assert "pip install 'symloss[operon]'" in MISSING_MESSAGE


def test_fit_without_pyoperon_fails_before_any_work(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pyoperon", None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    run_dir = tmp_path / "run"
    search = symloss.SymbolicLossSearch(engine="operon", verbose=False, run_dir=run_dir)
    with pytest.raises(ImportError, match=r"symloss\[operon\]"):
        search.fit("sine", "mlp")
    assert not run_dir.exists()


def test_importing_symloss_and_the_engine_module_does_not_import_pyoperon():
    code = (
        "import sys, symloss, symloss.engines.operon\n"
        "symloss.SymbolicLossSearch(engine='operon')\n"
        "assert 'pyoperon' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


# -- the search space ---------------------------------------------------------------------------
def test_every_primitive_but_sign_has_an_operon_node():
    assert unsupported_primitives() == ["sign"]
    assert set(supported_primitives()) == set(PRIMITIVES) - {"sign"}
    assert supported_primitives()["div"] == "aq"
    assert supported_primitives()["log"] == "logabs"


@needs_operon
def test_operon_nodes_compute_the_primitives(space):
    assert operator_mismatches(space) == []


@needs_operon
def test_the_node_check_catches_a_wrong_node(space, monkeypatch):
    # pyoperon names its min/max NodeType members the wrong way round; mapping by member
    # name instead of node name would give exactly this mistake
    monkeypatch.setitem(space._node_type, "min", space._node_type["max"])
    wrong = operator_mismatches(space)
    assert len(wrong) == 1 and "where min gives" in wrong[0]


@needs_operon
@pytest.mark.parametrize("text", [
    *ASYMMETRIC, "0.1 * square(f - y) + 2.25", "-(y * log(f))", "max(0, 1 - y * f)",
    *(str(x) for x in known_losses("regression") + known_losses("classification")),
    *(str(x) for x in known_losses("classification", single_output=True)),
])
def test_expressions_round_trip_exactly(space, text):
    expression = e(text)
    tree = space.to_tree(expression)
    assert tree.Length == expression.size
    assert tree.Depth == expression.height + 1
    assert space.to_expression(tree) == expression


@needs_operon
def test_constants_one_and_minus_one_are_inputs_other_constants_are_nodes(space):
    tree = space.to_tree(e("max(0, 1 - -1 * y)"))
    leaves = [n for n in tree.Nodes if n.IsLeaf]
    assert sum(n.IsConstant for n in leaves) == 1  # the 0
    assert sum(n.IsVariable for n in leaves) == 3  # 1, -1 and y
    assert all(n.Value == 1.0 for n in leaves if n.IsVariable)


@needs_operon
@pytest.mark.parametrize("text", ASYMMETRIC)
def test_operon_computes_what_the_expression_says(space, text):
    """Argument order and node semantics: Operon's value of the converted tree equals
    the expression's SymPy value (points away from the protected regions)."""
    expression = e(text)
    y = np.array([0.3, -1.2, 2.0, 0.9])
    f = np.array([1.1, 0.4, -0.7, 0.2])
    form = expression.sympy()
    symbols = sorted(form.free_symbols, key=str)
    function = sympy.lambdify(symbols, form, "numpy")
    values = {"y": y, "f": f}
    expected = np.broadcast_to(function(*(values[str(s)] for s in symbols)), y.shape)
    np.testing.assert_allclose(space.evaluate(expression, y, f), expected, rtol=1e-5)


@needs_operon
def test_random_operon_trees_convert_and_respect_heights(space):
    op = pytest.importorskip("pyoperon")
    search = engine._Search(op, preset("quick").replace(init_min_height=2, init_max_height=4))
    rng = op.RandomGenerator(3)
    heights = set()
    for _ in range(300):
        tree = search.initializer(rng)
        expression = space.to_expression(tree)
        heights.add(expression.height)
        assert space.to_expression(space.to_tree(expression)) == expression
        assert not {n.op for n in expression.nodes()} & set(unsupported_primitives())
    assert heights == {2, 3, 4}


@needs_operon
def test_sign_cannot_become_an_operon_tree(space):
    with pytest.raises(ValueError, match="cannot use 'sign'"):
        space.to_tree(e("sign(f - y)"))


def test_repair_makes_expressions_use_y_and_f():
    rng = random.Random(0)
    for text in ("1", "square(y)", "f * -1", "max(1, tanh(f))"):
        repaired = repair(e(text), rng)
        assert repaired.variables == {"y", "f"}
        assert repaired.size == e(text).size + 2  # one leaf became op(y, f)
    untouched = e("square(f - y)")
    assert repair(untouched, rng) is untouched


def test_rejected_candidates_are_dominated():
    assert objectives(e("f - y"), 0.25) == [0.25, 3.0]
    assert objectives(e("y"), float("inf")) == [PENALTY, PENALTY]
    assert objectives(e("f - y"), float("nan")) == [PENALTY, PENALTY]


def test_crossover_probability_keeps_deaps_chance_of_a_copy():
    for crossover, mutation in ((0.7, 0.25), (0.5, 0.5), (0.0, 0.3), (0.9, 0.1)):
        settings = preset("paper").replace(crossover_prob=crossover, mutation_prob=mutation)
        p = crossover_probability(settings)
        assert 0.0 <= p <= 1.0
        assert (1 - p) * (1 - mutation) == pytest.approx(1 - crossover - mutation)
    assert crossover_probability(preset("paper").replace(
        crossover_prob=0.0, mutation_prob=1.0)) == 0.0


@needs_operon
def test_a_replay_that_breeds_other_children_is_an_error():
    op = pytest.importorskip("pyoperon")
    search = engine._Search(op, preset("quick").replace(population_size=4))
    parents = [engine._Member(x, 1.0 + i) for i, x in enumerate(known_losses("regression")[:4])]
    children = search.breed(parents, seed=7)
    assert len(children) == 4
    assert search.breed(parents, seed=7) == children
    scored = [engine._Member(x, 0.5) for x in children]
    survivors = search.survive(parents, 7, children, scored)
    assert len(survivors) == 4
    assert set(survivors) <= set(children) | {p.expression for p in parents}
    with pytest.raises(RuntimeError, match="did not breed the same children"):
        search.survive(parents, 7, list(reversed(children)) + [e("f - y")], scored)


# -- the NSGA-II loop with a cheap synthetic objective ---------------------------------------
@needs_operon
def test_loop_batches_generations_seeds_and_keeps_the_best():
    recorder = Recorder()
    context = synthetic_context(recorder)
    history = OperonEngine().search(context)
    s = context.settings
    assert [h.generation for h in history] == list(range(s.generations + 1))
    # one batch per generation, population_size candidates each
    assert [len(g) for g in recorder.generations] == [s.population_size] * (s.generations + 1)
    assert [h.evaluated for h in history] == [s.population_size] * (s.generations + 1)
    library = known_losses("regression")
    assert recorder.generations[0][: len(library)] == library
    assert all(x.variables == {"y", "f"} for x in recorder.generations[0])  # repaired
    for generation in recorder.generations:
        for x in generation:
            assert x.height <= s.height_limit, str(x)
            assert "sign" not in str(x)
            # repaired, unless the repair would have broken the height limit
            assert x.variables == {"y", "f"} or x.height == s.height_limit, str(x)
    best = [h.best_fitness for h in history]
    assert all(b <= a for a, b in zip(best, best[1:], strict=False))
    assert best[-1] < best[0]  # the synthetic objective is actually optimised
    # children are bred, not copied wholesale: most of them are new expressions
    seen = set(recorder.generations[0])
    new = sum(x not in seen for g in recorder.generations[1:] for x in g)
    assert new > s.generations * s.population_size / 3


@needs_operon
def test_loop_is_deterministic_and_resumes_from_its_checkpoints():
    first, second = Recorder(), Recorder()
    states: list[dict] = []
    OperonEngine().search(synthetic_context(first, states=states))
    OperonEngine().search(synthetic_context(second))
    assert first.generations == second.generations
    assert [st["generation"] for st in states] == list(range(13))
    json.dumps(states[-1])  # checkpoints are JSON
    other = Recorder()
    OperonEngine().search(synthetic_context(other, seed=1))
    assert other.generations[1:] != first.generations[1:]
    resumed = Recorder()
    history = OperonEngine().search(synthetic_context(resumed, load=states[5]))
    assert resumed.generations == first.generations[6:]
    assert [h.generation for h in history] == list(range(13))


@needs_operon
def test_seeds_using_sign_are_left_out_with_a_warning(caplog):
    recorder = Recorder()
    seeds = [baseline("regression"), e("sign(f - y) * (f - y)"), e("abs(f - y)")]
    OperonEngine().search(synthetic_context(recorder, seeds=seeds, generations=1))
    assert recorder.generations[0][:2] == [seeds[0], seeds[2]]
    assert "sign(f - y) * (f - y)" in caplog.text and "leaves out" in caplog.text


# -- the whole search, real training -------------------------------------------------------------
def search(run_dir, **params) -> symloss.SymbolicLossSearch:
    return symloss.SymbolicLossSearch(**{
        "engine": "operon", "preset": "tiny", "population_size": 4, "generations": 3,
        "random_state": 0, "verbose": False, "settings": TINY, "run_dir": run_dir, **params,
    })


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    pytest.importorskip("pyoperon")
    return search(tmp_path_factory.mktemp("operon") / "run").fit("sine", "mlp")


def records(run_dir):
    found = sorted(RunDirectory(run_dir).records(), key=lambda r: (r.generation, r.index))
    return [(r.generation, r.index, r.evaluation.expression, r.evaluation.status,
             r.evaluation.fitness) for r in found]


@needs_operon
def test_fit_results_look_like_the_other_engines(fitted):
    assert fitted.best_loss_.task == "regression"
    assert fitted.best_loss_.metadata["engine"] == "operon"
    assert [h.generation for h in fitted.history_] == [0, 1, 2, 3]
    assert fitted.n_evaluations_ == 4 * 4
    assert int(fitted.equations_["chosen"].sum()) == 1
    assert fitted.evaluations_[0].expression == str(baseline("regression"))
    best = [h.best_fitness for h in fitted.history_]
    assert all(b <= a for a, b in zip(best, best[1:], strict=False))
    run_dir = fitted.run_dir_
    for name in ("run.json", "evaluations.jsonl", CHECKPOINT_FILE, "best_loss.json",
                 "hall_of_fame.json"):
        assert (run_dir / name).is_file(), name
    assert [g for g, *_ in records(run_dir)] == [g for g in range(4) for _ in range(4)]


@needs_operon
def test_interrupted_fit_resumes_to_the_same_search(fitted, tmp_path):
    run_dir = tmp_path / "interrupted"

    def interrupt(stats) -> None:
        if stats.generation == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search(run_dir, callback=interrupt).fit("sine", "mlp")
    assert json.loads((run_dir / CHECKPOINT_FILE).read_text())["generation"] == 1
    resumed = search(run_dir).fit("sine", "mlp")
    # generations 0-2 were computed afresh in this test: same seed, same search
    assert records(run_dir) == records(fitted.run_dir_)
    assert resumed.equations_.equals(fitted.equations_)
    assert [h.best_fitness for h in resumed.history_] == [
        h.best_fitness for h in fitted.history_]
    assert resumed.best_loss_.expression == fitted.best_loss_.expression
