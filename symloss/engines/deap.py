"""The embedded default engine: DEAP's genetic-programming toolkit drives the outer loop.

DEAP's operators (genHalfAndHalf, cxOnePoint, mutUniform, selTournament) are used as
plain functions on our own small individual class, so DEAP's global ``creator`` is never
touched. DEAP draws from Python's global ``random``; the engine swaps its own generator
state in around every use and restores the caller's afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from deap import base, gp, tools

from symloss.engines.base import REPAIR_OPS, Engine, SearchContext
from symloss.expression import Expression
from symloss.primitives import (
    CLASS_PRIOR,
    CONSTANTS,
    PREDICTION,
    PRIMITIVES,
    TARGET,
    TERMINALS,
    VARIABLES,
)
from symloss.records import Evaluation, GenerationStats, Guesser, generation_stats
from symloss.serialization import finite_or_none, none_as_inf


class _Fitness(base.Fitness):
    weights = (-1.0,)  # minimise the validation metric


class _Individual(gp.PrimitiveTree):
    def __init__(self, content: Any) -> None:
        super().__init__(content)
        self.fitness = _Fitness()


def primitive_set(class_prior: bool = False) -> gp.PrimitiveSet:
    """The DEAP primitive set of the search space: arguments named y and f, and the
    class prior p as a third with ``class_prior``.

    Without ``class_prior`` the set is exactly the one of searches before ``p`` existed,
    so their seeds draw the same random trees; with it, every random draw of a leaf can
    pick ``p`` too, so the same seed draws other trees.
    """
    names = (*VARIABLES, CLASS_PRIOR) if class_prior else VARIABLES
    pset = gp.PrimitiveSet("LOSS", len(names))
    pset.renameArguments(**{f"ARG{i}": name for i, name in enumerate(names)})
    for p in PRIMITIVES.values():
        pset.addPrimitive(p.torch, p.arity, name=p.name)
    for value in CONSTANTS:
        pset.addTerminal(value, name=str(value))
    return pset


def to_expression(tree: Sequence[Any]) -> Expression:
    """Convert a DEAP prefix tree into an :class:`Expression`."""
    nodes = iter(tree)

    def build() -> Expression:
        node = next(nodes)
        if isinstance(node, gp.Primitive):
            return Expression.call(node.name, *(build() for _ in range(node.arity)))
        if node.value in TERMINALS:
            return Expression.var(node.value)
        return Expression.const(float(node.value))

    return build()


def to_tree(expression: Expression, pset: gp.PrimitiveSet) -> _Individual:
    """Convert an :class:`Expression` into a DEAP individual."""
    constants = {float(t.value): t for t in pset.terminals[object] if t.value not in TERMINALS}
    variables = {t.value: t for t in pset.terminals[object] if t.value in TERMINALS}
    nodes: list[Any] = []
    for e in expression.nodes():
        if e.op in PRIMITIVES:
            nodes.append(pset.mapping[e.op])
        elif e.op in TERMINALS:
            if e.op not in variables:
                raise ValueError(
                    f"{expression} uses the class prior p, which this search does not offer; "
                    "turn it on with the setting class_prior=True (classification only)"
                )
            nodes.append(variables[e.op])
        else:
            nodes.append(constants.get(e.value) or gp.Terminal(e.value, False, object))
    return _Individual(nodes)


def repair(tree: _Individual, pset: gp.PrimitiveSet) -> _Individual:
    """Ensure the tree uses both y and f: replace a random leaf by ``op(y, f)``."""
    used = {node.value for node in tree if isinstance(node, gp.Terminal)}
    if TARGET in used and PREDICTION in used:
        return tree
    leaves = [i for i, node in enumerate(tree) if isinstance(node, gp.Terminal)]
    at = random.choice(leaves)
    op = pset.mapping[random.choice(REPAIR_OPS)]
    y, f = (next(t for t in pset.terminals[object] if t.value == v) for v in (TARGET, PREDICTION))
    pair = [y, f] if random.random() < 0.5 else [f, y]
    tree[at : at + 1] = [op, *pair]
    return tree


def mutation_subtree(pset: gp.PrimitiveSet, type_: Any, max_height: int) -> list[Any]:
    """A new subtree for uniform mutation: ramped half-and-half of height 0 to ``max_height``.

    As the reference (``genHalfAndHalf(0, 2)``): half the subtrees are full, half grown,
    so a mutation can insert a lopsided subtree as well as a balanced one.
    """
    return gp.genHalfAndHalf(pset, min_=0, max_=max_height, type_=type_)


@contextlib.contextmanager
def _own_random(state: dict[str, Any]) -> Iterator[None]:
    """Run with the engine's generator state in Python's global ``random``."""
    saved = random.getstate()
    random.setstate(state["random"])
    try:
        yield
    finally:
        state["random"] = random.getstate()
        random.setstate(saved)


def _state_to_json(state: Any) -> Any:
    return [state[0], list(state[1]), state[2]]


def _state_from_json(data: Any) -> Any:
    return (data[0], tuple(data[1]), data[2])


class DeapEngine(Engine):
    """Generational GP with tournament selection, elitism and a seeded population."""

    name = "deap"

    def check_available(self) -> None:
        """DEAP is a core dependency; nothing to check."""

    def search(self, context: SearchContext) -> list[GenerationStats]:
        """Run the generational loop of docs/design.md, "Outer loop"."""
        s = context.settings
        pset = primitive_set(s.class_prior)
        saved = context.load_state()
        state: dict[str, Any]
        if saved is None:
            state = {"random": random.Random(context.seed).getstate()}
            started = time.perf_counter()
            with _own_random(state):
                population = self._initial_population(context, pset)
            context.offer_guess(self._guesser([], population, state, context, pset))
            new = self._score(population, context)
            context.history.append(generation_stats(0, self._summary(population), new, started))
            context.on_generation(context.history[-1])
            first = 1
            self._checkpoint(context, state, population, 0)
        else:
            state = {"random": _state_from_json(saved["random"])}
            population = [to_tree(Expression.parse(t), pset) for t in saved["population"]]
            for ind, fit in zip(population, saved["fitness"], strict=True):
                ind.fitness.values = (none_as_inf(fit),)
            context.history[:] = [GenerationStats.from_dict(h) for h in saved["history"]]
            first = saved["generation"] + 1

        for generation in range(first, s.generations + 1):
            started = time.perf_counter()
            with _own_random(state):
                elite = [copy.deepcopy(i) for i in tools.selBest(population, s.elitism)]
                offspring = self._vary(population, len(population) - s.elitism, context, pset)
            if generation < s.generations:
                context.offer_guess(self._guesser(elite, offspring, state, context, pset))
            new = self._score(offspring, context)
            population = elite + offspring
            context.history.append(
                generation_stats(generation, self._summary(population), new, started)
            )
            context.on_generation(context.history[-1])
            self._checkpoint(context, state, population, generation)
        return list(context.history)

    @staticmethod
    def _score(population: Sequence[_Individual], context: SearchContext) -> list[Evaluation]:
        """Evaluate a generation at once and set each individual's fitness."""
        evaluations = context.evaluate([to_expression(ind) for ind in population])
        for ind, evaluation in zip(population, evaluations, strict=True):
            ind.fitness.values = (evaluation.fitness,)
        return evaluations

    @classmethod
    def _guesser(
        cls, elite: list[_Individual], scored: list[_Individual], state: dict[str, Any],
        context: SearchContext, pset: gp.PrimitiveSet,
    ) -> Guesser:
        """A guess of the offspring bred from ``elite + scored`` once ``scored`` is
        evaluated: the union of the offspring bred with the unknown fitnesses as the
        worst and as the best; those bred in both cases (surely bred) first, then in
        order of breeding.

        It breeds copies of the individuals from a copy of the generator state that the
        next :meth:`_vary` will start from, so guessing changes nothing in the search;
        tournament draws do not depend on fitness, hence many guesses come true.
        """
        def guess(known: Mapping[int, float]) -> list[Expression]:
            s = context.settings
            if not s.generations or (not scored and not elite):
                return []
            guesses: dict[str, Expression] = {}
            bred: list[set[str]] = []
            for unknown in (math.inf, -math.inf):
                population = [copy.deepcopy(ind) for ind in elite + scored]
                for i, ind in enumerate(population[len(elite):]):
                    ind.fitness.values = (known.get(i, unknown),)
                trial = {"random": state["random"]}  # a copy: the search's state stays
                with _own_random(trial):
                    children = cls._vary(population, len(population) - s.elitism, context,
                                         pset)
                expressions = [to_expression(child) for child in children]
                bred.append({str(e) for e in expressions})
                for expression in expressions:
                    guesses.setdefault(str(expression), expression)
            sure = set.intersection(*bred)
            return sorted(guesses.values(), key=lambda e: str(e) not in sure)

        return guess

    @staticmethod
    def _summary(population: Sequence[_Individual]) -> list[tuple[str, float]]:
        return [(str(to_expression(ind)), ind.fitness.values[0]) for ind in population]

    @staticmethod
    def _initial_population(context: SearchContext, pset: gp.PrimitiveSet) -> list[_Individual]:
        s = context.settings
        population: list[_Individual] = []
        seen: set[str] = set()
        for expression in context.seeds if s.seed_population else ():
            if len(population) == s.population_size:
                break
            if str(expression) not in seen:
                seen.add(str(expression))
                population.append(to_tree(expression, pset))
        while len(population) < s.population_size:
            nodes = gp.genHalfAndHalf(pset, min_=s.init_min_height, max_=s.init_max_height)
            population.append(repair(_Individual(nodes), pset))
        return population

    @staticmethod
    def _vary(
        population: list[_Individual], n: int, context: SearchContext, pset: gp.PrimitiveSet
    ) -> list[_Individual]:
        """Select ``n`` parents by tournament and breed one child from each."""
        s = context.settings
        parents = tools.selTournament(population, n, tournsize=s.tournament_size)
        children = []
        for parent in parents:
            child = copy.deepcopy(parent)
            draw = random.random()
            if draw < s.crossover_prob:
                mate = copy.deepcopy(random.choice(parents))
                child, _ = gp.cxOnePoint(child, mate)
            elif draw < s.crossover_prob + s.mutation_prob:
                subtree = functools.partial(mutation_subtree, max_height=s.mutation_max_height)
                (child,) = gp.mutUniform(child, expr=subtree, pset=pset)
            child = repair(child, pset)
            if child.height > s.height_limit:
                child = copy.deepcopy(parent)
            del child.fitness.values
            children.append(child)
        return children

    @staticmethod
    def _checkpoint(
        context: SearchContext, state: dict[str, Any], population: list[_Individual],
        generation: int,
    ) -> None:
        fitness = [ind.fitness.values[0] for ind in population]
        context.save_state({
            "generation": generation,
            "random": _state_to_json(state["random"]),
            "population": [str(to_expression(ind)) for ind in population],
            "fitness": [finite_or_none(f) for f in fitness],
            "history": [h.to_dict() for h in context.history],
        })
