"""The run directory: everything a search records, and what resuming reads back.

Layout::

    run.json            what the run is (settings, seed, engine, data); checked on resume
    evaluations.jsonl   one Evaluation per line, appended as each one is decided
    checkpoint.json     the engine's state after the last completed generation
    hall_of_fame.json   the equations table of the finished search
    selection.json      the finalists of the final selection and their metrics
    best_loss.json      the chosen loss (symloss.load reads it)
    passed.jsonl        candidates that passed the poor-training check (a cache for resume)
    training.jsonl      validation metrics of the final selection's training runs (a
                        cache: a resumed selection trains only the runs it lacks)
    lock                the process searching in the directory now (pid and host)
    task.json           what the data and model were (for reports)
    metatest.json       the meta-test of the chosen loss (written by ``symloss search``)

What makes two runs the same is ``run.json`` without the settings of the stages that run
after the search (the final selection and the meta-test, :data:`symloss.config.LATER_STAGES`):
those only read the records, so a finished search can be opened again with other
selection or meta-test settings, and ``run.json`` then records the new ones.

JSON files are written atomically (temporary name, then rename); the JSON-lines files are
append-only and a torn last line (a killed process) is ignored on reading.

One process at a time: :meth:`RunDirectory.open` creates ``lock`` exclusively and refuses
a directory whose lock belongs to a running process. A lock left by a process that no
longer runs on this host is taken over; one from another host, or written by a process
killed in the instant of creating it, must be deleted by hand.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from symloss.config import LATER_STAGES, fields_by_stage
from symloss.records import Evaluation, GenerationStats, generation_stats
from symloss.serialization import append_lines, read_json, write_json, write_text
from symloss.version import __version__

logger = logging.getLogger("symloss")

RUN_FILE = "run.json"
EVALUATIONS_FILE = "evaluations.jsonl"
CHECKPOINT_FILE = "checkpoint.json"
HALL_OF_FAME_FILE = "hall_of_fame.json"
BEST_LOSS_FILE = "best_loss.json"
SELECTION_FILE = "selection.json"
SEARCH_LR_FILE = "search_lr.json"
PASSED_FILE = "passed.jsonl"
TRAINING_FILE = "training.jsonl"
LOCK_FILE = "lock"
TASK_FILE = "task.json"
METATEST_FILE = "metatest.json"
RUNS_ROOT = Path("runs")
"""Where run directories go when none is named (the CLI's and the estimator's default)."""


def new_run_path(label: str | None = None) -> Path:
    """A fresh run directory path under :data:`RUNS_ROOT`: ``runs/<label>-<timestamp>``,
    or ``runs/<timestamp>`` without a label."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return RUNS_ROOT / (f"{label}-{stamp}" if label else stamp)


_HELD: set[Path] = set()
"""Directories this process holds through :meth:`RunDirectory.hold`."""


class RunDirectoryInUse(RuntimeError):
    """Another process is searching in the run directory."""


def _process_alive(pid: int) -> bool:
    """True when process ``pid`` runs on this host (or it cannot be told)."""
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, under another user
        return True
    return True


def _identity(description: Mapping[str, Any]) -> dict[str, Any]:
    """``description`` without the settings of the stages after the search."""
    settings = description.get("settings")
    if not isinstance(settings, dict):
        return dict(description)
    later = {spec.name for stage in LATER_STAGES for spec in fields_by_stage()[stage]}
    return {**description,
            "settings": {k: v for k, v in settings.items() if k not in later}}


@dataclass(frozen=True)
class Record:
    """An evaluation with its place in the search."""

    generation: int
    index: int
    evaluation: Evaluation


class RunDirectory:
    """A search's records on disk.

    Parameters
    ----------
    path : path-like
        The directory (created if needed).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._locked = False

    @contextlib.contextmanager
    def hold(self) -> Iterator[RunDirectory]:
        """Lock the directory for the block, for work around a search: the search's own
        :meth:`open` in this process then joins the lock instead of refusing it, and
        its :meth:`close` leaves it held, so no other process writes in the directory
        until the block ends (the ``symloss search`` command holds it through its
        meta-test and its last file)."""
        self._make()
        self._lock()
        _HELD.add(self.path.resolve())
        try:
            yield self
        finally:
            _HELD.discard(self.path.resolve())
            self.close()

    def _make(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"run directory {self.path} is an existing file; pass a directory")
        self.path.mkdir(parents=True, exist_ok=True)

    def open(self, description: Mapping[str, Any]) -> bool:
        """Lock the directory and start or continue the run described by ``description``.

        Returns True when an earlier run with the same description exists (resume); a
        description that differs from the saved one only in the later stages' settings
        is the same run, and replaces the saved one. Call :meth:`close` when done, to
        release the lock.

        Raises
        ------
        ValueError
            If the path is not a directory, or the directory holds a different run.
        RunDirectoryInUse
            If another running process has the directory open.
        """
        self._make()
        self._lock()
        try:
            return self._describe(description)
        except BaseException:
            self.close()
            raise

    def _describe(self, description: Mapping[str, Any]) -> bool:
        run_file = self.path / RUN_FILE
        description = json.loads(json.dumps(description))
        if run_file.exists():
            existing = read_json(run_file, "symloss run description")
            if not isinstance(existing, dict):
                raise ValueError(f"{run_file} is not a symloss run description")
            before, now = _identity(existing), _identity(description)
            if before != now:
                changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
                raise ValueError(
                    f"{self.path} holds a different run (differs in {', '.join(changed)}); "
                    "use another run_dir, or delete that directory to start over"
                )
            if existing != description:
                write_json(run_file, description)
            return True
        write_json(run_file, description)
        return False

    def _lock(self) -> None:
        """Create the lock file exclusively; take over one whose process has ended."""
        if self.path.resolve() in _HELD:  # this process holds it (see hold); not ours to free
            return
        path = self.path / LOCK_FILE
        owner = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._lock_holder()
                if holder is None or holder["host"] != owner["host"] or (
                    _process_alive(holder["pid"])
                ):
                    who = (f"process {holder['pid']} on {holder['host']}" if holder
                           else "another process")
                    raise RunDirectoryInUse(
                        f"{self.path} is in use by {who} (lock file {path}); wait for it to "
                        "finish or use another run directory, and delete the lock file only "
                        "if no symloss search runs in that directory"
                    ) from None
                path.unlink(missing_ok=True)  # its process has ended
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(owner, handle)
            self._locked = True
            return
        raise RunDirectoryInUse(f"could not lock {self.path}: processes keep taking it over")

    def _lock_holder(self) -> dict[str, Any] | None:
        """The lock file's pid and host, or None while it is being written or unreadable."""
        try:
            holder = json.loads((self.path / LOCK_FILE).read_text())
        except (OSError, ValueError):
            return None
        valid = (isinstance(holder, dict) and isinstance(holder.get("pid"), int)
                 and isinstance(holder.get("host"), str))
        return holder if valid else None

    def close(self) -> None:
        """Release the lock taken by :meth:`open` (nothing if not held)."""
        if self._locked:
            self._locked = False
            holder = self._lock_holder()
            if holder is not None and holder["pid"] == os.getpid():
                (self.path / LOCK_FILE).unlink(missing_ok=True)

    def append(self, generation: int, index: int, evaluation: Evaluation) -> None:
        """Append one evaluation record and flush it to disk."""
        append_lines(self.path / EVALUATIONS_FILE, [
            json.dumps({"generation": generation, "index": index, **evaluation.to_dict()})])

    def records(self) -> list[Record]:
        """All evaluation records, in the order written.

        A torn last line (the process was killed while writing it) is dropped from the
        file, so that later appends start on a fresh line.
        """
        path = self.path / EVALUATIONS_FILE
        if not path.exists():
            return []
        try:
            text = path.read_text()
        except UnicodeDecodeError as error:
            raise ValueError(f"{path} is not a symloss records file: {error}") from error
        lines = text.splitlines()
        records = []
        for number, line in enumerate(lines, 1):
            try:
                data = json.loads(line)
                generation, index = int(data.pop("generation")), int(data.pop("index"))
                records.append(Record(generation, index, Evaluation.from_dict(data)))
            except (ValueError, KeyError, TypeError) as error:
                if number < len(lines):
                    raise ValueError(f"{path}:{number} is not a valid record: {error}") from error
                lines.pop()
        if text and (len(lines) < len(text.splitlines()) or not text.endswith("\n")):
            write_text(path, "".join(line + "\n" for line in lines))
        return records

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The engine state of the last completed generation, or None."""
        path = self.path / CHECKPOINT_FILE
        if not path.exists():
            return None
        state = read_json(path, "symloss checkpoint")
        if not isinstance(state, dict) or not isinstance(state.get("generation"), int):
            raise ValueError(f"{path} is not a symloss checkpoint (no generation number)")
        return state

    def append_passed(self, expression: str) -> None:
        """Record that ``expression`` passed the poor-training check."""
        append_lines(self.path / PASSED_FILE, [json.dumps({"expression": expression})])

    def passed(self) -> set[str]:
        """Expressions recorded by :meth:`append_passed`; unreadable lines (a torn last
        line) are skipped: the file is only a cache, a missing entry repeats a check."""
        path = self.path / PASSED_FILE
        if not path.exists():
            return set()
        passed = set()
        for line in path.read_text(errors="replace").splitlines():
            try:
                passed.add(str(json.loads(line)["expression"]))
            except (ValueError, KeyError, TypeError):
                continue
        return passed

    def training_cache(self) -> TrainingCache:
        """The cache of training runs kept in this directory (``training.jsonl``)."""
        return TrainingCache(self.path / TRAINING_FILE)

    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        """Save the engine state after a generation."""
        write_json(self.path / CHECKPOINT_FILE, state)

    def save_hall_of_fame(self, rows: list[dict[str, Any]]) -> None:
        """Save the equations table."""
        write_json(self.path / HALL_OF_FAME_FILE, rows)

    def save_selection(self, rows: list[dict[str, Any]]) -> None:
        """Save the final selection's finalists."""
        write_json(self.path / SELECTION_FILE, rows)

    def discard_selection(self) -> None:
        """Remove the saved final selection, if any."""
        (self.path / SELECTION_FILE).unlink(missing_ok=True)

    def save_search_lr(self, choice: Mapping[str, Any]) -> None:
        """Save the learning rate chosen for the search (and the metrics behind it)."""
        write_json(self.path / SEARCH_LR_FILE, choice)

    def load_search_lr(self) -> dict[str, Any] | None:
        """The saved learning-rate choice of this run, or None."""
        path = self.path / SEARCH_LR_FILE
        return json.loads(path.read_text()) if path.exists() else None

    def save_task(self, summary: Mapping[str, Any]) -> None:
        """Save the description of the data and model (see ``Task.summary``)."""
        write_json(self.path / TASK_FILE, summary)

    def save_metatest(self, result: Mapping[str, Any]) -> None:
        """Save the meta-test of the chosen loss (``MetaTestResult.to_dict()``)."""
        write_json(self.path / METATEST_FILE, result)

    def load(self, name: str) -> Any:
        """The parsed JSON file ``name`` of the run, or None when the run has none."""
        path = self.path / name
        return read_json(path, f"symloss run's {name}") if path.exists() else None

    def history(self) -> list[GenerationStats]:
        """Per-generation statistics: the engine's own (saved with each checkpoint) or,
        for engines that keep no checkpoint, summarised from the evaluation records, with
        each generation's new candidates as its population."""
        checkpoint = self.load_checkpoint()
        if checkpoint and checkpoint.get("history"):
            try:
                return [GenerationStats.from_dict(h) for h in checkpoint["history"]]
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{self.path / CHECKPOINT_FILE} holds an invalid history "
                                 f"({error!r})") from None
        by_generation: dict[int, list[Record]] = {}
        for record in self.records():
            by_generation.setdefault(record.generation, []).append(record)
        history = []
        for generation, records in sorted(by_generation.items()):
            new = [r.evaluation for r in sorted(records, key=lambda r: r.index)]
            stats = generation_stats(generation, [(e.expression, e.fitness) for e in new], new,
                                     started=0.0)
            seconds = sum(sum(e.timings.values()) for e in new)  # of work, not of waiting
            history.append(dataclasses.replace(stats, seconds=seconds))
        return history

    @property
    def best_loss_path(self) -> Path:
        """Where the chosen loss is saved."""
        return self.path / BEST_LOSS_FILE


class TrainingCache:
    """Results of training runs done in one run directory, by what was trained.

    A training run of the final selection is fixed by its item (expression, weights,
    steps, seed, rate, optimiser, checkpoints; :data:`symloss.step_size.TrainItem`) and
    by what ``run.json`` fixes (data, model, search settings, search seed), so within one
    directory its result can be reused: a selection interrupted by a crash, or run again
    with more finalists or seeds, trains only the runs it lacks. Lines written by another
    version of symloss are ignored (its arithmetic may round differently), as are
    unreadable ones (a torn last line).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._known: dict[str, Any] = {}
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    if entry["version"] == __version__:
                        self._known[entry["item"]] = entry["value"]
                except (ValueError, KeyError, TypeError):
                    continue

    def __contains__(self, key: str) -> bool:
        return key in self._known

    def __getitem__(self, key: str) -> Any:
        return self._known[key]

    def add(self, pairs: Sequence[tuple[str, Any]]) -> None:
        """Store ``(key, value)`` pairs (JSON values), flushed to disk before returning.
        A file that cannot be written is logged, not raised: the values are kept in
        memory, and only a resume would train those runs again."""
        self._known.update(pairs)
        try:
            append_lines(self.path, [json.dumps({"version": __version__, "item": key,
                                                 "value": value}) for key, value in pairs])
        except OSError as error:
            logger.warning("could not write %s (%s); a resumed selection will train these "
                           "runs again", self.path, error)
