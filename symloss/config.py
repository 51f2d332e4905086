"""Search settings: one frozen dataclass, its declared constraints, and its presets.

Every field is declared with the stage of the search that uses it and the values it
accepts (:class:`Constraint`); one generic check runs when a :class:`Settings` is built,
so a bad value fails at once, naming the setting, what it accepts and what it got,
rather than after the stages before the one that uses it. Attribute names stay flat
(``settings.meta_steps``) and any field can be overridden by name.

A new setting is one line in :class:`Settings`, e.g.
``meta_steps: int = _setting(250, LOCAL_SEARCH, minimum=0)``; a rule between settings is
one entry of ``_RELATIONS``.

Presets: ``"tiny"`` (seconds: only proves the pipeline runs, for tests and smoke runs),
``"quick"`` (a few minutes on two CPU cores) and ``"paper"`` (the EvoMAL reference).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from symloss.expression import MAX_HEIGHT

GP = "gp"
SCREENING = "screening"
LOCAL_SEARCH = "local search"
TRAINING = "training"
SELECTION = "selection"
METATEST = "meta-test"
STAGES = (GP, SCREENING, LOCAL_SEARCH, TRAINING, SELECTION, METATEST)
"""The stages of a search, in the order they run; each setting belongs to one."""
SEARCH_STAGES = (GP, SCREENING, LOCAL_SEARCH, TRAINING)
"""The stages whose settings decide the search's records: a run directory is the same
run only if these are the same. The later stages (:data:`LATER_STAGES`) read the
records and can be rerun with other settings."""
LATER_STAGES = (SELECTION, METATEST)

LOCAL_SEARCH_METHODS = ("unrolled", "implicit", "online")
"""Values of :attr:`Settings.local_search_method`."""


@dataclass(frozen=True)
class Constraint:
    """The values a setting accepts, beyond its type (for a tuple: each element's).

    Parameters
    ----------
    minimum, maximum : float, optional
        Bounds, inclusive unless ``open_min`` / ``open_max``.
    choices : tuple, optional
        The only values allowed.
    off : float, optional
        One value outside the bounds that is allowed too (it turns a feature off).
    nonempty : bool
        For tuples: at least one element.
    """

    minimum: float | None = None
    maximum: float | None = None
    open_min: bool = False
    open_max: bool = False
    choices: tuple[Any, ...] = ()
    off: float | None = None
    nonempty: bool = False

    def allows(self, value: Any) -> bool:
        """Whether one value (a tuple's element) is allowed."""
        if self.choices:
            return value in self.choices
        if self.off is not None and value == self.off:
            return True
        if self.minimum is not None and (
            value <= self.minimum if self.open_min else value < self.minimum
        ):
            return False
        return self.maximum is None or (
            value < self.maximum if self.open_max else value <= self.maximum
        )

    def describe(self) -> str:
        """The constraint in words, e.g. ``"at least 1"`` or ``"in (0, 1)"``."""
        if self.choices:
            return f"one of {self.choices}"
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            text = (f"in {'(' if self.open_min else '['}{_number(low)}, {_number(high)}"
                    f"{')' if self.open_max else ']'}")
        else:
            words = []
            if low == 0:
                words.append("positive" if self.open_min else "non-negative")
            elif low is not None:
                words.append(("greater than " if self.open_min else "at least ")
                             + _number(low))
            if high is not None:
                words.append(("less than " if self.open_max else "at most ") + _number(high))
            text = " and ".join(words)
        return f"{_number(self.off)} (off) or {text}" if self.off is not None else text


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _setting(default: Any, stage: str, item: type | None = None, **constraint: Any) -> Any:
    """A :class:`Settings` field: its default, stage and constraint (``item``: the type
    of a tuple's elements)."""
    return dataclasses.field(default=default, metadata={
        "stage": stage, "item": item, "constraint": Constraint(**constraint),
    })


_RELATIONS: tuple[tuple[str, tuple[str, ...], Callable[[Settings], bool]], ...] = (
    ("crossover_prob + mutation_prob must be at most 1", ("crossover_prob", "mutation_prob"),
     lambda s: s.crossover_prob + s.mutation_prob <= 1.0),
    ("need init_min_height <= init_max_height <= height_limit",
     ("init_min_height", "init_max_height", "height_limit"),
     lambda s: s.init_min_height <= s.init_max_height <= s.height_limit),
    ("mutation_max_height must not exceed height_limit", ("mutation_max_height", "height_limit"),
     lambda s: s.mutation_max_height <= s.height_limit),
    ("elitism must be smaller than population_size", ("elitism", "population_size"),
     lambda s: s.elitism < s.population_size),
    ("nesterov=True needs momentum > 0 (Nesterov momentum is a form of momentum); set "
     "momentum, e.g. 0.9, or nesterov=False", ("nesterov", "momentum"),
     lambda s: not s.nesterov or s.momentum > 0),
)
"""Constraints between settings: (the rule, the settings it names, its check)."""


@dataclass(frozen=True)
class Settings:
    """Every setting of a loss search, each declared with its stage and constraint.

    Outer loop (genetic programming) fields follow docs/design.md, "Outer loop";
    inner-loop fields follow "Inner loop"; ``metatest_*`` fields the meta-testing protocol.
    :func:`fields_by_stage` lists them by stage; a value outside its constraint raises a
    ValueError when the settings are built.

    ``normalize`` (our addition, off in ``paper``): every candidate is scaled to the
    baseline's gradient magnitude (:mod:`symloss.scale`) inside the network that the
    local search differentiates and in every training run, so no candidate can gain
    by multiplying itself by a constant; the step size is tuned separately. The
    search's rate ``lr`` is then chosen before the first generation as the baseline's
    best on ``lr_grid`` (short runs of ``fitness_steps``); an empty grid, or setting
    ``lr`` yourself (:func:`preset`), keeps ``lr`` as given. The final selection scores
    every finalist at ``lr`` and ``selection_lr_width`` rungs either side of it on the
    1-3-10 ladder, and keeps each one's best, so a loss wins by its shape, not by its
    step size. With ``selection_adam_lr`` above 0, every finalist is also trained with
    Adam at that rate (an ordinary loop the loss was not searched in); a learned loss
    can win only if it does no worse there than the plain baseline at every checkpoint
    of the run, and finalists rank by the average of their SGD and Adam means.

    ``race_*`` is our addition (racing): in every generation after the first, a
    candidate is first trained without local search for ``race_fraction`` of
    ``fitness_steps``; if its validation metric is then more than ``race_ratio`` times
    that of the best earlier candidate's expression after the same steps (same
    initialisation and batches), it is rejected as ``raced`` without the local search
    and the full training. ``race_ratio=0`` turns racing off; it applies only with the
    local search on.

    ``selection_*`` is our addition: after the search, the ``selection_top_k`` best
    distinct losses (and the baseline) are retrained for ``selection_steps`` steps on
    ``selection_seeds`` seeds and the best mean validation metric wins. One short
    training run per candidate favours losses that merely train fast (short-horizon
    bias) or got a lucky seed; the longer, repeated runs counter both. ``0`` (the
    ``paper`` preset) keeps the reference's choice: the best search fitness.

    ``local_search_guard`` (our addition, off in ``paper``): with the local search on,
    both the plain expression and the refined loss are trained for fitness, and the
    refined one is kept only where its fitness is strictly lower (docs/design.md,
    "Local search"); the plain run continues the race's short run where there was one.

    ``local_search_method`` picks how the edge weights are refined: ``"unrolled"`` (the
    reference: differentiate through ``unroll_steps`` SGD steps from a fresh model),
    ``"online"`` (the same, from one model trained on with the current loss across the
    ``fitness_steps`` horizon; the ``quick`` default) or ``"implicit"`` (train one model
    on with the current loss for ``implicit_inner_steps`` steps per meta-step, then the
    implicit-function-theorem hypergradient at its weights, the inverse Hessian
    approximated by a ``neumann_terms``-term Neumann series with step ``neumann_alpha``;
    see :mod:`symloss.implicit`).
    """

    # outer loop
    population_size: int = _setting(25, GP, minimum=1)
    generations: int = _setting(50, GP, minimum=1)
    init_min_height: int = _setting(2, GP, minimum=1)
    init_max_height: int = _setting(4, GP, minimum=1)
    tournament_size: int = _setting(4, GP, minimum=1)
    crossover_prob: float = _setting(0.7, GP, minimum=0.0, maximum=1.0)
    mutation_prob: float = _setting(0.25, GP, minimum=0.0, maximum=1.0)
    mutation_max_height: int = _setting(2, GP, minimum=0)
    height_limit: int = _setting(10, GP, minimum=1, maximum=MAX_HEIGHT)
    elitism: int = _setting(1, GP, minimum=0)
    seed_population: bool = _setting(True, GP)
    # offer the class-prior terminal p (classification only)
    class_prior: bool = _setting(False, GP)
    # inner loop: rejection protocols
    poor_training_examples: int = _setting(100, SCREENING, minimum=1)
    # reference: 1000, except 100 for MNIST
    poor_training_steps: int = _setting(1000, SCREENING, minimum=0)
    poor_training_lr: float = _setting(0.01, SCREENING, minimum=0.0, open_min=True)
    fingerprint_size: int = _setting(64, SCREENING, minimum=1)
    fingerprint_rtol: float = _setting(1e-5, SCREENING, minimum=0.0)
    # scale-free search: candidates normalised to the baseline's gradient magnitude
    normalize: bool = _setting(True, TRAINING)
    lr_grid: tuple[float, ...] = _setting((0.003, 0.01, 0.03, 0.1, 0.3), TRAINING, item=float,
                                          minimum=0.0, open_min=True)
    # racing: a short run first, the local search and full training for the promising
    race_ratio: float = _setting(1.5, SCREENING, minimum=1.0, off=0.0)
    race_fraction: float = _setting(0.25, SCREENING, minimum=0.0, maximum=1.0, open_min=True,
                                    open_max=True)
    # inner loop: local search
    local_search: bool = _setting(True, LOCAL_SEARCH)
    # keep a refined loss only where it beats the plain one
    local_search_guard: bool = _setting(True, LOCAL_SEARCH)
    meta_steps: int = _setting(250, LOCAL_SEARCH, minimum=0)
    meta_lr: float = _setting(1e-3, LOCAL_SEARCH, minimum=0.0, open_min=True)
    unroll_steps: int = _setting(1, LOCAL_SEARCH, minimum=1)
    meta_batch_size: int = _setting(128, LOCAL_SEARCH, minimum=1)
    weight_init_std: float = _setting(1e-3, LOCAL_SEARCH, minimum=0.0)
    local_search_method: str = _setting("unrolled", LOCAL_SEARCH, choices=LOCAL_SEARCH_METHODS)
    implicit_inner_steps: int = _setting(20, LOCAL_SEARCH, minimum=1)
    neumann_terms: int = _setting(10, LOCAL_SEARCH, minimum=0)
    neumann_alpha: float = _setting(0.01, LOCAL_SEARCH, minimum=0.0, open_min=True)
    # inner loop: fitness training (also the local search's inner SGD step)
    fitness_steps: int = _setting(500, TRAINING, minimum=1)
    lr: float = _setting(0.01, TRAINING, minimum=0.0, open_min=True)
    momentum: float = _setting(0.0, TRAINING, minimum=0.0, maximum=1.0, open_max=True)
    nesterov: bool = _setting(False, TRAINING)
    weight_decay: float = _setting(0.0, TRAINING, minimum=0.0)
    batch_size: int = _setting(128, TRAINING, minimum=1)
    # final selection: the best few candidates retrained longer, on more seeds
    selection_top_k: int = _setting(0, SELECTION, minimum=0)
    selection_seeds: int = _setting(3, SELECTION, minimum=1)
    selection_steps: int = _setting(1000, SELECTION, minimum=1)
    selection_lr_width: int = _setting(1, SELECTION, minimum=0)
    selection_adam_lr: float = _setting(1e-3, SELECTION, minimum=0.0)
    # meta-testing
    metatest_steps: int = _setting(10_000, METATEST, minimum=1)
    metatest_seeds: tuple[int, ...] = _setting((1, 2, 3, 4, 5), METATEST, item=int, minimum=0,
                                               maximum=2**32, open_max=True, nonempty=True)

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            object.__setattr__(self, spec.name, _checked(spec, getattr(self, spec.name)))
        for rule, names, holds in _RELATIONS:
            if not holds(self):
                values = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
                raise ValueError(f"{rule}, got {values}")

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (unknown names raise a ValueError)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(
                f"unknown setting(s) {sorted(unknown)}; valid settings are "
                f"{sorted(f.name for f in dataclasses.fields(self))}"
            )
        return dataclasses.replace(self, **changes)

    def metatest_seeds_for(self, search_seed: int) -> tuple[int, ...]:
        """The meta-test seeds, with any equal to the search seed replaced by unused ones.

        Meta-testing on the search's own seed would reuse the initialisation and batches
        the loss was selected on (a bias of the reference code).
        """
        seeds: list[int] = []
        candidate = max(self.metatest_seeds) + 1
        for seed in self.metatest_seeds:
            if seed == search_seed or seed in seeds:
                while candidate == search_seed or candidate in self.metatest_seeds:
                    candidate += 1
                seed, candidate = candidate, candidate + 1
            seeds.append(seed)
        return tuple(seeds)

    def to_dict(self, stages: tuple[str, ...] = STAGES) -> dict[str, Any]:
        """JSON-serialisable form: the settings of ``stages`` (default all), in field order.

        ``to_dict(SEARCH_STAGES)`` is what decides a search's records (its identity in a
        run directory). ``class_prior`` is written only when on, so a search without it
        has the identity it had before the setting existed.
        """
        return {spec.name: _plain(getattr(self, spec.name)) for spec in dataclasses.fields(self)
                if spec.metadata["stage"] in stages
                and not (spec.name == "class_prior" and not self.class_prior)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        """Inverse of :meth:`to_dict`."""
        return cls().replace(**data)


_UNDECLARED = [spec.name for spec in dataclasses.fields(Settings) if "stage" not in spec.metadata]
if _UNDECLARED:  # a field added without its stage and constraint: refuse at import
    raise TypeError(f"settings {_UNDECLARED} must be declared with _setting(default, stage, ...)")


def fields_by_stage() -> dict[str, list[dataclasses.Field[Any]]]:
    """The :class:`Settings` fields of each stage, stages in :data:`STAGES` order; each
    field's ``metadata["constraint"]`` is its :class:`Constraint`."""
    grouped: dict[str, list[dataclasses.Field[Any]]] = {stage: [] for stage in STAGES}
    for spec in dataclasses.fields(Settings):
        grouped[spec.metadata["stage"]].append(spec)
    return grouped


def settings_table() -> str:
    """Every setting as a Markdown table, by stage: its default, its value in each
    preset and the values it accepts (docs/settings.md carries this table)."""
    names = list(PRESETS)
    lines = ["| setting | default | " + " | ".join(f"`{n}`" for n in names) + " | accepts |",
             "|---|---|" + "---|" * len(names) + "---|"]
    for stage, specs in fields_by_stage().items():
        lines.append(f"| **{stage}** |" + " |" * (len(names) + 2))
        for spec in specs:
            default = _plain(spec.default)
            values = [_plain(getattr(PRESETS[n], spec.name)) for n in names]
            cells = [f"`{v}`" if v != default else "" for v in values]
            accepts = _accepts(spec)
            lines.append(f"| `{spec.name}` | `{default}` | " + " | ".join(cells)
                         + f" | {accepts} |")
    return "\n".join(lines)


def _accepts(spec: dataclasses.Field[Any]) -> str:
    constraint: Constraint = spec.metadata["constraint"]
    item = spec.metadata["item"]
    if item is not None:
        kind = "integers" if item is int else "numbers"
        return f"tuple of {kind}, each {constraint.describe()}"
    kind = type(spec.default).__name__
    text = constraint.describe()
    return f"{kind}, {text}" if text else kind


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _is_number(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if kind is int:
        return isinstance(value, int)
    return isinstance(value, int | float) and math.isfinite(value)


def _checked(spec: dataclasses.Field[Any], value: Any) -> Any:
    """``value`` for setting ``spec``, converted to its type (ints to float, lists to
    tuples), or a ValueError naming the setting, what it accepts and the value."""
    default, item = spec.default, spec.metadata["item"]
    constraint: Constraint = spec.metadata["constraint"]
    if item is not None:
        items = "integers" if item is int else "numbers"
        extra = constraint.describe()
        accepts = (f"a tuple of {'one or more ' if constraint.nonempty else ''}{items}"
                   + (f", each {extra}" if extra else ""))
        if isinstance(value, list):
            value = tuple(value)
        ok = (isinstance(value, tuple) and (value or not constraint.nonempty)
              and all(_is_number(v, item) and constraint.allows(v) for v in value))
        if not ok:
            raise ValueError(f"{spec.name} must be {accepts}, got {value!r}")
        return tuple(item(v) for v in value)
    kind = type(default)
    if kind in (int, float):
        if not _is_number(value, int) and not (kind is float and _is_number(value, float)):
            if kind is float and isinstance(value, float):
                raise ValueError(f"{spec.name} must be finite, got {value}")
            raise ValueError(f"{spec.name} must be {kind.__name__}, got {value!r}")
        value = kind(value)
    elif not isinstance(value, kind):
        raise ValueError(f"{spec.name} must be {kind.__name__}, got {value!r}")
    if not constraint.allows(value):
        raise ValueError(f"{spec.name} must be {constraint.describe()}, got {value!r}")
    return value


_QUICK = Settings(
    population_size=12,
    generations=6,
    meta_steps=40,
    unroll_steps=5,
    meta_lr=1e-2,
    local_search_method="online",
    fitness_steps=300,
    poor_training_steps=100,
    selection_top_k=5,
    metatest_steps=2000,
)
PRESETS: dict[str, Settings] = {
    "tiny": _QUICK.replace(
        population_size=4,
        generations=1,
        meta_steps=2,
        unroll_steps=1,
        fitness_steps=20,
        poor_training_steps=10,
        selection_steps=20,
        selection_seeds=1,
        metatest_steps=20,
        metatest_seeds=(1, 2),
    ),
    "quick": _QUICK,
    "paper": Settings(normalize=False, lr_grid=(), selection_lr_width=0,
                      selection_adam_lr=0.0, local_search_guard=False),
}
"""Named settings, smallest first: ``"tiny"`` (``"quick"`` cut to seconds: proves that a
pipeline runs, finds nothing), ``"quick"`` (a few CPU minutes) and ``"paper"`` (the EvoMAL
reference). Their names are the one budget vocabulary of the CLI, the examples and
``benchmarks/reproduce.py``."""


def settings_from(name: str, overrides: Mapping[str, Any] | None = None,
                  **parameters: Any) -> Settings:
    """Preset ``name`` with ``overrides`` and every one of ``parameters`` that is set.

    For callers whose own parameters duplicate settings (the estimator's
    ``population_size``, ``generations`` and ``local_search``): a parameter of ``None``
    is not set and leaves the preset's or ``overrides``' value; a set one that
    ``overrides`` names too must agree with it, so neither silently wins.

    Raises
    ------
    ValueError
        If a parameter and ``overrides`` give one setting different values, or a value
        is outside its setting's constraint.
    """
    merged = dict(overrides or {})
    for name_, value in parameters.items():
        if value is None:
            continue
        if name_ in merged and merged[name_] != value:
            raise ValueError(
                f"{name_} is given twice with different values: {value!r} as a parameter and "
                f"{merged[name_]!r} in settings; give it once"
            )
        merged[name_] = value
    return preset(name, **merged)


def preset(name: str, **overrides: Any) -> Settings:
    """The named preset with some fields overridden.

    Setting ``lr`` without ``lr_grid`` fixes the search's learning rate (no tuning).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    if "lr" in overrides and "lr_grid" not in overrides:
        overrides = {**overrides, "lr_grid": ()}
    return PRESETS[name].replace(**overrides)
