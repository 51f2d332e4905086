"""Shared tiny fixtures: small real tasks and search settings sized for a fast test suite."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from symloss.config import Settings, preset
from symloss.task import Task, make_task, resolve_data


def _subset(data: dict, n_train: int) -> dict:
    """The first ``n_train`` training examples of a resolved built-in dataset (test kept)."""
    x, y = data["train"]
    return {**data, "train": (x[:n_train], y[:n_train])}


@pytest.fixture(scope="session")
def sine_task() -> Task:
    """Sine regression (800 train / 200 val / 1000 test points), built-in 40-40 MLP."""
    data, kind = resolve_data("sine")
    return make_task(data, "mlp", task=kind)


@pytest.fixture(scope="session")
def diabetes_task() -> Task:
    """Diabetes regression (standardised), built-in linear model."""
    data, kind = resolve_data("diabetes")
    return make_task(data, "linear", task=kind)


@pytest.fixture(scope="session")
def digits_task() -> Task:
    """A 600-image digits subset, 10 classes, built-in MLP."""
    data, kind = resolve_data("digits")
    return make_task(_subset(data, 600), "mlp", task=kind)


@pytest.fixture(scope="session")
def tiny_settings() -> Settings:
    """Search settings with tiny inner-loop budgets (local search on)."""
    return preset("quick").replace(
        meta_steps=5,
        fitness_steps=30,
        poor_training_steps=30,
        poor_training_examples=64,
        fingerprint_size=32,
        unroll_steps=2,
        meta_batch_size=64,
        batch_size=64,
    )


@pytest.fixture(scope="session", autouse=True)
def single_thread():
    """One intra-op thread for the whole suite, as symloss's own evaluation uses: small
    models train far faster than with threads competing for two shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def blobs() -> tuple[np.ndarray, np.ndarray]:
    """120 rows, 3 classes; column 0 is the row index, so rows are identifiable."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    x = rng.normal(size=(120, 4)).astype(np.float32) + y[:, None].astype(np.float32)
    x[:, 0] = np.arange(120, dtype=np.float32)
    return x, y


@pytest.fixture(scope="session")
def benchmark_script() -> Callable[[str], ModuleType]:
    """Imports a script of ``benchmarks/`` by file name (they are not a package), once."""
    folder = Path(__file__).resolve().parents[1] / "benchmarks"

    def load(name: str) -> ModuleType:
        module_name = f"benchmark_{name}"
        if module_name not in sys.modules:
            spec = importlib.util.spec_from_file_location(module_name, folder / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        return sys.modules[module_name]

    return load
