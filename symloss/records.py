"""Records that flow between engine, evaluator and run directory.

Small frozen dataclasses that serialise to JSON without pickle. They hold no torch
objects, so engines can use them without knowing torch.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from symloss.expression import Expression
from symloss.serialization import finite_or_none, none_as_inf

OK = "ok"
REJECTED = "rejected"
CACHED = "cached"


@dataclass(frozen=True)
class Evaluation:
    """The outcome of evaluating one candidate loss.

    Attributes
    ----------
    expression : str
        The candidate's expression text.
    key : str
        Its canonical key (see :meth:`symloss.Expression.key`).
    status : {"ok", "rejected", "cached"}
        ``ok``: trained and scored. ``rejected``: failed a check, see ``reason``.
        ``cached``: equal (symbolically or by gradient) to an earlier candidate whose
        result it reuses; ``reason`` names it.
    fitness : float
        Validation metric (error rate / MSE) of a model trained with the loss; lower is
        better; ``inf`` when rejected, except for a candidate stopped by racing (reason
        ``raced: ...``), which keeps its metric at the step where it was stopped so that
        the search can still rank it.
    reason : str
        Why the candidate was rejected or which result it reuses ("" when ok).
    weights : tuple of float
        Edge weights after the local search (empty when not searched).
    timings : dict
        Seconds spent in each stage.
    source_status : str
        For a ``cached`` candidate, the status of the result it reuses (``ok`` or
        ``rejected``; "" otherwise, and in records written before it was kept).
    refined : bool
        True when the loss kept is the locally searched one (``weights`` then holds its
        edge weights): the search trains both the plain expression and the refined loss
        and keeps the refined one only where its fitness is strictly lower.
    unrefined_fitness, refined_fitness : float or None
        Fitness of the plain expression (unit edge weights) and of the refined loss, when
        both were trained (``inf``: training diverged); ``None`` when no local search ran,
        and in records written before they were kept.
    """

    expression: str
    key: str
    status: str
    fitness: float = math.inf
    reason: str = ""
    weights: tuple[float, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    source_status: str = ""
    refined: bool = False
    unrefined_fitness: float | None = None
    refined_fitness: float | None = None

    @property
    def ok(self) -> bool:
        """True when the candidate was trained to a finite fitness, or reuses the result
        of one that was (a candidate stopped by racing keeps a finite fitness but is
        rejected, and so is a candidate that reuses its result)."""
        rejected = REJECTED in (self.status, self.source_status)
        return not rejected and math.isfinite(self.fitness)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``inf`` fitness is written as ``null``)."""
        data = dataclasses.asdict(self)
        data["fitness"] = finite_or_none(self.fitness)
        data["weights"] = list(self.weights)
        for name in ("unrefined_fitness", "refined_fitness"):
            value = data[name]
            if value is not None and not math.isfinite(value):
                data[name] = str(value)  # "inf": JSON has no infinity, and null is "not run"
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        """Inverse of :meth:`to_dict`."""
        return cls(
            expression=data["expression"],
            key=data["key"],
            status=data["status"],
            fitness=none_as_inf(data.get("fitness")),
            reason=data.get("reason", ""),
            weights=tuple(float(w) for w in data.get("weights", ())),
            timings={k: float(v) for k, v in data.get("timings", {}).items()},
            source_status=data.get("source_status", ""),
            # records written before the guard: a loss with weights was the refined one
            refined=bool(data.get("refined", bool(data.get("weights")))),
            unrefined_fitness=_optional_float(data.get("unrefined_fitness")),
            refined_fitness=_optional_float(data.get("refined_fitness")),
        )


def _optional_float(value: Any) -> float | None:
    """``None`` as is; a number, or its text (``"inf"``), as a float."""
    return None if value is None else float(value)


@dataclass(frozen=True)
class GenerationStats:
    """Summary of one generation of the search."""

    generation: int
    best_fitness: float
    median_fitness: float
    best_expression: str
    evaluated: int
    cached: int
    rejected: dict[str, int]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``inf`` written as ``null``)."""
        data = dataclasses.asdict(self)
        for name in ("best_fitness", "median_fitness"):
            data[name] = finite_or_none(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationStats:
        """Inverse of :meth:`to_dict`."""
        values = dict(data)
        for name in ("best_fitness", "median_fitness"):
            values[name] = none_as_inf(values[name])
        return cls(**values)


EvaluateMany = Callable[[Sequence[Expression]], list[Evaluation]]
"""``evaluate(expressions) -> evaluations``: a whole generation, in order (the contract
between an engine and the evaluator)."""
Guesser = Callable[[Mapping[int, float]], list[Expression]]
"""``guess(known)``: candidates the next generation will likely evaluate, given the
fitnesses known so far of the generation being evaluated (by index)."""


def rejection_category(reason: str) -> str:
    """The category of a rejection reason: the text before its first colon."""
    return reason.split(":", 1)[0].strip()


def generation_stats(
    generation: int,
    population: Sequence[tuple[str, float]],
    new: Sequence[Evaluation],
    started: float,
) -> GenerationStats:
    """Summarise a generation: fitness over the whole ``population`` of
    ``(expression, fitness)`` pairs, counts over the ``new`` evaluations."""
    fitnesses = [f for _, f in population]
    best_expression, best_fitness = min(population, key=lambda p: p[1])
    return GenerationStats(
        generation=generation,
        best_fitness=best_fitness,
        median_fitness=statistics.median(fitnesses) if fitnesses else float("inf"),
        best_expression=best_expression,
        evaluated=len(new),
        cached=sum(e.status == CACHED for e in new),
        rejected=dict(Counter(rejection_category(e.reason) for e in new if e.status == REJECTED)),
        seconds=time.perf_counter() - started,
    )
