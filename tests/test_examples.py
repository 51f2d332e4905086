"""The example scripts run end to end with ``--budget tiny`` (as a user would run them)."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from symloss.config import PRESETS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 240



def start(script: str, *args, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # small models: one thread is fastest
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), *map(str, args)], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, out, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The three examples with --budget tiny, run concurrently; (code, stdout, stderr, dir)."""
    root = tmp_path_factory.mktemp("examples")
    processes = {
        name: start(f"{name}.py", "--budget", "tiny", "--output-dir", root / "out", cwd=root)
        for name in ("regression_arrays", "classification_dataset", "reuse_saved_loss",
                     "noisy_labels")
    }
    return {name: (*finish(p), root / "out") for name, p in processes.items()}


def test_regression_arrays(runs):
    code, out, err, out_dir = runs["regression_arrays"]
    assert code == 0, err
    assert "size   val MSE   expression" in out and ">>>" in out
    assert "LaTeX: " in out
    steps = PRESETS["tiny"].metatest_steps  # the budget is the preset, meta-test included
    assert f"test MSE after {steps} steps, per seed" in out and "learned" in out and "MSE" in out
    saved = out_dir / "regression_arrays_tiny" / "learned_loss.json"
    assert f"saved to {saved}" in out
    data = json.loads(saved.read_text())
    assert data["format"] == "symloss.loss" and data["task"] == "regression"
    assert (out_dir / "regression_arrays_tiny" / "run" / "evaluations.jsonl").exists()


def test_classification_dataset(runs):
    code, out, err, out_dir = runs["classification_dataset"]
    assert code == 0, err
    assert "1797 images of shape (1, 8, 8), 10 classes" in out
    assert "size   fitness   expression" in out and out.count(">>>") == 1
    assert "chosen: " in out and "LaTeX: " in out
    saved = out_dir / "classification_dataset_tiny" / "learned_loss.json"
    assert json.loads(saved.read_text())["task"] == "classification"


def test_reuse_saved_loss_self_contained(runs):
    code, out, err, out_dir = runs["reuse_saved_loss"]
    assert code == 0, err
    assert "log(1 + square(f - y)) (regression)" in out
    epochs = [line for line in out.splitlines() if line.startswith("epoch")]
    assert len(epochs) == 3 and all("train loss" in e and "test MSE" in e for e in epochs)
    assert (out_dir / "cauchy_loss.json").exists()


def test_reuse_a_searched_classification_loss(runs, tmp_path, monkeypatch, capsys):
    """The classification path, on the loss the classification example saved (run in this
    process with runpy: the same script, without paying for another interpreter start)."""
    *_, out_dir = runs["classification_dataset"]
    saved = out_dir / "classification_dataset_tiny" / "learned_loss.json"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["reuse_saved_loss.py", str(saved), "--budget", "tiny"])
    runpy.run_path(str(EXAMPLES / "reuse_saved_loss.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert f"loaded {saved}" in out and "(classification)" in out
    epochs = [line for line in out.splitlines() if line.startswith("epoch")]
    assert len(epochs) == 3 and all("test accuracy" in e for e in epochs)
    assert not list(tmp_path.iterdir())  # given a loss file, it writes nothing


def test_noisy_labels_trains_the_saved_loss_in_a_plain_loop(runs):
    code, out, err, out_dir = runs["noisy_labels"]
    assert code == 0, err
    assert "40% of the training labels replaced by another class" in out
    assert "normalised by x" in out and "cross-entropy's gradient scale" in out
    saved = json.loads((out_dir / "noisy_digits_loss.json").read_text())
    assert saved["learned_with"]["lr"] == 0.1 and saved["scale"] > 0
    rows = [line.split() for line in out.splitlines() if line.startswith(("SGD", "Adam"))]
    assert len(rows) == 2
    for row in rows:  # optimiser (3 words), learned, cross-entropy, difference
        learned, base, difference = map(float, row[3:])
        assert 0.0 <= learned <= 1.0 and 0.0 <= base <= 1.0
        assert difference == pytest.approx(learned - base, abs=2e-3)
