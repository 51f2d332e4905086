"""Saved losses on disk: the format registry and :func:`load`.

A saved loss is a small JSON file whose ``"format"`` names the class that reads it:
:class:`~symloss.network.LearnedLoss` for ``"symloss.loss"``, and the baselines' classes
for theirs, added with :func:`register_loss_format`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from torch import nn

from symloss.network import FORMAT_NAME, LearnedLoss
from symloss.serialization import read_json

MAX_FILE_BYTES = 16_000_000
"""Largest saved-loss file read. An expression is at most
:data:`~symloss.expression.MAX_TEXT_LENGTH` characters with one weight per edge, far
below this; a larger file is refused before it is read into memory."""


LOSS_FORMATS: dict[str, type] = {FORMAT_NAME: LearnedLoss}
"""Saved-loss format name -> class with ``from_dict(data, source)``; :func:`load` dispatches
on it. Other modules add theirs with :func:`register_loss_format` (the baselines do, when
``symloss`` is imported)."""


def register_loss_format(name: str, cls: type) -> None:
    """Let :func:`load` read files whose ``"format"`` is ``name`` with
    ``cls.from_dict(data, source)``."""
    LOSS_FORMATS[name] = cls


def load(path: str | os.PathLike[str]) -> nn.Module:
    """Load a loss saved by :meth:`LearnedLoss.save` (or a baseline loss's ``save``).

    The file's ``"format"`` picks the class: :class:`LearnedLoss` for ``"symloss.loss"``,
    the baselines' classes for theirs (see :data:`LOSS_FORMATS`). Every field is checked
    before a loss is built, and every error names the file.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is corrupt, in an unknown format, or was written by a newer symloss.
    """
    data = read_json(path, "symloss loss", max_bytes=MAX_FILE_BYTES)
    name = data.get("format") if isinstance(data, Mapping) else None
    if isinstance(name, str) and name not in LOSS_FORMATS:
        raise ValueError(
            f"{path} is not a symloss loss this version reads: its format is {name!r}, "
            f"known formats are {', '.join(sorted(LOSS_FORMATS))}"
        )
    cls = LOSS_FORMATS[name] if isinstance(name, str) else LearnedLoss
    return cls.from_dict(data, source=str(path))
