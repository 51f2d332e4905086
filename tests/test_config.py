"""Settings: declared stages and constraints, one check at construction, presets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from symloss.config import (
    LATER_STAGES,
    PRESETS,
    SEARCH_STAGES,
    STAGES,
    Constraint,
    Settings,
    fields_by_stage,
    preset,
    settings_from,
    settings_table,
)

FIELDS = dataclasses.fields(Settings)


def test_every_setting_declares_its_stage_and_constraint():
    grouped = fields_by_stage()
    assert list(grouped) == list(STAGES) == [*SEARCH_STAGES, *LATER_STAGES]
    assert sorted(f.name for fields in grouped.values() for f in fields) == sorted(
        f.name for f in FIELDS)
    assert all(isinstance(f.metadata["constraint"], Constraint) for f in FIELDS)
    assert [f.name for f in grouped["meta-test"]] == ["metatest_steps", "metatest_seeds"]
    assert "selection_seeds" in [f.name for f in grouped["selection"]]
    settings = preset("quick")
    assert settings.to_dict(SEARCH_STAGES).keys().isdisjoint(
        settings.to_dict(LATER_STAGES))


def _just_outside(spec: dataclasses.Field) -> object | None:
    """A value just below the declared minimum (or the off value's neighbour)."""
    constraint = spec.metadata["constraint"]
    if constraint.minimum is None:
        return None
    if isinstance(spec.default, int) and not isinstance(spec.default, bool):
        return constraint.minimum - 1
    low = constraint.minimum if constraint.open_min else constraint.minimum - 1e-3
    return (low,) if spec.metadata["item"] is not None else low


BOUNDED = [spec for spec in FIELDS if _just_outside(spec) is not None]


@pytest.mark.parametrize("spec", BOUNDED, ids=[spec.name for spec in BOUNDED])
def test_a_value_outside_a_declared_bound_fails_at_construction(spec):
    """Each bound is checked when Settings is built, and the message names the setting,
    what it accepts and the value it got."""
    value = _just_outside(spec)
    with pytest.raises(ValueError) as info:
        Settings().replace(**{spec.name: value})
    message = str(info.value)
    assert message.startswith(f"{spec.name} must be ")
    assert spec.metadata["constraint"].describe() in message
    assert message.endswith(f"got {value!r}")


@pytest.mark.parametrize("change, message", [
    ({"selection_seeds": 0}, "selection_seeds must be at least 1, got 0"),
    ({"race_ratio": 0.5}, "race_ratio must be 0 (off) or at least 1, got 0.5"),
    ({"crossover_prob": 1.5}, "crossover_prob must be in [0, 1], got 1.5"),
    ({"local_search_method": "newton"},
     "local_search_method must be one of ('unrolled', 'implicit', 'online'), got 'newton'"),
    ({"local_search": 1}, "local_search must be bool, got 1"),
    ({"meta_steps": 2.5}, "meta_steps must be int, got 2.5"),
    ({"metatest_seeds": ()}, "metatest_seeds must be a tuple of one or more integers"),
    ({"elitism": 12}, "elitism must be smaller than population_size, got elitism=12, "
                      "population_size=12"),
    ({"crossover_prob": 0.8, "mutation_prob": 0.3},
     "crossover_prob + mutation_prob must be at most 1, got crossover_prob=0.8, "
     "mutation_prob=0.3"),
])
def test_messages_name_the_setting_the_constraint_and_the_value(change, message):
    with pytest.raises(ValueError) as info:
        preset("quick", **change)
    assert str(info.value).startswith(message)


def test_allowed_values_are_converted():
    settings = Settings(lr=1, lr_grid=[1, 2], metatest_seeds=[3])
    assert settings.lr == 1.0 and isinstance(settings.lr, float)
    assert settings.lr_grid == (1.0, 2.0) and settings.metatest_seeds == (3,)
    assert Settings(race_ratio=0).race_ratio == 0.0  # the off value


def test_tiny_preset_is_quick_cut_to_seconds():
    tiny, quick = PRESETS["tiny"], PRESETS["quick"]
    assert (tiny.population_size, tiny.generations, tiny.meta_steps, tiny.fitness_steps) == (
        4, 1, 2, 20)
    assert tiny.replace(**{k: getattr(quick, k) for k in (
        "population_size", "generations", "meta_steps", "unroll_steps", "fitness_steps",
        "poor_training_steps", "selection_steps", "selection_seeds", "metatest_steps",
        "metatest_seeds")}) == quick
    assert list(PRESETS) == ["tiny", "quick", "paper"]


def test_settings_from_sets_only_the_parameters_that_are_set():
    assert settings_from("quick", None, local_search=None) == preset("quick")
    assert settings_from("quick", {"local_search": False}, local_search=None).local_search is False
    assert settings_from("quick", {"population_size": 5}, population_size=5).population_size == 5
    assert settings_from("tiny", {}, generations=3).generations == 3
    with pytest.raises(ValueError, match="population_size is given twice with different "
                                         "values: 5 as a parameter and 6 in settings"):
        settings_from("quick", {"population_size": 6}, population_size=5)


def test_the_settings_document_carries_the_current_table():
    document = Path(__file__).resolve().parents[1] / "docs" / "settings.md"
    assert settings_table() in document.read_text()
