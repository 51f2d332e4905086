"""Search engines behind one small interface (:class:`~symloss.engines.base.Engine`).

Optional engines are imported only when chosen, so importing symloss never imports
PySR, Julia or pyoperon.
"""

from __future__ import annotations

from symloss.engines.base import Engine, SearchContext

ENGINES = ("deap", "pysr", "operon")


def get_engine(name: str) -> Engine:
    """The engine called ``name``, imported on demand."""
    if name == "deap":
        from symloss.engines.deap import DeapEngine

        return DeapEngine()
    if name == "pysr":
        from symloss.engines.pysr import PySREngine

        return PySREngine()
    if name == "operon":
        from symloss.engines.operon import OperonEngine

        return OperonEngine()
    raise ValueError(f"unknown engine {name!r}; choose one of {ENGINES}")


__all__ = ["ENGINES", "Engine", "SearchContext", "get_engine"]
