"""The DEAP engine: primitive set, tree <-> Expression conversion, repair, the GP loop.

Engine-level tests drive ``DeapEngine.search`` with a cheap synthetic objective (the
engine knows nothing about torch, so any ``evaluate`` honouring the interface is a real
client); the ``*_fit`` tests run the whole search with real training on a tiny budget.
"""

from __future__ import annotations

import contextlib
import random

import deap.creator
import pytest
from deap import gp
from synthetic_search import Recorder, synthetic_context

import symloss
from symloss.engines.deap import (
    DeapEngine,
    mutation_subtree,
    primitive_set,
    repair,
    to_expression,
    to_tree,
)
from symloss.expression import Expression
from symloss.library import baseline, known_losses
from symloss.primitives import PRIMITIVES

TINY = {"selection_seeds": 2}  # over the tiny preset



@contextlib.contextmanager
def seeded_random(seed: int):
    """Seed Python's global ``random`` (DEAP draws from it) and restore it afterwards."""
    saved = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(saved)


def terminal_values(tree) -> set:
    return {node.value for node in tree if isinstance(node, gp.Terminal)}


# -- primitive set and conversion ---------------------------------------------------------
def test_primitive_set_has_the_search_space():
    pset = primitive_set()
    names = {p.name for p in pset.primitives[object]}
    assert names == set(PRIMITIVES)
    assert len(names) == 12
    assert names == {"add", "sub", "mul", "div", "min", "max", "sign", "square", "abs", "log",
                     "sqrt", "tanh"}
    arities = {p.name: p.arity for p in pset.primitives[object]}
    assert arities == {name: p.arity for name, p in PRIMITIVES.items()}
    assert sorted(map(str, terminal_values(pset.terminals[object]))) == ["-1.0", "1.0", "f", "y"]
    assert pset.arguments == ["y", "f"]


def test_round_trip_random_trees():
    pset = primitive_set()
    with seeded_random(1):
        trees = [gp.genHalfAndHalf(pset, min_=1, max_=5) for _ in range(300)]
    for nodes in trees:
        expression = to_expression(nodes)
        back = to_tree(expression, pset)
        assert [n.name for n in back] == [n.name for n in nodes]
        assert to_expression(back) == expression
        assert Expression.parse(str(expression)) == expression
        assert back.height == expression.height


@pytest.mark.parametrize("text", [
    "square(f - 0.5 * y)",
    "0.5 * abs(f - y) + 2.25",
    "log(1 + square(f - y)) * 0.001",
    "max(0, 1 - y * f)",
    "-(y * square(1 - f) * log(f))",
    *(str(e) for e in known_losses("regression") + known_losses("classification")),
])
def test_round_trip_seeds_with_constants(text):
    pset = primitive_set()
    expression = Expression.parse(text)
    tree = to_tree(expression, pset)
    assert to_expression(tree) == expression
    assert str(to_expression(tree)) == str(expression)
    # DEAP's operators work on trees holding arbitrary constants
    with seeded_random(0):
        child, _ = gp.cxOnePoint(to_tree(expression, pset), to_tree(baseline("regression"), pset))
    to_expression(child)


def _leaf_depths(nodes) -> set[int]:
    """Depths of the leaves of a prefix tree."""
    depths, stack = set(), [0]
    for node in nodes:
        depth = stack.pop()
        if node.arity == 0:
            depths.add(depth)
        stack.extend([depth + 1] * node.arity)
    return depths


def test_mutation_subtree_is_ramped_half_and_half():
    """As the reference's genHalfAndHalf(0, 2): full and grown subtrees, heights 0 to 2."""
    pset = primitive_set()
    with seeded_random(4):
        trees = [mutation_subtree(pset, object, max_height=2) for _ in range(1000)]
    heights = [max(_leaf_depths(t)) for t in trees]
    assert set(heights) == {0, 1, 2}
    # a full tree (genFull) has every leaf at the same depth; grown trees need not
    lopsided = [t for t in trees if len(_leaf_depths(t)) > 1]
    assert len(lopsided) >= 5  # genFull: none
    assert all(len(_leaf_depths(t)) == 1 for t in trees if max(_leaf_depths(t)) == 0)


def test_repair_makes_trees_use_y_and_f():
    pset = primitive_set()
    with seeded_random(2):
        trees = [gp.genHalfAndHalf(pset, min_=0, max_=3) for _ in range(300)]
        missing = [t for t in trees if not {"y", "f"} <= terminal_values(t)]
        assert len(missing) > 50  # the test exercises repair on many trees
        for nodes in trees:
            before = [n.name for n in nodes]
            had_both = {"y", "f"} <= terminal_values(nodes)
            tree = repair(to_tree(to_expression(nodes), pset), pset)
            assert {"y", "f"} <= terminal_values(tree)
            assert to_expression(tree).variables == {"y", "f"}
            if had_both:
                assert [n.name for n in tree] == before  # untouched
            else:
                assert len(tree) == len(before) + 2  # one leaf became op(y, f)


def test_repair_a_lone_constant():
    pset = primitive_set()
    with seeded_random(3):
        tree = repair(to_tree(Expression.const(1.0), pset), pset)
    expression = to_expression(tree)
    assert expression.op in ("add", "sub", "mul", "div")
    assert {a.op for a in expression.args} == {"y", "f"}


# -- the GP loop with a cheap synthetic objective --------------------------------------------
def test_engine_loop_limits_elitism_and_seeding():
    recorder = Recorder()
    context = synthetic_context(recorder)
    history = DeapEngine().search(context)
    s = context.settings
    assert [h.generation for h in history] == list(range(s.generations + 1))
    assert len(recorder.generations[0]) == s.population_size
    assert all(len(g) == s.population_size - s.elitism for g in recorder.generations[1:])
    # seeded: generation 0 starts with the baseline and the library, in order
    library = [str(e) for e in known_losses("regression")]
    assert [str(e) for e in recorder.generations[0][: len(library)]] == library
    # every evaluated tree respects the height limit and uses both variables
    for generation in recorder.generations:
        for e in generation:
            assert e.height <= s.height_limit, str(e)
            assert e.variables == {"y", "f"}, str(e)
    # elitism: the best fitness never gets worse
    best = [h.best_fitness for h in history]
    assert all(b <= a for a, b in zip(best, best[1:], strict=False))
    assert best[-1] < best[0]  # and the synthetic objective is actually optimised


def test_engine_is_deterministic_and_resumes_from_its_checkpoints():
    first, second = Recorder(), Recorder()
    states: list[dict] = []
    DeapEngine().search(synthetic_context(first, states=states))
    DeapEngine().search(synthetic_context(second))
    assert first.generations == second.generations
    assert [st["generation"] for st in states] == list(range(13))
    other = Recorder()
    DeapEngine().search(synthetic_context(other, seed=1))
    assert other.generations[1:] != first.generations[1:]
    # resume from the checkpoint after generation 5: the rest is the same as uninterrupted
    resumed = Recorder()
    history = DeapEngine().search(synthetic_context(resumed, load=states[5]))
    assert resumed.generations == first.generations[6:]
    assert [h.generation for h in history] == list(range(13))


# -- the whole search, real training ------------------------------------------------------------
@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    """Fit one estimator twice (different run_dirs), recording global state around it."""
    root = tmp_path_factory.mktemp("deap_fits")
    creator_before = set(vars(deap.creator))
    random.seed(12345)
    random_before = random.getstate()
    search = symloss.SymbolicLossSearch(
        preset="tiny", population_size=4, generations=3, random_state=0, verbose=False,
        settings={**TINY, "height_limit": 5, "init_min_height": 2, "init_max_height": 3},
        run_dir=root / "first",
    )
    search.fit("sine", "mlp")
    first = list(search.evaluations_), list(search.history_)
    random_after = random.getstate()
    search.set_params(run_dir=root / "second").fit("sine", "mlp")
    return {
        "search": search, "first": first, "creator_before": creator_before,
        "creator_after": set(vars(deap.creator)), "random_before": random_before,
        "random_after": random_after,
    }


def test_fit_leaves_deap_creator_and_global_random_alone(fits):
    assert fits["creator_after"] == fits["creator_before"]
    assert fits["random_after"] == fits["random_before"]


def test_fit_twice_gives_the_same_search(fits):
    search = fits["search"]
    evaluations, history = fits["first"]
    key = [(e.expression, e.status, e.fitness) for e in evaluations]
    assert [(e.expression, e.status, e.fitness) for e in search.evaluations_] == key
    assert [h.best_expression for h in search.history_] == [h.best_expression for h in history]


def test_fit_elitism_seeding_and_height_limit(fits):
    search = fits["search"]
    best = [h.best_fitness for h in search.history_]
    assert len(best) == 4
    assert all(b <= a for a, b in zip(best, best[1:], strict=False))
    assert search.evaluations_[0].expression == str(baseline("regression"))
    generation0 = [e.expression for e in search.evaluations_[:4]]
    assert generation0 == [str(e) for e in known_losses("regression")[:4]]
    for e in search.evaluations_:
        expression = Expression.parse(e.expression)
        assert expression.height <= 5, e.expression
        assert expression.variables == {"y", "f"}, e.expression
    # the baseline survives (elitism) unless something better was found
    assert search.best_loss_.metadata["fitness"] <= search.evaluations_[0].fitness
