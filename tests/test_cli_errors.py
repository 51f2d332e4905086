"""The ``symloss`` command on bad input: one line on stderr and exit status 2, no traceback,
and nothing searched before the input is known to be usable."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from symloss.baselines import ML3Loss, TaylorGLOLoss
from symloss.cli import main
from symloss.network import LearnedLoss
from symloss.runs import CHECKPOINT_FILE, HALL_OF_FAME_FILE

FAST_SEARCH = ["--population", "3", "--generations", "1", "--jobs", "1",
               "--set", "fitness_steps=5", "--set", "meta_steps=1",
               "--set", "selection_top_k=0", "--set", "poor_training_steps=5"]


def _error(capsys, argv: list[str]) -> str:
    """Run the command; it must fail with one line on stderr and status 2."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("symloss: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("loss", [ML3Loss("regression", seed=0), TaylorGLOLoss("regression")])
def test_evaluate_meta_tests_baseline_files(tmp_path, capsys, loss):
    path = loss.save(tmp_path / "loss.json")
    assert main(["evaluate", str(path), "sine", "--steps", "5", "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    assert "learned" in out and "MSE" in out


def test_evaluate_refuses_a_directory(tmp_path, capsys):
    assert "is a directory" in _error(capsys, ["evaluate", str(tmp_path), "sine"])


def test_show_names_a_corrupt_equations_table(tmp_path, capsys):
    (tmp_path / HALL_OF_FAME_FILE).write_text("[{}]")
    assert HALL_OF_FAME_FILE in _error(capsys, ["show", str(tmp_path)])
    (tmp_path / HALL_OF_FAME_FILE).write_text("{not json")
    assert HALL_OF_FAME_FILE in _error(capsys, ["show", str(tmp_path)])


def test_show_names_a_corrupt_checkpoint(tmp_path, capsys):
    (tmp_path / HALL_OF_FAME_FILE).write_text("[]")
    (tmp_path / CHECKPOINT_FILE).write_text('{"generation": 0, "history": [{}]}')
    assert CHECKPOINT_FILE in _error(capsys, ["show", str(tmp_path)])
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"\xff")
    assert CHECKPOINT_FILE in _error(capsys, ["show", str(tmp_path)])


@pytest.mark.parametrize("argv, message", [
    (["--set", "metatest_seeds=5"], "metatest_seeds must be a tuple"),
    (["--set", "nesterov=true"], "nesterov=True needs momentum"),
    (["--set", "fingerprint_rtol=-1"], "fingerprint_rtol must be non-negative"),
    (["--metatest-steps", "0"], "metatest_steps must be at least 1"),
    (["--generations", "0"], "generations must be at least 1"),
])
def test_search_refuses_bad_settings_before_searching(tmp_path, capsys, argv, message):
    run_dir = tmp_path / "run"
    assert message in _error(capsys, ["search", "sine", "--run-dir", str(run_dir), *argv])
    assert not run_dir.exists()


def test_search_refuses_an_output_directory_before_searching(tmp_path, capsys):
    run_dir = tmp_path / "run"
    message = _error(capsys, ["search", "sine", "--run-dir", str(run_dir),
                              "--output", str(tmp_path), *FAST_SEARCH])
    assert "is a directory" in message
    assert not run_dir.exists() and not list(tmp_path.parent.glob("*.tmp"))


def test_search_refuses_a_run_dir_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("x")
    assert "is an existing file" in _error(
        capsys, ["search", "sine", "--run-dir", str(path), *FAST_SEARCH])


def _interrupt_when(argv: list[str], marker: str) -> subprocess.CompletedProcess:
    """Run the command in a subprocess and send Ctrl-C once ``marker`` is printed."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # -u: the marker must reach us while the command runs, not when a buffer fills
    process = subprocess.Popen([sys.executable, "-u", "-m", "symloss.cli", *argv], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if marker in line:
                process.send_signal(signal.SIGINT)
                break
        out, err = process.communicate(timeout=120)
    finally:  # a command that ignored the Ctrl-C must not outlive the test, workers included
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(argv, process.returncode, "".join(lines) + out, err)


def test_ctrl_c_during_evaluate_is_clean(tmp_path):
    path = LearnedLoss("square(f - y)", "regression").save(tmp_path / "loss.json")
    result = _interrupt_when(["evaluate", str(path), "sine", "--steps", "100000000"],
                             "meta-testing")
    assert result.returncode == 130
    assert "Traceback" not in result.stderr and "interrupted" in result.stderr


def test_ctrl_c_during_the_search_meta_test_is_clean(tmp_path):
    run_dir = tmp_path / "run"
    result = _interrupt_when(
        ["search", "sine", "--model", "linear", "--run-dir", str(run_dir),
         "--metatest-steps", "100000000", *FAST_SEARCH], "meta-test:")
    assert result.returncode == 130
    assert "Traceback" not in result.stderr
    assert "the search is complete" in result.stderr
    assert json.loads((run_dir / "best_loss.json").read_text())["format"] == "symloss.loss"


def test_export_refuses_a_huge_loss_file_before_reading_it(tmp_path, capsys):
    path = tmp_path / "loss.json"
    with open(path, "wb") as handle:  # sparse: 200 MB that take no disk and no memory
        handle.truncate(200_000_000)
    message = _error(capsys, ["export", str(path), "--to", "torch"])
    assert "200,000,000 bytes" in message and "16,000,000" in message


def test_export_refuses_an_overlong_expression_in_one_line(tmp_path, capsys):
    data = LearnedLoss("square(f - y)", "regression").to_dict()
    data["expression"] = "(" * 5_000_000
    path = tmp_path / "loss.json"
    path.write_text(json.dumps(data))
    assert "characters long, more than the limit" in _error(
        capsys, ["export", str(path), "--to", "torch"])


def _loss_file(tmp_path, **changes) -> str:
    """A saved regression loss with some fields of the file changed."""
    data = LearnedLoss("square(f - y)", "regression").to_dict()
    for name, value in changes.items():
        if name in ("scale",):
            data[name] = value
        else:
            data["learned_with"] = {**(data["learned_with"] or {}), name: value}
    path = tmp_path / "loss.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize("argv, message", [
    (["--lr", "1e308"], r"--lr must be a finite number above 0 and at most 1e\+06"),
    (["--lr", "-1", "--single-lr"], "--lr must be a finite number above 0"),
    (["--lr", "nan", "--single-lr"], "--lr must be a finite number above 0"),
    (["--lr", "0"], "--lr must be a finite number above 0"),
    (["--lr-grid", "0.1", "inf"], "every --lr-grid rate must be a finite number above 0"),
    (["--seeds", "99999999999999999999"], r"seeds must be integers in \[0, 2\*\*32\)"),
    (["--seeds", "1", "1", "1"], "seeds must differ"),
    (["--device", "meta"], "device 'meta' cannot be used"),
    (["--jobs", "0"], "n_jobs must be a positive whole number"),
    (["--steps", "0"], "--steps must be at least 1"),
])
def test_evaluate_refuses_bad_rates_seeds_and_devices(tmp_path, capsys, argv, message):
    loss = _loss_file(tmp_path)
    assert re.search(message, _error(capsys, ["evaluate", loss, "sine", *argv]))


@pytest.mark.parametrize("field, value, message", [
    ("lr", 0, "'learned_with.lr' must be a finite number above 0"),
    ("momentum", 5, r"'learned_with.momentum' must be a number in \[0, 1\)"),
    ("weight_decay", -3, r"'learned_with.weight_decay' must be a number in \[0, "),
    ("search_scale", 0, "'learned_with.search_scale' must be a finite number above 0"),
    ("optimizer", "rmsprop", "'learned_with.optimizer' must be one of"),
    ("scale", 1e300, "'scale' must be a finite number above 0 and at most 1e\\+06"),
])
def test_loss_files_with_rates_or_scales_that_cannot_train_are_refused(
    tmp_path, capsys, field, value, message
):
    loss = _loss_file(tmp_path, **{field: value})
    assert re.search(message, _error(capsys, ["evaluate", loss, "sine"]))


def test_evaluate_takes_lr_zero_as_given_not_as_missing(tmp_path, capsys):
    loss = _loss_file(tmp_path, lr=0.1)
    assert "--lr must be a finite number above 0 and at most 1e+06, got 0.0" in _error(
        capsys, ["evaluate", loss, "sine", "--lr", "0", "--single-lr"])


@pytest.mark.parametrize("argv, message", [
    (["--population", "4", "--set", "population_size=5"],
     "population_size is given twice with different values"),
    (["--generations", "2", "--set", "generations=3"],
     "generations is given twice with different values"),
    (["--seed", "-1"], r"--seed must be an integer in \[0, 2\*\*32\)"),
    (["--device", "meta"], "device 'meta' cannot be used"),
    (["--jobs", "-3"], "n_jobs must be a positive whole number"),
])
def test_search_refuses_bad_arguments_before_searching(tmp_path, capsys, argv, message):
    run_dir = tmp_path / "run"
    assert re.search(message, _error(capsys, ["search", "sine", "--run-dir", str(run_dir), *argv]))
    assert not run_dir.exists()


@pytest.mark.parametrize("digits", ["-5", "0", "18"])
def test_export_refuses_digits_out_of_range(tmp_path, capsys, digits):
    message = _error(capsys, ["export", _loss_file(tmp_path), "--to", "latex", "--digits", digits])
    assert "--digits must be between 1 and 17" in message


def test_an_unexpected_failure_is_one_line(tmp_path, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise KeyError("no such thing")

    monkeypatch.setattr("symloss.cli.load", fail)
    assert "KeyError: 'no such thing'" in _error(
        capsys, ["export", _loss_file(tmp_path), "--to", "torch"])


def _children(pid: int) -> list[int]:
    """Child process ids of ``pid`` (Linux)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody has reaped yet does not run)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in "ZX"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")
@pytest.mark.parametrize("engine", ["deap", "operon"])
def test_kill_9_of_a_parallel_search_leaves_no_process(tmp_path, engine):
    if engine == "operon":
        pytest.importorskip("pyoperon")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(
        [sys.executable, "-m", "symloss.cli", "search", "sine", "--jobs", "2", "--engine",
         engine, "--run-dir", str(tmp_path / "run")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            workers = _children(process.pid)
        assert len(workers) == 2
        process.kill()
        process.wait()
        time.sleep(10)
        assert not [pid for pid in workers if _running(pid)]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
