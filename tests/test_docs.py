"""The package's docstrings cite the project's own design document, and its sections exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
CITATION = re.compile(r'docs/design\.md[,\s(]*"([^"]+)"')


def _sources() -> list[Path]:
    return sorted((ROOT / "symloss").rglob("*.py"))


def test_no_docstring_cites_the_internal_design_file():
    citing = [p.relative_to(ROOT) for p in _sources() if "DESIGN.md" in p.read_text()]
    assert citing == []


def test_cited_sections_exist():
    headings = [line for line in DESIGN.read_text().splitlines() if line.startswith("#")]
    cited = {
        (p.relative_to(ROOT), name)
        for p in _sources()
        for name in CITATION.findall(" ".join(p.read_text().split()))
    }
    assert len(cited) >= 4  # the evaluator, config, engine, library and network cite it
    missing = [(path, name) for path, name in cited if not any(name in h for h in headings)]
    assert missing == []
