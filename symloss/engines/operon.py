"""The ``operon`` engine: Operon (C++, through pyoperon) drives the search with NSGA-II.

Operon evolves trees whose leaves are the four inputs of a small dummy problem: ``y``,
``f`` and the constants ``1`` and ``-1`` (columns holding that constant), so Operon draws
a leaf uniformly from the same terminals as the DEAP engine and creates no coefficient
constants. Its trees become :class:`~symloss.expression.Expression` at this module's edge
(:meth:`OperonSpace.to_expression`) and are scored by ``context.evaluate``; Operon never
computes a loss value.

One generation, evaluated as a batch
------------------------------------
Operon asks for objectives one individual at a time, through a Python callback; symloss's
evaluator takes a whole generation at once (that is where worker processes and records
plug in). Each generation therefore runs twice from the same parents and random seed:

1. a *breeding pass*: Operon selects parents and breeds the children; the callback notes
   each child and answers with a placeholder (a child's objectives do not change how the
   other children of the generation are bred);
2. ``context.evaluate`` scores the children together (repaired, see *Shape* below);
3. a *survival pass*: the same generation replays with the same seed, so Operon breeds the
   same children (checked), the callback answers with their real objectives, and Operon's
   non-dominated sorting and crowding choose the survivors.

Breeding costs microseconds, training a candidate seconds, so the replay is free.

Decisions
---------
- **Objectives**: NSGA-II minimises (fitness, size). The size objective keeps small losses
  alive beside accurate ones, a Pareto front like PySR's equations table. A rejected or
  non-finite candidate scores (:data:`PENALTY`, :data:`PENALTY`), so every accepted
  candidate dominates it (a tiny rejected tree would otherwise sit on the front for its
  size). Being (mu + lambda), NSGA-II never loses the best fitness: it is on the first
  front with infinite crowding distance.
- **Budget**: ``population_size`` children per generation (the DEAP engine breeds
  ``population_size - elitism``); ``elitism`` is unused, NSGA-II's survival is elitist.
- **Variation**: Operon's basic offspring generator: subtree crossover (90 % internal
  crossover points), then, independently, mutation with probability ``mutation_prob``:
  one of change-function, change-variable, replace-subtree, insert-subtree and
  remove-subtree, with equal weights. As a child can be both crossed and mutated, the
  crossover probability is :func:`crossover_probability`, which keeps DEAP's chance of an
  unchanged copy. Parents are chosen by tournaments of ``tournament_size`` on NSGA-II's
  crowded comparison.
- **Shape**: Operon counts a leaf as depth 1, so its depth limit is ``height_limit + 1``
  and its length limit that of a full binary tree of that depth. Initial random trees
  come from Koza's grow method with heights in [``init_min_height``,
  ``init_max_height``]. Initial trees and children are repaired to use both ``y`` and
  ``f`` as in the DEAP engine (:func:`repair`, skipped when it would break the height
  limit): the repaired child is evaluated, its objectives are given to Operon's copy of
  the child, and it replaces that copy among the survivors. ``mutation_max_height`` is
  unused: Operon sizes a new subtree to fit the tree's limits.
- **Coefficients off**: no coefficient mutation, a coefficient optimiser of zero
  iterations, local-search probability 0 and no linear scale or intercept term: leaf
  coefficients stay 1 and symloss's local search owns the weights.
- **Unsupported**: ``sign`` has no Operon node; it never appears in this engine's
  candidates and seed expressions using it are left out (with a warning). A seed constant
  other than +-1 (the 0 of the hinge-like seed) is kept as an Operon constant node.
- **Node names**: Operon nodes are looked up by their name (the ``operon`` column of the
  primitive table), not by ``NodeType`` member: pyoperon 0.6.2's ``NodeType.Fmin`` makes
  a node named ``fmax`` that computes the maximum. :func:`operator_mismatches` checks
  each node's values against the primitive table (Operon's ``logabs`` and ``sqrtabs`` have
  no ``1e-7`` floor; they differ only below it, which the check avoids).
- **Determinism and resume**: one Operon thread; every generation's Operon seed comes from
  the search seed and the generation number, and between generations the population is
  plain expressions with their fitness, which is also what the checkpoint holds. A
  resumed search is therefore the uninterrupted one.
"""

from __future__ import annotations

import importlib
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import sympy

from symloss.config import Settings
from symloss.engines.base import (
    REPAIR_OPS,
    Engine,
    SearchContext,
    is_installed,
    refuse_class_prior,
)
from symloss.expression import Expression
from symloss.primitives import PREDICTION, PRIMITIVES, TARGET, VARIABLES
from symloss.records import Evaluation, GenerationStats, generation_stats
from symloss.serialization import finite_or_none, none_as_inf

logger = logging.getLogger(__name__)

OPERON_VERSION = "0.6.2"
"""The pyoperon release this engine was written against."""

PENALTY = 1e10
"""Objective value of a rejected or non-finite candidate (Operon compares in float32)."""

MISSING_MESSAGE = (
    "engine='operon' needs pyoperon, which is not installed: pip install 'symloss[operon]' "
    f"(or pip install pyoperon=={OPERON_VERSION}; it ships binary wheels, no compiler "
    "needed)"
)

CROSSOVER_INTERNAL_PROBABILITY = 0.9
"""Probability that subtree crossover picks an internal node (Koza's 90/10 rule)."""

_LEAVES: tuple[Expression, ...] = (
    Expression.var(TARGET), Expression.var(PREDICTION), Expression.const(1.0),
    Expression.const(-1.0),
)
"""Operon's inputs, in column order: the terminal set of the DEAP engine."""

_UNLIMITED = 2**62
"""Evaluation budget handed to Operon: symloss counts generations itself."""


def supported_primitives() -> dict[str, str]:
    """symloss primitive name -> Operon node name, for the primitives Operon has."""
    return {name: p.operon for name, p in PRIMITIVES.items() if p.operon}


def unsupported_primitives() -> list[str]:
    """Primitives this engine cannot use (no Operon node computes them)."""
    return [name for name, p in PRIMITIVES.items() if not p.operon]


def import_pyoperon() -> ModuleType:
    """Import pyoperon, raising one actionable ImportError if it is missing."""
    module = sys.modules.get("pyoperon")
    if module is not None:
        return module
    if not is_installed("pyoperon"):
        raise ImportError(MISSING_MESSAGE)
    try:
        module = importlib.import_module("pyoperon")
    except ImportError as exc:
        raise ImportError(f"{MISSING_MESSAGE}. Importing it failed: {exc}") from exc
    version = _installed_version()
    if version.split(".")[:2] != OPERON_VERSION.split(".")[:2]:
        logger.warning(
            "symloss's operon engine was written for pyoperon %s; pyoperon %s is installed",
            OPERON_VERSION, version,
        )
    return module


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyoperon")
    except PackageNotFoundError:
        return "unknown"


# -- the search space in Operon's terms ----------------------------------------------------
class OperonSpace:
    """Operon's problem over the inputs ``y``, ``f``, ``1``, ``-1``, and the conversion
    between its trees and :class:`~symloss.expression.Expression`.

    Operon stores a tree in postfix order with a node's children right to left: the
    first argument is the subtree ending just before the node.
    """

    def __init__(self, op: ModuleType) -> None:
        self.op = op
        rows = 4
        columns = [np.full(rows, 0.5), np.full(rows, 0.5), np.ones(rows), -np.ones(rows),
                   np.zeros(rows)]
        self.dataset = op.Dataset(np.asfortranarray(np.column_stack(columns)))
        variables = sorted(self.dataset.Variables, key=lambda v: v.Index)
        self.inputs: list[int] = [v.Hash for v in variables[: len(_LEAVES)]]
        self._leaf_by_hash = dict(zip(self.inputs, _LEAVES, strict=True))
        self._hash_by_leaf = {leaf: h for h, leaf in self._leaf_by_hash.items()}
        # Operon stores constants in float32; remember the exact values it was given
        self._constants: dict[float, float] = {}
        by_name = {op.Node(t).Name: t for t in op.NodeType}
        self._node_type = {name: by_name[node] for name, node in supported_primitives().items()}
        self._primitive_by_node = {node: name for name, node in supported_primitives().items()}

        self.problem = op.Problem(self.dataset)
        self.problem.TrainingRange = op.Range(0, rows)
        self.problem.TestRange = op.Range(rows - 1, rows)
        self.problem.Target = variables[len(_LEAVES)]
        self.problem.InputHashes = self.inputs
        config = int(op.NodeType.Variable)
        for node_type in self._node_type.values():
            config |= int(node_type)
        self.problem.ConfigurePrimitiveSet(config)
        self.pset = self.problem.PrimitiveSet

    def to_expression(self, tree: Any) -> Expression:
        """The expression of an Operon tree.

        Raises
        ------
        ValueError
            For a node outside the search space or a leaf coefficient other than 1.
        """
        nodes = tree.Nodes

        def build(i: int) -> tuple[Expression, int]:
            node = nodes[i]
            if node.IsVariable:
                if node.Value != 1.0:
                    raise ValueError(f"leaf coefficient {node.Value} (expected 1) in an "
                                     "Operon tree: coefficients must stay off")
                return self._leaf_by_hash[node.HashValue], i - 1
            if node.IsConstant:
                return Expression.const(self._constants.get(node.Value, node.Value)), i - 1
            name = self._primitive_by_node.get(node.Name)
            if name is None:
                raise ValueError(f"Operon node {node.Name!r} is not in the search space")
            args, j = [], i - 1
            for _ in range(node.Arity):
                arg, j = build(j)
                args.append(arg)
            return Expression.call(name, *args), j

        expression, _ = build(len(nodes) - 1)
        return expression

    def to_tree(self, expression: Expression) -> Any:
        """The Operon tree of an expression (its constants +-1 become the inputs ``1`` and
        ``-1``, any other constant a constant node).

        Raises
        ------
        ValueError
            If the expression uses a primitive Operon lacks (``sign``).
        """
        op = self.op
        nodes: list[Any] = []

        def emit(e: Expression) -> None:
            for arg in reversed(e.args):
                emit(arg)
            if e in self._hash_by_leaf:
                node = op.Node.Variable(1.0)
                node.HashValue = node.CalculatedHashValue = self._hash_by_leaf[e]
            elif e.op == "const":
                node = op.Node.Constant(e.value)
                self._constants[node.Value] = e.value
            elif e.op in self._node_type:
                node = op.Node(self._node_type[e.op])
            else:
                raise ValueError(
                    f"the operon engine cannot use {e.op!r} (no Operon node computes it; "
                    f"unsupported: {', '.join(unsupported_primitives())})"
                )
            nodes.append(node)

        emit(expression)
        return op.Tree(nodes).UpdateNodes()

    def evaluate(self, expression: Expression, y: np.ndarray, f: np.ndarray) -> np.ndarray:
        """Operon's own value of an expression at points ``(y, f)`` (float32)."""
        op = self.op
        columns = [y, f, np.ones_like(y), -np.ones_like(y), np.zeros_like(y)]
        data = op.Dataset(np.asfortranarray(np.column_stack(columns), dtype=np.float64))
        # same column order, hence the same variable hashes as the problem's dataset
        tree = self.to_tree(expression)
        values = op.Evaluate(op.DispatchTable(), tree, data, op.Range(0, len(y)))
        return np.asarray(values, dtype=np.float64).ravel()


def operator_mismatches(space: OperonSpace) -> list[str]:
    """Operon nodes whose values differ from the primitive table's SymPy forms.

    Points avoid the protected regions (``|a| < 1e-7``), where Operon's ``logabs`` and
    ``sqrtabs`` have no floor; Operon computes in float32, hence the tolerance.
    """
    y = np.array([-1.7, 0.3, 2.5, 0.9])
    f = np.array([0.9, -2.2, 2.5, -0.4])
    wrong = []
    for name, p in PRIMITIVES.items():
        if not p.operon:
            continue
        args = [Expression.var(TARGET), Expression.var(PREDICTION)][: p.arity]
        got = space.evaluate(Expression.call(name, *args), y, f)
        expected = np.array([
            float(p.sympy(*(sympy.Float(float(v)) for v in point[: p.arity])))
            for point in zip(y, f, strict=True)
        ])
        if not np.allclose(got, expected, rtol=1e-5, atol=1e-6):
            wrong.append(f"Operon {p.operon!r} gives {got.tolist()} where {name} gives "
                         f"{expected.tolist()}")
    return wrong


# -- one search ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Member:
    """One individual between generations: its expression and the symloss fitness."""

    expression: Expression
    fitness: float

    @property
    def objectives(self) -> list[float]:
        return objectives(self.expression, self.fitness)


def objectives(expression: Expression, fitness: float) -> list[float]:
    """NSGA-II's objectives of a candidate: (fitness, size), or (:data:`PENALTY`,
    :data:`PENALTY`) when it was rejected or its fitness is not finite."""
    if not (math.isfinite(fitness) and fitness < PENALTY):
        return [PENALTY, PENALTY]
    return [fitness, float(expression.size)]


def crossover_probability(settings: Settings) -> float:
    """Operon's crossover probability for these settings.

    Operon crosses with probability ``p`` and then, independently, mutates with
    ``mutation_prob``; DEAP chooses one of crossover, mutation or copy. ``p =
    crossover_prob / (1 - mutation_prob)`` keeps DEAP's probability that a child is an
    unchanged copy, ``1 - crossover_prob - mutation_prob`` (a copy costs an evaluation
    slot and teaches nothing).
    """
    if settings.mutation_prob >= 1.0:
        return 0.0
    return min(1.0, settings.crossover_prob / (1.0 - settings.mutation_prob))


def generation_seed(seed: int, generation: int) -> int:
    """Operon's random seed for one generation (64 bits from the search seed and the
    generation number, so any generation can be rerun on its own)."""
    state = np.random.SeedSequence([int(seed) & (2**63 - 1), generation])
    return int(state.generate_state(1, dtype=np.uint64)[0])


class _Search:
    """Operon's NSGA-II parts for one search (Operon keeps pointers to them: they live as
    long as this object) and the two passes of a generation."""

    def __init__(self, op: ModuleType, settings: Settings) -> None:
        self.op = op
        self.settings = settings
        self.space = space = OperonSpace(op)
        depth = settings.height_limit + 1
        length = 2**depth - 1
        self.creator = op.GrowTreeCreator(space.pset, space.inputs)
        self.coefficients = op.UniformIntCoefficientAnalyzer()
        self.coefficients.ParameterizeDistribution(1, 1)  # leaf coefficients: always 1
        self.initializer = op.UniformLengthTreeInitializer(self.creator)
        self.initializer.ParameterizeDistribution(1, 2 ** (settings.init_max_height + 1) - 1)
        self.initializer.MinDepth = settings.init_min_height + 1
        self.initializer.MaxDepth = settings.init_max_height + 1
        self.crossover = op.SubtreeCrossover(CROSSOVER_INTERNAL_PROBABILITY, depth, length)
        self.mutations = [
            op.ChangeFunctionMutation(space.pset),
            op.ChangeVariableMutation(space.inputs),
            op.ReplaceSubtreeMutation(self.creator, self.coefficients, depth, length),
            op.InsertSubtreeMutation(self.creator, self.coefficients, depth, length),
            op.RemoveSubtreeMutation(space.pset),
        ]
        self.mutation = op.MultiMutation()
        for mutation in self.mutations:
            self.mutation.Add(mutation, 1.0)
        self.comparison = op.CrowdedComparison()
        self.selector = op.TournamentSelector(self.comparison)
        self.selector.TournamentSize = settings.tournament_size
        self.reinserter = op.KeepBestReinserter(self.comparison)
        self.sorter = op.RankSorter()
        self.dispatch = op.DispatchTable()
        self.least_squares = op.LMOptimizer(self.dispatch, space.problem, 0, 0)
        self.optimizer = op.CoefficientOptimizer(self.least_squares)

    def random_expressions(self, n: int, seed: int) -> list[Expression]:
        """``n`` random trees from Operon's initializer, each repaired to use y and f."""
        rng = self.op.RandomGenerator(generation_seed(seed, 0))
        python_rng = random.Random(seed)
        return [
            repair(self.space.to_expression(self.initializer(rng)), python_rng)
            for _ in range(n)
        ]

    def breed(self, parents: Sequence[_Member], seed: int) -> list[Expression]:
        """The breeding pass: the children Operon makes from ``parents`` with ``seed``."""
        placeholder = [PENALTY, PENALTY]
        children, _ = self._run(parents, seed, lambda index, expression: placeholder)
        return children

    def survive(
        self, parents: Sequence[_Member], seed: int, children: Sequence[Expression],
        scored: Sequence[_Member],
    ) -> list[Expression]:
        """The survival pass: replay the generation, which must breed ``children`` again,
        answering for child ``i`` with the objectives of ``scored[i]``; return the
        expressions of the ``len(parents)`` survivors (as Operon holds them)."""
        replayed, survivors = self._run(
            parents, seed, lambda index, expression: scored[index].objectives
        )
        if replayed != list(children):
            raise RuntimeError(
                "pyoperon did not breed the same children when a generation was replayed "
                f"with the same seed; the operon engine needs that (pyoperon {OPERON_VERSION} "
                "does). Use engine='deap' or install that pyoperon version."
            )
        return survivors

    def _run(
        self,
        parents: Sequence[_Member],
        seed: int,
        answer: Callable[[int, Expression], list[float]],
    ) -> tuple[list[Expression], list[Expression]]:
        """One Operon generation from ``parents``: the children it bred (in breeding order)
        and the survivors' expressions.

        With a warm start Operon first asks again for the parents' objectives (answered
        from ``parents``), then for each child's, answered by ``answer(index,
        expression)``. The callback never raises (an exception cannot cross Operon's
        task scheduler); errors are raised after the run.
        """
        op, space, s = self.op, self.space, self.settings
        size = len(parents)
        calls: list[Expression | None] = []
        errors: list[BaseException] = []

        def evaluate(rng: Any, individual: Any) -> list[float]:
            index = len(calls)
            try:
                expression = space.to_expression(individual.Genotype)
            except Exception as exc:
                errors.append(exc)
                calls.append(None)
                return [PENALTY, PENALTY]
            calls.append(expression)
            if index < size:
                return parents[index].objectives
            try:
                return answer(index - size, expression)
            except Exception as exc:
                errors.append(exc)
                return [PENALTY, PENALTY]

        evaluator = op.UserDefinedEvaluator(space.problem, evaluate)
        evaluator.Budget = _UNLIMITED
        generator = op.BasicOffspringGenerator(
            evaluator, self.crossover, self.mutation, self.selector, self.selector,
            self.optimizer,
        )
        config = op.GeneticAlgorithmConfig(
            generations=1, max_evaluations=_UNLIMITED, local_iterations=0,
            population_size=size, pool_size=size, p_crossover=crossover_probability(s),
            p_mutation=s.mutation_prob, p_local=0.0, p_lamarck=0.0, epsilon=0.0, seed=seed,
        )
        algorithm = op.NSGA2Algorithm(
            config, space.problem, self.initializer, self.coefficients, generator,
            self.reinserter, self.sorter,
        )
        # A warm start takes parents followed by offspring slots (overwritten). pyoperon
        # 0.6.2 treats the first pool_size individuals as the parents, hence pool_size ==
        # population_size above.
        individuals = [self._individual(m) for m in parents] * 2
        algorithm.RestoreIndividuals(op.IndividualCollection(individuals))
        algorithm.IsFitted = True
        algorithm.Run(op.RandomGenerator(seed), None, 1, True)
        if errors:
            raise errors[0]
        if len(calls) != 2 * size:
            raise RuntimeError(
                f"pyoperon asked for {len(calls)} objectives in one generation of "
                f"{size} parents and {size} children (expected {2 * size}); the operon "
                f"engine was written for pyoperon {OPERON_VERSION}"
            )
        children = [e for e in calls[size:] if e is not None]  # errors were raised above
        survivors = [
            space.to_expression(individual.Genotype)
            for individual in list(algorithm.Individuals)[:size]
        ]
        return children, survivors

    def _individual(self, member: _Member) -> Any:
        individual = self.op.Individual(2)
        individual.Genotype = self.space.to_tree(member.expression)
        for i, value in enumerate(member.objectives):
            individual.SetFitness(value, i)
        return individual


def repair(expression: Expression, rng: random.Random) -> Expression:
    """Ensure an expression uses both y and f: replace a random leaf by ``op(y, f)``
    (op one of add, sub, mul, div; the argument order random)."""
    if expression.variables == frozenset(VARIABLES):
        return expression
    leaves = [i for i, node in enumerate(expression.nodes()) if node.is_leaf]
    at = rng.choice(leaves)
    op = rng.choice(REPAIR_OPS)
    pair = list(map(Expression.var, VARIABLES))
    if rng.random() < 0.5:
        pair.reverse()
    return _replace(expression, at, Expression.call(op, *pair))


def _replace(expression: Expression, index: int, new: Expression) -> Expression:
    """``expression`` with its node number ``index`` (prefix order) replaced by ``new``."""
    if index == 0:
        return new
    index -= 1
    args = list(expression.args)
    for i, arg in enumerate(args):
        if index < arg.size:
            args[i] = _replace(arg, index, new)
            return Expression(expression.op, tuple(args), expression.value)
        index -= arg.size
    raise IndexError("node index beyond the expression")


class OperonEngine(Engine):
    """NSGA-II on (fitness, size) with Operon's operators; see the module docstring."""

    name = "operon"

    def check_available(self) -> None:
        """Import pyoperon; raise an ImportError saying what to install."""
        import_pyoperon()

    def search(self, context: SearchContext) -> list[GenerationStats]:
        """Run the generational NSGA-II loop, one batched evaluation per generation."""
        refuse_class_prior(context, self.name)
        op = import_pyoperon()
        s = context.settings
        search = _Search(op, s)
        wrong = operator_mismatches(search.space)
        if wrong:
            raise RuntimeError(
                "Operon's nodes do not compute symloss's primitives (is pyoperon "
                f"{OPERON_VERSION} installed?): {'; '.join(wrong)}"
            )
        saved = context.load_state()
        if saved is None:
            started = time.perf_counter()
            initial = self._initial_population(context, search)
            evaluations = context.evaluate(initial)
            population = self._members(initial, evaluations)
            self._finish(context, 0, population, evaluations, started)
            first = 1
        else:
            population = [
                _Member(Expression.parse(text), none_as_inf(fit))
                for text, fit in zip(saved["population"], saved["fitness"], strict=True)
            ]
            context.history[:] = [GenerationStats.from_dict(h) for h in saved["history"]]
            first = saved["generation"] + 1

        for generation in range(first, s.generations + 1):
            started = time.perf_counter()
            seed = generation_seed(context.seed, generation)
            children = search.breed(population, seed)
            repaired = self._repairs(children, seed, s.height_limit)
            candidates = [repaired[child] for child in children]
            evaluations = context.evaluate(candidates)
            scored = self._members(candidates, evaluations)
            survivors = search.survive(population, seed, children, scored)
            fitness = {m.expression: m.fitness for m in (*scored, *population)}
            population = [
                _Member(repaired.get(e, e), fitness[repaired.get(e, e)]) for e in survivors
            ]
            self._finish(context, generation, population, evaluations, started)
        return list(context.history)

    @staticmethod
    def _repairs(
        children: Sequence[Expression], seed: int, height_limit: int
    ) -> dict[Expression, Expression]:
        """Each distinct child -> the child repaired to use y and f (itself when it does,
        or when the repair would exceed ``height_limit``)."""
        rng = random.Random(seed)
        repaired: dict[Expression, Expression] = {}
        for child in children:
            if child not in repaired:
                fixed = repair(child, rng)
                repaired[child] = fixed if fixed.height <= height_limit else child
        return repaired

    @staticmethod
    def _members(
        expressions: Sequence[Expression], evaluations: Sequence[Evaluation]
    ) -> list[_Member]:
        return [_Member(e, ev.fitness)
                for e, ev in zip(expressions, evaluations, strict=True)]

    @staticmethod
    def _initial_population(context: SearchContext, search: _Search) -> list[Expression]:
        s = context.settings
        population: list[Expression] = []
        skipped = []
        for expression in context.seeds if s.seed_population else ():
            if len(population) == s.population_size:
                break
            if expression in population:
                continue
            if not set(unsupported_primitives()).isdisjoint(e.op for e in expression.nodes()):
                skipped.append(str(expression))
                continue
            population.append(expression)
        if skipped:
            logger.warning(
                "the operon engine leaves out seed expressions using %s: %s",
                ", ".join(unsupported_primitives()), "; ".join(skipped),
            )
        population += search.random_expressions(s.population_size - len(population),
                                                 context.seed)
        return population

    @staticmethod
    def _finish(
        context: SearchContext, generation: int, population: list[_Member],
        evaluations: Sequence[Evaluation], started: float,
    ) -> None:
        summary = [(str(m.expression), m.fitness) for m in population]
        context.history.append(generation_stats(generation, summary, evaluations, started))
        context.on_generation(context.history[-1])
        context.save_state({
            "generation": generation,
            "population": [str(m.expression) for m in population],
            "fitness": [finite_or_none(m.fitness) for m in population],
            "history": [h.to_dict() for h in context.history],
        })
