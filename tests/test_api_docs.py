"""The API reference build (docs/build_api.py) fails on cross-references that name nothing."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def build_api():
    pytest.importorskip("pdoc")
    spec = importlib.util.spec_from_file_location("build_api", ROOT / "docs" / "build_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _module_from_source(tmp_path: Path, name: str, source: str):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def test_a_reference_to_nothing_is_reported_and_real_ones_are_not(build_api, tmp_path):
    module = _module_from_source(tmp_path, "cites", '''
"""Uses :func:`symloss.task.make_task`, :class:`torch.nn.Module`, :func:`len` and
:meth:`Thing.save`; :func:`symloss.task.make_taks` is a typo."""


class Thing:
    """Written by :meth:`save`."""

    def save(self):
        pass
''')
    assert build_api.broken_references(module) == [
        "cites: :func:`symloss.task.make_taks` names nothing"
    ]


def test_every_reference_in_the_package_resolves(build_api):
    problems = [
        problem
        for name in build_api.public_modules()
        for problem in build_api.broken_references(importlib.import_module(name))
    ]
    assert problems == []
