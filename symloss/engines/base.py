"""The small interface every search engine implements.

An engine proposes :class:`~symloss.expression.Expression` candidates and receives
:class:`~symloss.records.Evaluation` records; it knows nothing about torch or data.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from symloss.config import Settings
from symloss.expression import Expression
from symloss.records import EvaluateMany, GenerationStats, Guesser

REPAIR_OPS = ("add", "sub", "mul", "div")
"""The operators of a repair: a tree missing ``y`` or ``f`` gets a random leaf replaced by
``op(y, f)`` or ``op(f, y)`` with ``op`` one of these (as the reference code does)."""


@dataclass
class SearchContext:
    """What an engine is given to run one search.

    Attributes
    ----------
    kind : {"classification", "regression"}
        The task kind (chooses the baseline and library seeds).
    settings : Settings
        Search settings.
    seed : int
        Random seed of the search.
    seeds : list of Expression
        Expressions the initial population starts with (baseline, known losses, user
        seeds), in order of priority.
    evaluate : callable
        ``evaluate(expressions) -> evaluations``, a whole generation at once, in order.
    load_state : callable
        Returns the engine's last checkpointed state (a JSON-serialisable dict) or None.
    save_state : callable
        Saves the engine's state after a generation (JSON-serialisable dict).
    on_generation : callable
        Called with each generation's :class:`GenerationStats`.
    offer_guess : callable
        ``offer_guess(guesser)`` before ``evaluate`` offers a :data:`Guesser` of the
        generation after it: with a pool of workers, the evaluator may start scoring its
        guesses on workers that would otherwise wait for the generation's last
        candidate (see :class:`symloss.evaluator.Evaluator`). Optional for engines.
    """

    kind: str
    settings: Settings
    seed: int
    seeds: list[Expression]
    evaluate: EvaluateMany
    load_state: Callable[[], dict[str, Any] | None] = lambda: None
    save_state: Callable[[dict[str, Any]], None] = lambda state: None
    on_generation: Callable[[GenerationStats], None] = lambda stats: None
    offer_guess: Callable[[Guesser | None], None] = lambda guesser: None
    history: list[GenerationStats] = field(default_factory=list)


class Engine(ABC):
    """An outer loop that proposes loss expressions."""

    name: str = ""

    @abstractmethod
    def check_available(self) -> None:
        """Raise an ImportError/RuntimeError saying what to install if unusable here."""

    @abstractmethod
    def search(self, context: SearchContext) -> list[GenerationStats]:
        """Run the search; return the statistics of every generation."""


def refuse_class_prior(context: SearchContext, engine: str) -> None:
    """Raise a ValueError when ``context`` asks for the class prior ``p``, which only the
    deap engine's terminal set holds."""
    if context.settings.class_prior:
        raise ValueError(
            f"engine={engine!r} does not offer the class prior p (setting class_prior=True); "
            "use engine='deap', or leave class_prior off"
        )


def is_installed(module: str) -> bool:
    """True when ``module`` can be imported, judged without importing it (optional engines
    are imported only when chosen)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # already in sys.modules, without a spec
        return True
