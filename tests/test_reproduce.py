"""The benchmark script benchmarks/reproduce.py runs end to end and writes its report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from symloss.config import preset

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce.py"


@pytest.fixture(scope="module")
def reproduce():
    spec = importlib.util.spec_from_file_location("symloss_reproduce", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table_rows(report: str) -> list[str]:
    """Data rows of the report's first (results) table."""
    rows: list[str] = []
    for line in report.splitlines():
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    return rows[2:]  # skip the header and the separator


def test_metatest_seeds_differ_from_search_seed(reproduce):
    for seed in range(5):
        seeds = reproduce.metatest_seeds(seed, 5)
        assert seed not in seeds and len(set(seeds)) == 5


def test_paper_budget_poor_training_steps_follow_the_reference(reproduce):
    """The reference's filter_gradient_steps: 1,000, except 100 on MNIST."""
    assert preset("paper").poor_training_steps == 1000
    for task in ("sine", "diabetes", "digits", "fashion_mnist", "cifar10", "surname"):
        assert reproduce.budget_settings("paper", task).poor_training_steps == 1000
    assert reproduce.budget_settings("paper", "mnist").poor_training_steps == 100


def test_paper_budget_optimiser_follows_the_reference(reproduce):
    """Nesterov momentum 0.9 and weight decay 5e-4 where the reference's configs use them."""
    for task in ("sine", "diabetes", "cifar10"):
        s = reproduce.budget_settings("paper", task)
        assert (s.momentum, s.nesterov, s.weight_decay) == (0.9, True, 5e-4)
    s = reproduce.budget_settings("paper", "mnist")
    assert (s.momentum, s.nesterov, s.weight_decay) == (0.0, False, 0.0)


def test_tiny_run_writes_report(reproduce, tmp_path):
    results = reproduce.main(["--budget", "tiny", "--tasks", "sine", "--methods", "baseline",
                              "gplfl", "--seeds", "0", "--out", str(tmp_path)])
    report = (tmp_path / "report.md").read_text()
    assert "--budget tiny" in report and "torch" in report
    rows = _table_rows(report)
    assert len(rows) == 2
    assert rows[0].startswith("| sine | baseline") and "GP-LFL" in rows[1]
    data = json.loads((tmp_path / "results.json").read_text())
    assert [r["method"] for r in data["rows"]] == ["baseline", "gplfl"]
    assert data["rows"][0]["runs"][0]["metatest_seeds"] == [100, 101]
    assert all(r["summary"]["n"] == 2 for r in data["rows"])
    assert (tmp_path / "curves_sine.png").stat().st_size > 0
    assert (tmp_path / "runs" / "sine-gplfl-s0").is_dir()
    assert results["meta"]["budget"] == "tiny"


@pytest.mark.slow
def test_tiny_all_methods(reproduce, tmp_path):
    reproduce.main(["--budget", "tiny", "--out", str(tmp_path)])
    rows = _table_rows((tmp_path / "report.md").read_text())
    transfer = 1 if importlib.util.find_spec("mlxtend") else 0
    assert len(rows) == 2 * 5 + transfer
    for name in ("curves_sine.png", "curves_digits.png", "loss_digits.png"):
        assert (tmp_path / name).stat().st_size > 0
    for method in ("ml3", "taylorglo"):
        assert (tmp_path / "runs" / f"digits-{method}-s0" / "loss.json").is_file()
