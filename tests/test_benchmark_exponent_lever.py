"""benchmarks/exponent_lever.py: its loss is the search's ``-(y * sqrt(f))`` at q = 0.5,
and a short run prints the table and where the local search takes the exponent."""

from __future__ import annotations

import pytest
import torch

from symloss.network import LearnedLoss


@pytest.fixture(scope="module")
def bench(benchmark_script):
    return benchmark_script("exponent_lever")


def test_the_power_loss_at_one_half_is_the_square_root_loss(bench, digits_task):
    logits, labels = torch.randn(16, 10, generator=torch.Generator().manual_seed(0)), \
        torch.arange(16) % 10
    ours = bench.power_loss(digits_task, torch.tensor(1.0, dtype=torch.float64))
    expected = LearnedLoss("-(y * sqrt(f))", "classification")(logits, labels)
    assert torch.allclose(ours(logits, labels), expected, rtol=1e-5)


def test_a_short_run_prints_the_table_and_the_searched_exponent(bench, capsys):
    bench.main(["--exponents", "0.5", "--fitness-seeds", "1"])
    out = capsys.readouterr().out
    assert "| 0.5 |" in out and "mean of 1 further seeds" in out
    assert "q 0.5 -> " in out
