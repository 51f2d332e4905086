"""Small, human-readable JSON files: atomic writes and format headers.

Every file symloss writes carries ``"format"`` and ``"version"`` keys, so a reader can
tell a corrupt file, a file of another kind and one from a newer symloss apart.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically: a reader never sees a half-written file.

    The text goes to a temporary file of a name of its own (process id and a random
    part), then is renamed over ``path``: two writers of one file never write into each
    other's temporary file, and the last rename wins whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    handle = open(tmp, "x")  # noqa: SIM115 -- closed below; only a file made here is removed
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def finite_or_none(value: float) -> float | None:
    """``value`` for JSON, which has no infinity: a non-finite metric (a diverged run) is
    written as ``null``."""
    return value if math.isfinite(value) else None


def none_as_inf(value: Any) -> float:
    """Inverse of :func:`finite_or_none`: ``null`` reads back as ``inf``."""
    return math.inf if value is None else float(value)


def append_lines(path: str | os.PathLike[str], lines: Sequence[str]) -> None:
    """Append ``lines`` (each without its newline) to a JSON-lines file and flush them
    to disk. A last line torn by a killed writer (no newline at the end) is closed
    first, so that it stays the only unreadable line instead of swallowing the first
    new one."""
    with open(path, "a+b") as handle:
        handle.seek(0, os.SEEK_END)
        torn = False
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            torn = handle.read(1) != b"\n"
        text = ("\n" if torn else "") + "".join(line + "\n" for line in lines)
        handle.write(text.encode())
        handle.flush()
        os.fsync(handle.fileno())


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (see :func:`write_text`)."""
    return write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: str | os.PathLike[str], what: str, max_bytes: int | None = None) -> Any:
    """Parse a JSON file; an unreadable one gets a ValueError naming the file and ``what``
    was expected (invalid UTF-8 or JSON, a number too long to convert, nesting too deep,
    a directory, more than ``max_bytes`` bytes: refused before it is read, so a huge file
    costs no memory).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give the path of a {what} file")
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise ValueError(
            f"{path} is {path.stat().st_size:,} bytes, more than a {what} file can be "
            f"({max_bytes:,} bytes); is it a {what} file?"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as error:  # JSON, UTF-8, int-digit limit errors
        raise ValueError(f"{path} is not valid JSON ({error}); is it a {what} file?") from error


MAX_ABS_VALUE = 1e6
"""Largest magnitude accepted for a saved weight or parameter. Learned values stay near
1; a larger one is taken for a corrupt or hand-edited file, since it would make float32
losses overflow to inf or NaN."""


def real_numbers(values: Any, what: str, length: int | None = None) -> list[float]:
    """``values`` as floats, or a ValueError naming ``what``.

    Accepts a list of real numbers -- not booleans, not strings -- each finite and at most
    :data:`MAX_ABS_VALUE` in magnitude, ``length`` of them when given.
    """
    if not isinstance(values, list | tuple):
        raise ValueError(f"{what} must be a list of numbers, got {type(values).__name__}")
    if length is not None and len(values) != length:
        raise ValueError(f"{what} must have {length} values, got {len(values)}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{what} must hold numbers, got {value!r}")
        if not (math.isfinite(value) and abs(value) <= MAX_ABS_VALUE):
            raise ValueError(
                f"{what} holds a non-finite or too large value {value!r}; values must be "
                f"finite and at most {MAX_ABS_VALUE:g} in magnitude"
            )
    return [float(v) for v in values]


def positive_number(value: Any, what: str, maximum: float = MAX_ABS_VALUE) -> float:
    """``value`` as a float, or a ValueError naming ``what``: a real number (not a boolean
    or string), finite, above 0 and at most ``maximum``. Learning rates and loss scales
    go through it: 0 or a negative rate trains nothing or ascends, and a huge one
    overflows float32 training."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if not (math.isfinite(value) and 0 < value <= maximum):
        bound = f" and at most {maximum:g}" if math.isfinite(maximum) else ""
        raise ValueError(f"{what} must be a finite number above 0{bound}, got {value!r}")
    return float(value)


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
