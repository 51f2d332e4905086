"""The ``symloss`` command, called in-process through ``symloss.cli.main``."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import symloss
from symloss.cli import main

TINY_SEARCH = ["--preset", "tiny", "--set", "unroll_steps=5"]



@pytest.fixture(scope="module", autouse=True)
def console_list():
    """``symloss list`` through the installed console script, started in the background
    when this module starts (an interpreter start costs seconds; the in-process tests use
    the other core meanwhile) and checked by the module's last test."""
    script = Path(sys.executable).with_name("symloss")
    assert script.exists(), f"console script not installed next to {sys.executable}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([str(script), "list"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    yield process
    if process.poll() is None:
        process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """``symloss search sine ...``: exit code, stdout, stderr, run dir, --output file."""
    root = tmp_path_factory.mktemp("cli")
    run_dir, output = root / "run", root / "out" / "loss.json"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["search", "sine", *TINY_SEARCH, "--run-dir", str(run_dir),
                     "--output", str(output)])
    return code, out.getvalue(), err.getvalue(), run_dir, output


def run_main(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("symloss: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_search_prints_table_latex_metatest_and_saves(searched):
    code, out, err, run_dir, output = searched
    assert code == 0, err
    assert "searching a loss for sine" in out
    assert "size   val MSE   expression" in out and out.count(">>>") == 1
    assert "LaTeX: " in out
    assert "meta-test: fresh models, seeds [1, 2]" in out
    assert "test MSE after 20 steps, per seed" in out
    assert "MSE" in out and "\nmean" in out and "\nstd" in out
    assert f"saved the loss to {run_dir / 'best_loss.json'}" in out
    assert f"and to {output}" in out
    saved = symloss.load(run_dir / "best_loss.json")
    assert symloss.load(output).to_dict() == saved.to_dict()
    assert saved.task == "regression"
    assert str(saved.expression) in out
    settings = json.loads((run_dir / "run.json").read_text())["settings"]
    assert settings["population_size"] == 4 and settings["generations"] == 1
    assert settings["meta_steps"] == 2 and settings["metatest_steps"] == 20


def test_search_again_resumes(searched, capsys):
    _, first, _, run_dir, _ = searched
    lines = (run_dir / "evaluations.jsonl").read_text()
    code, out, err = run_main(["search", "sine", *TINY_SEARCH, "--run-dir", run_dir], capsys)
    assert code == 0, err
    assert (run_dir / "evaluations.jsonl").read_text() == lines
    assert f"resuming the run in {run_dir} after generation" in out
    assert "resuming" not in first
    table = first[first.index("size   val MSE"):first.index("chosen loss")]
    assert table in out


def test_other_metatest_settings_reuse_the_finished_search(searched, capsys, tmp_path):
    """Changing only the meta-test's settings is the same run: the search is resumed (not
    repeated) and the meta-test runs with the new ones."""
    _, _, _, run_dir, _ = searched
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    lines = (copy / "evaluations.jsonl").read_text()
    code, out, err = run_main(["search", "sine", *TINY_SEARCH, "--metatest-steps", "7",
                               "--run-dir", copy], capsys)
    assert code == 0, err
    assert f"resuming the run in {copy} after generation 1" in out
    assert (copy / "evaluations.jsonl").read_text() == lines
    assert json.loads((copy / "metatest.json").read_text())["steps"] == 7
    assert "test MSE after 7 steps, per seed" in out


def test_show(searched, capsys):
    _, search_out, _, run_dir, _ = searched
    code, out, err = run_main(["show", run_dir], capsys)
    assert code == 0, err
    assert "size   val MSE   expression" in out and out.count(">>>") == 1
    hall = json.loads((run_dir / "hall_of_fame.json").read_text())
    chosen = next(row for row in hall if row["chosen"])
    assert f"chosen: {chosen['expression']}" in out
    assert f"LaTeX: {chosen['latex']}" in out
    assert out.splitlines()[0] in search_out
    history = out[out.index("generation   best"):].splitlines()[1:]
    assert [int(line.split()[0]) for line in history] == list(range(len(history)))
    assert len(history) == 2  # generation 0 and the one generation of TINY_SEARCH


def test_evaluate(searched, capsys):
    *_, output = searched
    code, out, err = run_main(["evaluate", output, "sine", "--steps", "20", "--seeds", "1", "2"],
                              capsys)
    assert code == 0, err
    loss = symloss.load(output)
    assert f"meta-testing {loss.expression} on sine with model 'mlp'" in out
    assert "test MSE after 20 steps, per seed" in out
    rows = [line.split()[0] for line in out.splitlines()[2:]]
    assert rows[:4] == ["seed", "1", "2", "mean"]


def test_evaluate_with_lr_grid(searched, capsys):
    *_, output = searched
    code, out, err = run_main(["evaluate", output, "sine", "--steps", "20", "--seeds", "1",
                               "--lr-grid", "0.01", "0.05"], capsys)
    assert code == 0, err
    lr_row = next(line.split() for line in out.splitlines() if line.startswith("lr "))
    # the grid grows past an edge where the best rate sits there
    assert len(lr_row) == 3 and all(0.001 <= float(lr) <= 0.5 for lr in lr_row[1:])
    assert "best learning rate on validation, from 0.01, 0.05" in out
    assert "at each loss's best rate of 0.01, 0.05 on validation" in out


def test_evaluate_grid_by_default_and_single_rate_on_request(searched, capsys):
    *_, output = searched
    code, out, err = run_main(["evaluate", output, "sine", "--steps", "10", "--seeds", "1",
                               "--lr", "0.03"], capsys)
    assert code == 0, err
    assert "at each loss's best rate of 0.003, 0.01, 0.03, 0.1, 0.3 on validation" in out
    code, out, err = run_main(["evaluate", output, "sine", "--steps", "10", "--seeds", "1",
                               "--lr", "0.03", "--single-lr"], capsys)
    assert code == 0, err
    assert "SGD at lr 0.03" in out and not any(line.startswith("lr ")
                                                for line in out.splitlines())


def test_export_every_target(searched, capsys, tmp_path):
    *_, output = searched
    saved = symloss.load(output)
    code, out, err = run_main(["export", output, "--to", "torch"], capsys)
    assert code == 0, err
    namespace: dict = {}
    exec(out, namespace)  # noqa: S102
    pred, target = torch.randn(32, 1), torch.randn(32, 1)
    assert torch.equal(namespace["loss"](pred, target), saved(pred, target))
    code, out, err = run_main(["export", output, "--to", "numpy", "-o", tmp_path / "l.py"],
                              capsys)
    assert code == 0, err
    assert f"to {tmp_path / 'l.py'}" in out
    assert "import numpy as np" in (tmp_path / "l.py").read_text()
    code, out, err = run_main(["export", output, "--to", "latex"], capsys)
    assert code == 0 and out == saved.latex() + "\n"
    code, out, err = run_main(["export", output, "--to", "sympy", "--digits", "5"], capsys)
    assert code == 0 and out == f"{saved.sympy(5)}\n"


def test_export_refuses_a_neural_loss(capsys, tmp_path):
    from symloss.baselines import ML3Loss

    path = ML3Loss("regression").save(tmp_path / "ml3.json")
    code, _, err = run_main(["export", path, "--to", "torch"], capsys)
    assert_one_line_error(code, err, "ML3Loss, not a symbolic loss")
    code, _, err = run_main(["export", tmp_path / "missing.json", "--to", "jax"], capsys)
    assert_one_line_error(code, err, "missing.json")


def test_list(capsys):
    code, out, _ = run_main(["list"], capsys)
    assert code == 0
    for word in ("datasets:", "sine", "digits", "models:", "mlp", "linear", "presets:", "quick"):
        assert word in out


# -- errors: exit code 2, one line on stderr, no traceback --------------------------------------
def test_unknown_dataset(capsys, tmp_path):
    code, _, err = run_main(["search", "nosuch", "--run-dir", tmp_path / "r"], capsys)
    assert_one_line_error(code, err, "unknown dataset 'nosuch'", "sine")
    code, _, err = run_main(["evaluate", tmp_path / "x.json", "nosuch"], capsys)
    assert code == 2


def test_missing_run_dir(capsys, tmp_path):
    code, _, err = run_main(["show", tmp_path / "missing"], capsys)
    assert_one_line_error(code, err, "hall_of_fame.json not found")


def test_missing_loss_file(capsys, tmp_path):
    code, _, err = run_main(["evaluate", tmp_path / "missing.json", "sine", "--steps", "5"],
                            capsys)
    assert_one_line_error(code, err, "missing.json")


def test_corrupt_loss_file(capsys, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    code, _, err = run_main(["evaluate", path, "sine", "--steps", "5"], capsys)
    assert_one_line_error(code, err, "is not valid JSON")


@pytest.mark.parametrize("pair, fragment", [
    ("meta_steps", "--set expects NAME=VALUE"),
    ("no_such_setting=3", "unknown setting"),
    ("population_size=0", "population_size must be at least 1"),
])
def test_bad_set(pair, fragment, capsys, tmp_path):
    code, _, err = run_main(["search", "sine", "--set", pair, "--run-dir", tmp_path / "r"],
                            capsys)
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "r" / "evaluations.jsonl").exists()


@pytest.mark.parametrize("argv", [
    ["--population", "4", "--set", "population_size=5"],
    ["--no-local-search", "--set", "local_search=true"],
])
def test_an_option_and_a_set_that_disagree(argv, capsys, tmp_path):
    code, _, err = run_main(["search", "sine", *argv, "--run-dir", tmp_path / "r"], capsys)
    assert_one_line_error(code, err, "given twice with different values")
    assert not (tmp_path / "r").exists()


def test_bad_set_value_type(capsys, tmp_path):
    code, _, err = run_main(["search", "sine", "--set", "meta_steps=abc", "--run-dir",
                             tmp_path / "r"], capsys)
    assert_one_line_error(code, err, "meta_steps")


def test_loss_kind_mismatch(capsys, tmp_path):
    path = symloss.LearnedLoss("square(f - y)", task="regression").save(tmp_path / "reg.json")
    code, _, err = run_main(["evaluate", path, "digits", "--steps", "5", "--seeds", "1"],
                            capsys)
    assert_one_line_error(code, err, "regression loss", "classification")


def test_console_script_list(console_list):
    out, err = console_list.communicate(timeout=120)
    assert console_list.returncode == 0, err
    assert "datasets:" in out and "sine" in out and "presets: paper, quick" in out
