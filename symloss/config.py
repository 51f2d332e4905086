"""Search settings: one frozen dataclass and its presets.

``"paper"`` reproduces the EvoMAL reference settings; ``"quick"`` is sized to finish on
two CPU cores in a few minutes. Any field can be overridden by name.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from symloss.expression import MAX_HEIGHT

LOCAL_SEARCH_METHODS = ("unrolled", "implicit", "online")
"""Values of :attr:`Settings.local_search_method`."""


@dataclass(frozen=True)
class Settings:
    """Every setting of a loss search.

    Outer loop (genetic programming) fields follow docs/design.md, "Outer loop";
    inner-loop fields follow "Inner loop"; ``metatest_*`` fields the meta-testing protocol.

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
    population_size: int = 25
    generations: int = 50
    init_min_height: int = 2
    init_max_height: int = 4
    tournament_size: int = 4
    crossover_prob: float = 0.7
    mutation_prob: float = 0.25
    mutation_max_height: int = 2
    height_limit: int = 10
    elitism: int = 1
    seed_population: bool = True
    # inner loop: rejection protocols
    poor_training_examples: int = 100
    poor_training_steps: int = 1000  # reference: 1000, except 100 for MNIST
    poor_training_lr: float = 0.01
    fingerprint_size: int = 64
    fingerprint_rtol: float = 1e-5
    # scale-free search: candidates normalised to the baseline's gradient magnitude
    normalize: bool = True
    lr_grid: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3)
    # racing: a short run first, the local search and full training for the promising
    race_ratio: float = 1.5
    race_fraction: float = 0.25
    # inner loop: local search
    local_search: bool = True
    local_search_guard: bool = True  # keep a refined loss only where it beats the plain one
    meta_steps: int = 250
    meta_lr: float = 1e-3
    unroll_steps: int = 1
    meta_batch_size: int = 128
    weight_init_std: float = 1e-3
    local_search_method: str = "unrolled"
    implicit_inner_steps: int = 20
    neumann_terms: int = 10
    neumann_alpha: float = 0.01
    # inner loop: fitness training (also the local search's inner SGD step)
    fitness_steps: int = 500
    lr: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    batch_size: int = 128
    # final selection: the best few candidates retrained longer, on more seeds
    selection_top_k: int = 0
    selection_seeds: int = 3
    selection_steps: int = 1000
    selection_lr_width: int = 1
    selection_adam_lr: float = 1e-3
    # meta-testing
    metatest_steps: int = 10_000
    metatest_seeds: tuple[int, ...] = (1, 2, 3, 4, 5)

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            value, default = getattr(self, spec.name), spec.default
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int):
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif isinstance(default, float):
                ok = isinstance(value, int | float) and not isinstance(value, bool)
                if ok:
                    object.__setattr__(self, spec.name, float(value))
            elif isinstance(default, str):
                ok = isinstance(value, str)
            elif spec.name == "metatest_seeds":
                ok = isinstance(value, tuple) and all(
                    isinstance(v, int) and not isinstance(v, bool) for v in value
                )
            else:
                ok = isinstance(value, tuple) and all(
                    isinstance(v, int | float) and not isinstance(v, bool)
                    and math.isfinite(v) and v > 0 for v in value
                )
                if ok:
                    object.__setattr__(self, spec.name, tuple(float(v) for v in value))
            if not ok:
                kind = type(default).__name__
                if isinstance(default, tuple):
                    kind = ("a tuple of ints" if spec.name == "metatest_seeds"
                            else "a tuple of positive numbers")
                raise ValueError(f"setting {spec.name} must be {kind}, got {value!r}")
        positive = (
            "population_size", "generations", "tournament_size", "height_limit",
            "poor_training_examples", "fingerprint_size", "meta_batch_size", "fitness_steps",
            "batch_size", "metatest_steps", "unroll_steps", "implicit_inner_steps",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("meta_steps", "poor_training_steps", "elitism", "mutation_max_height",
                     "selection_top_k", "selection_seeds", "selection_steps",
                     "selection_lr_width", "neumann_terms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        for name in ("crossover_prob", "mutation_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.crossover_prob + self.mutation_prob > 1.0:
            raise ValueError(
                f"crossover_prob + mutation_prob must be at most 1, got "
                f"{self.crossover_prob} + {self.mutation_prob}"
            )
        if not 1 <= self.init_min_height <= self.init_max_height <= self.height_limit:
            raise ValueError(
                "need 1 <= init_min_height <= init_max_height <= height_limit, got "
                f"{self.init_min_height}, {self.init_max_height}, {self.height_limit}"
            )
        if self.elitism >= self.population_size:
            raise ValueError(
                f"elitism ({self.elitism}) must be smaller than population_size "
                f"({self.population_size})"
            )
        if self.local_search_method not in LOCAL_SEARCH_METHODS:
            raise ValueError(
                f"local_search_method must be one of {LOCAL_SEARCH_METHODS}, got "
                f"{self.local_search_method!r}"
            )
        if not (self.race_ratio == 0.0 or self.race_ratio >= 1.0):
            raise ValueError(f"race_ratio must be 0 (off) or at least 1, got {self.race_ratio}")
        if not 0.0 < self.race_fraction < 1.0:
            raise ValueError(f"race_fraction must be in (0, 1), got {self.race_fraction}")
        for name in ("lr", "meta_lr", "poor_training_lr", "neumann_alpha"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        self._check_ranges()

    def _check_ranges(self) -> None:
        """Values a run would otherwise refuse (or misuse) only when it first uses them."""
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"setting {spec.name} must be finite, got {value}")
        for name in ("fingerprint_rtol", "weight_decay", "weight_init_std", "selection_adam_lr"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.nesterov and self.momentum == 0:
            raise ValueError(
                "nesterov=True needs momentum > 0 (Nesterov momentum is a form of momentum); "
                "set momentum, e.g. 0.9, or nesterov=False"
            )
        if self.height_limit > MAX_HEIGHT:
            raise ValueError(
                f"height_limit must be at most {MAX_HEIGHT} (the deepest expression symloss "
                f"accepts), got {self.height_limit}"
            )
        if self.mutation_max_height > self.height_limit:
            raise ValueError(
                f"mutation_max_height ({self.mutation_max_height}) must not exceed "
                f"height_limit ({self.height_limit})"
            )
        if not self.metatest_seeds:
            raise ValueError("metatest_seeds must name at least one seed")
        if any(not 0 <= s < 2**32 for s in self.metatest_seeds):
            raise ValueError(
                f"metatest_seeds must be integers in [0, 2**32), got {list(self.metatest_seeds)}"
            )

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (unknown names raise a ValueError)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(
                f"unknown setting(s) {sorted(unknown)}; valid settings are "
                f"{sorted(f.name for f in dataclasses.fields(self))}"
            )
        for name in ("metatest_seeds", "lr_grid"):
            if isinstance(changes.get(name), list):
                changes[name] = tuple(changes[name])
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        data = dataclasses.asdict(self)
        for name in ("metatest_seeds", "lr_grid"):
            data[name] = list(getattr(self, name))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        """Inverse of :meth:`to_dict`."""
        return cls().replace(**data)


PRESETS: dict[str, Settings] = {
    "paper": Settings(normalize=False, lr_grid=(), selection_lr_width=0,
                      selection_adam_lr=0.0, local_search_guard=False),
    "quick": Settings(
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
    ),
}
"""Named settings: ``"paper"`` (EvoMAL reference) and ``"quick"`` (a few CPU minutes)."""


def preset(name: str, **overrides: Any) -> Settings:
    """The named preset with some fields overridden.

    Setting ``lr`` without ``lr_grid`` fixes the search's learning rate (no tuning).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    if "lr" in overrides and "lr_grid" not in overrides:
        overrides = {**overrides, "lr_grid": ()}
    return PRESETS[name].replace(**overrides)
