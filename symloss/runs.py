"""The run directory: everything a search records, and what resuming reads back.

Layout::

    run.json            what the run is (settings, seed, engine, data); checked on resume
    evaluations.jsonl   one Evaluation per line, appended as each one is decided
    checkpoint.json     the engine's state after the last completed generation
    hall_of_fame.json   the equations table of the finished search
    selection.json      the finalists of the final selection and their metrics
    best_loss.json      the chosen loss (symloss.load reads it)

JSON files are written atomically (temporary name, then rename); the JSON-lines file is
append-only and a torn last line (a killed process) is ignored on reading.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from symloss.records import Evaluation
from symloss.serialization import write_json

RUN_FILE = "run.json"
EVALUATIONS_FILE = "evaluations.jsonl"
CHECKPOINT_FILE = "checkpoint.json"
HALL_OF_FAME_FILE = "hall_of_fame.json"
BEST_LOSS_FILE = "best_loss.json"
SELECTION_FILE = "selection.json"
SEARCH_LR_FILE = "search_lr.json"


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

    def open(self, description: Mapping[str, Any]) -> bool:
        """Start or continue the run described by ``description``.

        Returns True when an earlier run with the same description exists (resume).

        Raises
        ------
        ValueError
            If the directory holds a different run.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        run_file = self.path / RUN_FILE
        description = json.loads(json.dumps(description))
        if run_file.exists():
            existing = json.loads(run_file.read_text())
            if existing != description:
                changed = sorted(
                    k for k in set(existing) | set(description)
                    if existing.get(k) != description.get(k)
                )
                raise ValueError(
                    f"{self.path} holds a different run (differs in {', '.join(changed)}); "
                    "use another run_dir, or delete that directory to start over"
                )
            return True
        write_json(run_file, description)
        return False

    def append(self, generation: int, index: int, evaluation: Evaluation) -> None:
        """Append one evaluation record and flush it to disk."""
        line = json.dumps({"generation": generation, "index": index, **evaluation.to_dict()})
        with open(self.path / EVALUATIONS_FILE, "a") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def records(self) -> list[Record]:
        """All evaluation records, in the order written.

        A torn last line (the process was killed while writing it) is dropped from the
        file, so that later appends start on a fresh line.
        """
        path = self.path / EVALUATIONS_FILE
        if not path.exists():
            return []
        text = path.read_text()
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
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(line + "\n" for line in lines))
            os.replace(tmp, path)
        return records

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The engine state of the last completed generation, or None."""
        path = self.path / CHECKPOINT_FILE
        return json.loads(path.read_text()) if path.exists() else None

    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        """Save the engine state after a generation."""
        write_json(self.path / CHECKPOINT_FILE, state)

    def save_hall_of_fame(self, rows: list[dict[str, Any]]) -> None:
        """Save the equations table."""
        write_json(self.path / HALL_OF_FAME_FILE, rows)

    def save_selection(self, rows: list[dict[str, Any]]) -> None:
        """Save the final selection's finalists."""
        write_json(self.path / SELECTION_FILE, rows)

    def save_search_lr(self, choice: Mapping[str, Any]) -> None:
        """Save the learning rate chosen for the search (and the metrics behind it)."""
        write_json(self.path / SEARCH_LR_FILE, choice)

    def load_search_lr(self) -> dict[str, Any] | None:
        """The saved learning-rate choice of this run, or None."""
        path = self.path / SEARCH_LR_FILE
        return json.loads(path.read_text()) if path.exists() else None

    @property
    def best_loss_path(self) -> Path:
        """Where the chosen loss is saved."""
        return self.path / BEST_LOSS_FILE
