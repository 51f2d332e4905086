"""The run directory and resuming a search: finished, interrupted, killed mid-generation."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from symloss.config import preset
from symloss.estimator import SymbolicLossSearch
from symloss.records import OK, REJECTED, Evaluation
from symloss.runs import (
    CHECKPOINT_FILE,
    EVALUATIONS_FILE,
    RUN_FILE,
    RunDirectory,
    write_json,
)

TINY = {"selection_seeds": 2}  # over the tiny preset
GENS = 3
PARAMS = {"preset": "tiny", "population_size": 4, "generations": GENS, "settings": TINY,
          "random_state": 0, "verbose": False}



def search(run_dir: Path, **params) -> SymbolicLossSearch:
    return SymbolicLossSearch(**{**PARAMS, "run_dir": run_dir, **params})


def outcome(evaluations):
    """What must be reproducible about a search (timings are not)."""
    return [(e.expression, e.status, e.fitness, e.reason, e.weights) for e in evaluations]


def file_outcome(run_dir: Path):
    """Records on disk in search order; asserts no (generation, index) is written twice."""
    records = RunDirectory(run_dir).records()
    places = [(r.generation, r.index) for r in records]
    assert len(places) == len(set(places)), "a (generation, index) was recorded twice"
    records.sort(key=lambda r: (r.generation, r.index))
    return [(r.generation, r.index) for r in records], outcome(r.evaluation for r in records)


def line_count(run_dir: Path) -> int:
    return len((run_dir / EVALUATIONS_FILE).read_text().splitlines())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted search, and the checkpoint file as it was after each generation."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    checkpoints: dict[int, dict] = {}

    def capture(stats) -> None:
        # called before the generation's own checkpoint is written: the file holds the last
        path = run_dir / CHECKPOINT_FILE
        if path.exists():
            state = json.loads(path.read_text())
            checkpoints[state["generation"]] = state

    fitted = search(run_dir, callback=capture).fit("sine", "mlp")
    return fitted, checkpoints


# -- RunDirectory -----------------------------------------------------------------------------
def evaluation(i: int) -> Evaluation:
    if i % 3 == 2:
        return Evaluation(f"y * {i}", f"k{i}", REJECTED, reason="structural: no f")
    return Evaluation(f"square(f - y) * {i}", f"k{i}", OK, fitness=0.5 + i, weights=(1.0, 2.0),
                      timings={"fitness": 0.1})


def test_open_new_same_and_different(tmp_path):
    run = RunDirectory(tmp_path / "a" / "run")
    description = {"seed": 0, "settings": {"x": (1, 2)}}
    assert run.open(description) is False
    run.close()  # open() locks the directory until close()
    assert json.loads((run.path / RUN_FILE).read_text()) == {"seed": 0, "settings": {"x": [1, 2]}}
    again = RunDirectory(run.path)
    assert again.open(description) is True
    again.close()
    with pytest.raises(ValueError, match="different run.*differs in seed, settings"):
        RunDirectory(run.path).open({"seed": 1, "settings": {"x": [2]}})
    assert not list(run.path.glob("*.tmp"))


def test_later_stage_settings_are_not_the_runs_identity(tmp_path):
    settings = preset("tiny").to_dict()
    description = {"seed": 0, "settings": settings}
    run = RunDirectory(tmp_path / "run")
    assert run.open(description) is False
    run.close()
    later = {**description, "settings": {**settings, "selection_seeds": 2, "metatest_steps": 9}}
    again = RunDirectory(run.path)
    assert again.open(later) is True
    again.close()
    assert json.loads((run.path / RUN_FILE).read_text()) == later  # records what ran last
    with pytest.raises(ValueError, match="different run.*differs in settings"):
        RunDirectory(run.path).open({**later, "settings": {**settings, "meta_steps": 3}})


def test_records_round_trip(tmp_path):
    run = RunDirectory(tmp_path)
    assert run.records() == []
    for i in range(5):
        run.append(i // 2, i % 2, evaluation(i))
    records = run.records()
    assert [(r.generation, r.index) for r in records] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]
    assert [r.evaluation for r in records] == [evaluation(i) for i in range(5)]
    assert records[2].evaluation.fitness == float("inf")


def test_torn_last_line_is_ignored_and_appending_continues(tmp_path):
    run = RunDirectory(tmp_path)
    for i in range(3):
        run.append(0, i, evaluation(i))
    with open(tmp_path / EVALUATIONS_FILE, "a") as handle:
        handle.write(json.dumps({"generation": 0, "index": 3, **evaluation(3).to_dict()})[:40])
    assert [r.evaluation for r in run.records()] == [evaluation(i) for i in range(3)]
    run.append(0, 3, evaluation(3))
    assert [r.evaluation for r in run.records()] == [evaluation(i) for i in range(4)]


def test_complete_last_line_without_newline_is_kept(tmp_path):
    run = RunDirectory(tmp_path)
    run.append(0, 0, evaluation(0))
    path = tmp_path / EVALUATIONS_FILE
    path.write_text(path.read_text().rstrip("\n"))  # killed between the record and "\n"
    assert [r.evaluation for r in run.records()] == [evaluation(0)]
    run.append(0, 1, evaluation(1))
    assert [r.evaluation for r in run.records()] == [evaluation(0), evaluation(1)]


def test_corrupt_middle_line_raises(tmp_path):
    run = RunDirectory(tmp_path)
    for i in range(3):
        run.append(0, i, evaluation(i))
    path = tmp_path / EVALUATIONS_FILE
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:25]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"{EVALUATIONS_FILE}:2 is not a valid record"):
        run.records()
    lines[1] = json.dumps({"generation": 0, "expression": "f"})  # valid JSON, not a record
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=":2 is not a valid record"):
        run.records()


def test_json_writes_are_atomic(tmp_path):
    run = RunDirectory(tmp_path)
    run.save_checkpoint({"generation": 1, "population": ["f - y"]})
    run.save_hall_of_fame([{"size": 3}])
    write_json(tmp_path / "other.json", {"a": 1})
    assert run.load_checkpoint() == {"generation": 1, "population": ["f - y"]}
    assert json.loads((tmp_path / "hall_of_fame.json").read_text()) == [{"size": 3}]
    assert not list(tmp_path.glob("*.tmp"))
    # a write that fails half-way never replaces the previous file
    with pytest.raises(TypeError):
        run.save_checkpoint({"generation": 2, "bad": object()})
    assert run.load_checkpoint() == {"generation": 1, "population": ["f - y"]}
    run.save_checkpoint({"generation": 2})  # and a later write still works
    assert run.load_checkpoint() == {"generation": 2}
    assert RunDirectory(tmp_path / "new").load_checkpoint() is None


# -- resuming ---------------------------------------------------------------------------------
def test_resume_a_finished_run_trains_nothing(reference, tmp_path):
    fitted, _ = reference
    run_dir = tmp_path / "copy"
    shutil.copytree(fitted.run_dir_, run_dir)
    lines = line_count(run_dir)
    again = search(run_dir).fit("sine", "mlp")
    assert line_count(run_dir) == lines
    assert sorted(outcome(again.evaluations_)) == sorted(outcome(fitted.evaluations_))
    assert again.equations_.equals(fitted.equations_)
    assert again.best_loss_.to_dict()["expression"] == fitted.best_loss_.to_dict()["expression"]
    assert [h.to_dict() for h in again.history_] == [h.to_dict() for h in fitted.history_]


def test_resume_a_finished_run_keeps_evaluation_order(reference, tmp_path):
    fitted, _ = reference
    run_dir = tmp_path / "copy"
    shutil.copytree(fitted.run_dir_, run_dir)
    again = search(run_dir).fit("sine", "mlp")
    assert outcome(again.evaluations_) == outcome(fitted.evaluations_)


def test_resume_after_keyboard_interrupt(reference, tmp_path):
    fitted, _ = reference
    run_dir = tmp_path / "interrupted"
    seen = []

    def interrupt(stats) -> None:
        seen.append(stats.generation)
        if stats.generation == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search(run_dir, callback=interrupt).fit("sine", "mlp")
    assert seen == [0, 1]
    assert json.loads((run_dir / CHECKPOINT_FILE).read_text())["generation"] == 0
    assert not (run_dir / "best_loss.json").exists()
    resumed = search(run_dir).fit("sine", "mlp")
    assert file_outcome(run_dir) == file_outcome(fitted.run_dir_)
    assert line_count(run_dir) == line_count(fitted.run_dir_)
    assert sorted(outcome(resumed.evaluations_)) == sorted(outcome(fitted.evaluations_))
    assert resumed.equations_.equals(fitted.equations_)
    assert [h.best_fitness for h in resumed.history_] == [
        h.best_fitness for h in fitted.history_]
    assert (run_dir / "best_loss.json").read_text() == (
        fitted.run_dir_ / "best_loss.json").read_text().replace(
        str(fitted.run_dir_), str(run_dir))


def test_resume_after_a_torn_partial_generation(reference, tmp_path):
    """What a kill mid-generation 2 leaves: the checkpoint of generation 1, some of
    generation 2's records, and half a line."""
    fitted, checkpoints = reference
    run_dir = tmp_path / "torn"
    shutil.copytree(fitted.run_dir_, run_dir)
    for name in ("hall_of_fame.json", "best_loss.json"):
        (run_dir / name).unlink()
    write_json(run_dir / CHECKPOINT_FILE, checkpoints[1])
    lines = (run_dir / EVALUATIONS_FILE).read_text().splitlines()
    early = [line for line in lines if json.loads(line)["generation"] <= 1]
    gen2 = [line for line in lines if json.loads(line)["generation"] == 2]
    assert len(gen2) >= 2
    (run_dir / EVALUATIONS_FILE).write_text(
        "".join(line + "\n" for line in early + gen2[:1]) + gen2[1][: len(gen2[1]) // 2]
    )
    resumed = search(run_dir).fit("sine", "mlp")
    assert file_outcome(run_dir) == file_outcome(fitted.run_dir_)
    assert sorted(outcome(resumed.evaluations_)) == sorted(outcome(fitted.evaluations_))
    assert resumed.equations_.equals(fitted.equations_)


def max_generation(text: str) -> int:
    """The highest generation among the complete records of a JSON-lines text."""
    best = -1
    for line in text.splitlines():
        with contextlib.suppress(ValueError):  # a line being written
            best = max(best, json.loads(line)["generation"])
    return best


KILLED_SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from symloss.estimator import SymbolicLossSearch
    SymbolicLossSearch(preset="tiny", population_size=4, generations={gens}, settings={tiny!r},
                       random_state=0, verbose=False, run_dir=sys.argv[1]).fit("sine", "mlp")
""")


def test_resume_after_sigkill_mid_run(reference, tmp_path):
    fitted, _ = reference
    run_dir = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = KILLED_SCRIPT.format(gens=GENS, tiny=TINY)
    process = subprocess.Popen([sys.executable, "-c", script, str(run_dir)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    path = run_dir / EVALUATIONS_FILE
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if path.exists() and max_generation(path.read_text()) >= 1:
                break
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        stderr = process.stderr.read().decode()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL, stderr  # killed, not finished
    assert max_generation(path.read_text()) >= 1  # killed once generation 1 had started
    assert not (run_dir / "best_loss.json").exists()
    resumed = search(run_dir).fit("sine", "mlp")
    assert file_outcome(run_dir) == file_outcome(fitted.run_dir_)
    assert sorted(outcome(resumed.evaluations_)) == sorted(outcome(fitted.evaluations_))
    assert resumed.equations_.equals(fitted.equations_)
