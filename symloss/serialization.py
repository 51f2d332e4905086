"""Small, human-readable JSON files: atomic writes and format headers.

Every file symloss writes carries ``"format"`` and ``"version"`` keys, so a reader can
tell a corrupt file, a file of another kind and one from a newer symloss apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON atomically: a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def read_json(path: str | os.PathLike[str], what: str) -> Any:
    """Parse a JSON file; a corrupt one gets a ValueError naming ``what`` was expected."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); is it a {what} file?") from error


def check_header(data: Any, source: str, name: str, version: int, what: str) -> None:
    """Raise a ValueError unless ``data`` is in format ``name``, version <= ``version``."""
    if not isinstance(data, Mapping) or data.get("format") != name:
        raise ValueError(f"{source} is not a {what} (no 'format': '{name}')")
    found = data.get("version")
    if not isinstance(found, int) or isinstance(found, bool) or found < 1:
        raise ValueError(f"{source} has an invalid format version {found!r}")
    if found > version:
        raise ValueError(
            f"{source} was written in format version {found}, newer than this symloss reads "
            f"({version}); upgrade symloss (pip install -U symloss)"
        )
