"""The equations table: best loss per expression size, as records, text, data and LaTeX.

A search keeps the best trained loss of each expression size (its hall of fame).
:class:`Equation` is one row as saved in the run directory; :func:`equations_frame` makes
the rows the ``equations_`` DataFrame; :func:`equations_table` prints them (the chosen
row marked ``>>>``), :func:`latex_table` writes them for a paper and
:func:`markdown_table` for a report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import sympy

COLUMNS = ("size", "fitness", "expression", "weights", "latex", "sympy", "chosen", "refined",
           "unrefined_fitness", "refined_fitness")
"""Columns of the ``equations_`` DataFrame, in order."""


@dataclass(frozen=True)
class Equation:
    """One row of the equations table: the best loss of one size.

    ``sympy`` (the SymPy form, learned weights folded in) is saved as text and not
    compared: two rows are equal when their saved fields are. ``refined``,
    ``unrefined_fitness`` and ``refined_fitness`` are the evaluation's (see
    :class:`symloss.records.Evaluation`): which form the search kept, and both fitnesses
    when the local search's guard trained both.
    """

    size: int
    fitness: float
    expression: str
    weights: tuple[float, ...]
    latex: str
    chosen: bool
    sympy: sympy.Expr | None = field(default=None, compare=False)
    refined: bool = False
    unrefined_fitness: float | None = None
    refined_fitness: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the SymPy form as text, infinity as ``"inf"``)."""
        return {"size": self.size, "fitness": self.fitness, "expression": self.expression,
                "weights": list(self.weights), "latex": self.latex, "chosen": self.chosen,
                "sympy": "" if self.sympy is None else str(self.sympy),
                "refined": self.refined,
                "unrefined_fitness": _json_number(self.unrefined_fitness),
                "refined_fitness": _json_number(self.refined_fitness)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Equation:
        """Inverse of :meth:`to_dict` (the SymPy form is read back from its text)."""
        text = data.get("sympy") or ""
        form = sympy.sympify(text, locals=_SYMBOLS) if text else None
        weights = tuple(float(w) for w in data["weights"])
        return cls(int(data["size"]), float(data["fitness"]), str(data["expression"]),
                   weights, str(data["latex"]), bool(data["chosen"]), form,
                   # tables written before the guard: a loss with weights was refined
                   bool(data.get("refined", bool(weights))),
                   _optional_number(data.get("unrefined_fitness")),
                   _optional_number(data.get("refined_fitness")))


def _json_number(value: float | None) -> float | str | None:
    """``value`` for JSON: infinity as ``"inf"`` (``None`` means "not measured")."""
    return str(value) if value is not None and not math.isfinite(value) else value


def _optional_number(value: Any) -> float | None:
    return None if value is None else float(value)


_SYMBOLS = {name: sympy.Symbol(name, real=True) for name in ("y", "f")}


def equations_frame(rows: Sequence[Equation]) -> pd.DataFrame:
    """The rows as a DataFrame with :data:`COLUMNS`, one row per size, smallest first."""
    return pd.DataFrame(
        [[getattr(row, column) for column in COLUMNS] for row in rows], columns=list(COLUMNS)
    )


def _rows(table: pd.DataFrame | Iterable[Equation]) -> Iterable[Any]:
    """Rows with attribute access, from a DataFrame or from records."""
    if isinstance(table, pd.DataFrame):
        return table.itertuples(index=False)
    return table


def _guarded(rows: Sequence[Any]) -> bool:
    """Whether any row records both fitnesses (a search with the local search's guard)."""
    return any(_known(row.unrefined_fitness) for row in rows)


def _known(value: Any) -> bool:
    """True for a measured fitness (``None`` and NaN, a DataFrame's missing value, are
    "not measured")."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _both(
    row: Any, text: Callable[[float], str], kept: str, other: str = ""
) -> tuple[str, str]:
    """The row's plain and refined fitness as text, the form the search kept marked
    ``kept``, the other ``other``."""
    if not _known(row.unrefined_fitness):
        return "-" + other, "-" + other
    plain, refined = text(row.unrefined_fitness), text(row.refined_fitness)
    return ((plain + other, refined + kept) if row.refined
            else (plain + kept, refined + other))


def equations_table(table: pd.DataFrame | Iterable[Equation], metric: str | None = None) -> str:
    """The equations table as text, the chosen row marked with ``>>>``; ``metric`` (e.g.
    ``"MAE"``) names the fitness column as the validation metric it is.

    With the local search's guard, two more columns after the expression give the
    fitness of the plain expression and of the refined loss, the one kept starred.
    """
    rows = list(_rows(table))
    guarded = _guarded(rows)
    heading = "fitness" if metric is None else f"val {metric}"
    column = max(8, len(heading))
    head = f"     size  {heading:>{column}}   expression"
    # every line starts with this many characters before the expression
    width = len(head) - len("expression") + max(
        [len("expression"), *(len(row.expression) for row in rows)])
    lines = [f"{head:<{width}s}     plain     refined" if guarded else head]
    for row in rows:
        mark = ">>>" if row.chosen else "   "
        line = f"{mark} {row.size:5d}  {row.fitness:{column}.4f}   {row.expression}"
        if guarded:
            plain, refined = _both(row, lambda v: f"{v:.4f}", "*", " ")
            line = f"{line:<{width}s}  {plain:>8s}  {refined:>10s}"
        lines.append(line.rstrip())
    return "\n".join(lines)


def latex_table(
    table: pd.DataFrame | Iterable[Equation], metric: str = "fitness", precision: int = 4
) -> str:
    """A booktabs LaTeX table of the equations (``\\usepackage{booktabs}``).

    Parameters
    ----------
    table : DataFrame or sequence of Equation
        The equations table (``search.equations_``).
    metric : str
        Heading of the fitness column, e.g. ``"validation MSE"``.
    precision : int
        Digits after the decimal point of the fitness.

    Returns
    -------
    str
        A ``table`` float holding a ``tabular``; the chosen loss's size is starred.
    """
    lines = [
        r"\begin{table}[ht]",
        r"\centering",
        r"\begin{tabular}{@{}rrl@{}}",
        r"\toprule",
        rf"Size & {_latex_text(metric[:1].upper() + metric[1:])} & Loss $\mathcal{{L}}(y, f)$ \\",
        r"\midrule",
    ]
    for row in _rows(table):
        size = rf"{row.size}$^\star$" if row.chosen else str(row.size)
        loss = rf"$\displaystyle {row.latex}$"
        lines.append(rf"{size} & {_number(row.fitness, precision)} & {loss} \\")
    lines += [
        r"\bottomrule",
        r"\end{tabular}",
        r"\caption{Best loss per expression size found by the search; "
        r"$\star$ marks the chosen loss. Lower is better.}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def markdown_table(
    table: pd.DataFrame | Iterable[Equation], precision: int = 4, metric: str | None = None
) -> str:
    """A GitHub Markdown table of the equations, the chosen row in bold (with the guard's
    plain and refined fitnesses, the kept one marked, as in :func:`equations_table`);
    ``metric`` names the fitness column."""
    fitness = "fitness" if metric is None else "validation " + metric
    rows = list(_rows(table))
    guarded = _guarded(rows)
    if guarded:
        lines = [f"| size | {fitness} | plain | refined | expression | loss |",
                 "|---:|---:|---:|---:|---|---|"]
    else:
        lines = [f"| size | {fitness} | expression | loss |", "|---:|---:|---|---|"]
    for row in rows:
        both = list(_both(row, lambda v: _number(v, precision), " (kept)")) if guarded else []
        cells = [str(row.size), _number(row.fitness, precision), *both,
                 f"`{row.expression}`", f"$`{row.latex}`$"]
        if row.chosen:
            cells = [f"**{cell}**" for cell in cells[:-1]] + [cells[-1] + " (chosen)"]
        lines.append("| " + " | ".join(cell.replace("|", r"\|") for cell in cells) + " |")
    return "\n".join(lines)


def _number(value: float, precision: int) -> str:
    return f"{value:.{precision}f}" if math.isfinite(value) else str(value)


def _latex_text(text: str) -> str:
    """Plain text safe in LaTeX (escapes the special characters)."""
    special = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
               "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
               "^": r"\textasciicircum{}"}
    return "".join(special.get(c, c) for c in text)
