"""The equations table: best loss per expression size, as records, text, data and LaTeX.

A search keeps the best trained loss of each expression size (its hall of fame).
:class:`Equation` is one row as saved in the run directory; :func:`equations_frame` makes
the rows the ``equations_`` DataFrame; :func:`equations_table` prints them (the chosen
row marked ``>>>``), :func:`latex_table` writes them for a paper and
:func:`markdown_table` for a report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import sympy

COLUMNS = ("size", "fitness", "expression", "weights", "latex", "sympy", "chosen")
"""Columns of the ``equations_`` DataFrame, in order."""


@dataclass(frozen=True)
class Equation:
    """One row of the equations table: the best loss of one size.

    ``sympy`` (the SymPy form, learned weights folded in) is saved as text and not
    compared: two rows are equal when their saved fields are.
    """

    size: int
    fitness: float
    expression: str
    weights: tuple[float, ...]
    latex: str
    chosen: bool
    sympy: sympy.Expr | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the SymPy form as text)."""
        return {"size": self.size, "fitness": self.fitness, "expression": self.expression,
                "weights": list(self.weights), "latex": self.latex, "chosen": self.chosen,
                "sympy": "" if self.sympy is None else str(self.sympy)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Equation:
        """Inverse of :meth:`to_dict` (the SymPy form is read back from its text)."""
        text = data.get("sympy") or ""
        form = sympy.sympify(text, locals=_SYMBOLS) if text else None
        return cls(int(data["size"]), float(data["fitness"]), str(data["expression"]),
                   tuple(float(w) for w in data["weights"]), str(data["latex"]),
                   bool(data["chosen"]), form)


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


def equations_table(table: pd.DataFrame | Iterable[Equation], metric: str | None = None) -> str:
    """The equations table as text, the chosen row marked with ``>>>``; ``metric`` (e.g.
    ``"MAE"``) names the fitness column as the validation metric it is."""
    heading = "fitness" if metric is None else f"val {metric}"
    width = max(8, len(heading))
    lines = [f"     size  {heading:>{width}}   expression"]
    for row in _rows(table):
        mark = ">>>" if row.chosen else "   "
        lines.append(f"{mark} {row.size:5d}  {row.fitness:{width}.4f}   {row.expression}")
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
    """A GitHub Markdown table of the equations, the chosen row in bold; ``metric`` names
    the fitness column."""
    lines = [f"| size | {'fitness' if metric is None else 'validation ' + metric} | expression "
             "| loss |", "|---:|---:|---|---|"]
    for row in _rows(table):
        cells = [str(row.size), _number(row.fitness, precision), f"`{row.expression}`",
                 f"$`{row.latex}`$"]
        if row.chosen:
            cells = [f"**{cell}**" for cell in cells[:3]] + [cells[3] + " (chosen)"]
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
