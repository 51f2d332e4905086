"""Nothing loses a finished search: one process per run directory, cheap results recorded
as they happen, summary files that fail to write do not undo the search."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from symloss.estimator import SymbolicLossSearch
from symloss.evaluator import Evaluator
from symloss.network import LearnedLoss
from symloss.records import REJECTED
from symloss.runs import (
    BEST_LOSS_FILE,
    EVALUATIONS_FILE,
    LOCK_FILE,
    PASSED_FILE,
    RunDirectory,
    RunDirectoryInUse,
)
from symloss.serialization import write_json

PARAMS = {"preset": "tiny", "random_state": 0, "verbose": False}


def _holder(run_dir: Path) -> subprocess.Popen:
    """Another process searching in ``run_dir``, paused after its first generation."""
    code = textwrap.dedent(f"""
        import time
        from symloss.estimator import SymbolicLossSearch

        def pause(stats):
            print("searching", flush=True)
            time.sleep(120)

        SymbolicLossSearch(**{PARAMS!r}, run_dir={str(run_dir)!r}, callback=pause).fit(
            "sine", "linear")
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "searching"
    return process


def test_a_second_process_is_refused_and_a_stale_lock_taken_over(tmp_path):
    process = _holder(tmp_path)
    try:
        with pytest.raises(RunDirectoryInUse, match=f"process {process.pid}"):
            SymbolicLossSearch(**PARAMS, run_dir=tmp_path).fit("sine", "linear")
        written = (tmp_path / EVALUATIONS_FILE).read_text()
    finally:
        process.kill()
        process.wait()
    # the holder was killed: its lock is stale, and the search takes the directory over
    search = SymbolicLossSearch(**PARAMS, run_dir=tmp_path).fit("sine", "linear")
    assert search.best_loss_ is not None
    records = RunDirectory(tmp_path).records()
    assert (tmp_path / EVALUATIONS_FILE).read_text().startswith(written)
    assert len({(r.generation, r.index) for r in records}) == len(records)
    assert not (tmp_path / LOCK_FILE).exists()


def test_the_lock_is_released_when_opening_fails(tmp_path):
    SymbolicLossSearch(**PARAMS, run_dir=tmp_path).fit("sine", "linear")
    with pytest.raises(ValueError, match="holds a different run"):
        SymbolicLossSearch(**{**PARAMS, "random_state": 1}, run_dir=tmp_path).fit(
            "sine", "linear")
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(RunDirectoryInUse, match="elsewhere"):
        RunDirectory(tmp_path).open({"format": "test"})
    # a dead pid on this host is stale
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    (tmp_path / LOCK_FILE).write_text(
        json.dumps({"pid": process.pid, "host": socket.gethostname()}))
    run = RunDirectory(tmp_path)
    run.open({"format": "test"})
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    run.close()
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_file_is_not_a_run_directory(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="is an existing file"):
        RunDirectory(path).open({"format": "test"})


def test_fit_returns_when_a_summary_file_cannot_be_written_and_a_rerun_completes_it(tmp_path):
    (tmp_path / BEST_LOSS_FILE).mkdir()  # saving the chosen loss will fail
    with pytest.warns(UserWarning, match="could not save the chosen loss"):
        search = SymbolicLossSearch(**PARAMS, run_dir=tmp_path).fit("sine", "linear")
    assert search.best_loss_ is not None
    assert not list(tmp_path.glob("*.tmp"))
    records = (tmp_path / EVALUATIONS_FILE).read_text()
    passed = (tmp_path / PASSED_FILE).read_text()
    (tmp_path / BEST_LOSS_FILE).rmdir()
    again = SymbolicLossSearch(**PARAMS, run_dir=tmp_path).fit("sine", "linear")
    assert (tmp_path / EVALUATIONS_FILE).read_text() == records  # nothing evaluated again
    assert (tmp_path / PASSED_FILE).read_text() == passed
    assert (tmp_path / BEST_LOSS_FILE).is_file()
    assert str(again.best_loss_.expression) == str(search.best_loss_.expression)


def test_every_record_of_a_run_rebuilds_as_a_loss(tmp_path):
    search = SymbolicLossSearch(**{**PARAMS, "generations": 2}, run_dir=tmp_path).fit(
        "sine", "linear")
    records = [r.evaluation for r in RunDirectory(tmp_path).records()]
    assert len(records) == len(search.evaluations_) > 8
    for evaluation in records:
        if evaluation.weights:
            LearnedLoss(evaluation.expression, "regression", evaluation.weights)


def test_candidates_that_passed_the_poor_training_check_are_not_checked_again(
    sine_task, tiny_settings
):
    settings = tiny_settings.replace(local_search=False, fitness_steps=5)
    rejected = "-square(f - y)"  # minimising it moves the outputs away from the targets
    first = Evaluator(sine_task, settings, seed=0).evaluate(rejected)
    assert first.status == REJECTED and first.reason.startswith("poor training")

    seen: list[str] = []
    Evaluator(sine_task, settings, seed=0, on_passed=seen.append).evaluate_many(
        ["square(f - y)", rejected])
    assert seen == ["square(f - y)"]
    # a resumed search that knows the candidate passed trains it without the check
    resumed = Evaluator(sine_task, settings, seed=0, passed=[rejected]).evaluate(rejected)
    assert not resumed.reason.startswith("poor training")


def test_passed_checks_survive_a_torn_line(tmp_path):
    run = RunDirectory(tmp_path)
    run.append_passed("square(f - y)")
    with open(tmp_path / PASSED_FILE, "a") as handle:
        handle.write('{"expression": "abs(f')
    assert run.passed() == {"square(f - y)"}


def test_records_with_invalid_utf8_are_named(tmp_path):
    (tmp_path / EVALUATIONS_FILE).write_bytes(b"\xff\xfe\n")
    with pytest.raises(ValueError, match=EVALUATIONS_FILE):
        RunDirectory(tmp_path).records()


def test_the_lock_is_released_after_an_interrupted_fit(tmp_path):
    def interrupt(stats):
        raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        SymbolicLossSearch(**PARAMS, run_dir=tmp_path, callback=interrupt).fit("sine", "linear")
    assert not (tmp_path / LOCK_FILE).exists()
    assert time.monotonic() - started < 120


def test_a_held_directory_stays_locked_through_the_search_and_after(tmp_path):
    with RunDirectory(tmp_path).hold():
        SymbolicLossSearch(**PARAMS, run_dir=tmp_path).fit("sine", "linear")
        # the search joined the lock and left it held: the caller writes after it
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()


def test_the_search_command_holds_the_lock_through_its_meta_test(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    argv = ["search", "sine", "--model", "linear", "--run-dir", str(run_dir), "--jobs", "1",
            "--population", "3", "--generations", "1", "--metatest-steps", "100000000",
            "--set", "fitness_steps=5", "--set", "meta_steps=1", "--set", "selection_top_k=0",
            "--set", "poor_training_steps=5"]
    process = subprocess.Popen([sys.executable, "-u", "-m", "symloss.cli", *argv], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in process.stdout:
            if line.startswith("meta-test:"):
                break
        assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == process.pid
        with pytest.raises(RunDirectoryInUse, match=f"process {process.pid}"):
            SymbolicLossSearch(**PARAMS, run_dir=run_dir).fit("sine", "linear")
    finally:
        process.kill()
        process.wait()


def test_atomic_writes_use_temporary_names_of_their_own(tmp_path):
    path = tmp_path / "best_loss.json"
    (tmp_path / "best_loss.json.tmp").mkdir()  # another writer's temporary file, in the way
    write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_loss.json", "best_loss.json.tmp"]
