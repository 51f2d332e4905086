"""A cheap, deterministic stand-in for candidate scoring, for tests of the engines' loops."""

from __future__ import annotations

from symloss.config import preset
from symloss.engines.base import SearchContext
from symloss.expression import Expression
from symloss.library import known_losses
from symloss.records import OK, REJECTED, Evaluation


def synthetic_fitness(expression: Expression) -> float:
    """Deterministic, cheap: prefers size-9 trees, tie-broken by the text."""
    return abs(expression.size - 9) + (sum(map(ord, str(expression))) % 97) / 1000


class Recorder:
    """An ``evaluate`` for SearchContext: scores every expression (rejecting those that
    lack ``y`` or ``f``, as the structural check would), remembers generations."""

    def __init__(self) -> None:
        self.generations: list[list[Expression]] = []

    def __call__(self, expressions):
        self.generations.append(list(expressions))
        return [
            Evaluation(str(x), str(x), OK, fitness=synthetic_fitness(x))
            if x.variables == {"y", "f"}
            else Evaluation(str(x), str(x), REJECTED, reason="structural: lacks y or f")
            for x in expressions
        ]


def synthetic_context(recorder, seed=0, states=None, load=None, seeds=None, **changes):
    """A small regression search context scored by ``recorder``; ``states`` collects the
    saved engine states, ``load`` is the state to resume from."""
    settings = preset("quick").replace(
        **{"population_size": 10, "generations": 12, "height_limit": 5,
           "init_min_height": 1, "init_max_height": 3, **changes}
    )
    return SearchContext(
        kind="regression", settings=settings, seed=seed,
        seeds=known_losses("regression") if seeds is None else seeds, evaluate=recorder,
        load_state=lambda: load,
        save_state=(states.append if states is not None else lambda state: None),
    )
