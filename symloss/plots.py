"""Pictures of losses and runs: a loss's shape, a search's history, meta-test curves.

Needs matplotlib (``pip install "symloss[plots]"``). Every function returns a
:class:`matplotlib.figure.Figure` built without pyplot, so nothing here changes the
user's backend or global state; save one with ``figure.savefig(path)``.
:func:`save_run_figures` draws all three for a run directory (``symloss show RUN_DIR
--plot DIR``).
"""

from __future__ import annotations

import math
import os
import statistics
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from symloss.kinds import CLASSIFICATION, REGRESSION
from symloss.library import baseline as baseline_expression
from symloss.lossfile import load
from symloss.metatest import MetaTestResult
from symloss.network import LearnedLoss
from symloss.records import GenerationStats
from symloss.runs import BEST_LOSS_FILE, METATEST_FILE, TASK_FILE, RunDirectory

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PROBABILITIES = np.linspace(0.01, 0.99, 197)
"""Probabilities at which classification losses are drawn (the ends are left out: many
losses blow up at 0 or 1 and would flatten the rest of the curve)."""

Curve = Sequence[tuple[int, float]]
"""A learning curve: ``(SGD step, metric)`` pairs."""


def _figure(width: float, height: float, columns: int = 1) -> tuple[Figure, list[Axes]]:
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "symloss.plots needs matplotlib; install it with pip install 'symloss[plots]'"
        ) from error
    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, list(figure.subplots(1, columns, squeeze=False)[0])


def elementwise(loss: Any, f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A loss's value per ``(f, y)`` element, before any reduction.

    ``loss`` is a :class:`~symloss.network.LearnedLoss` or any loss module with an
    ``elementwise(f, y)`` method (the baselines' ML3 and TaylorGLO losses). A loss in
    the class prior ``p`` is drawn for its rarest class, where re-weighting shows most.
    """
    f64, y64 = torch.as_tensor(f, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    with torch.no_grad():
        if not isinstance(loss, LearnedLoss):
            values = loss.elementwise(f64, y64)
        elif loss.class_prior is None:
            values = loss.network(f64, y64)
        else:
            rarest = torch.tensor(min(loss.class_prior), dtype=torch.float64)
            values = loss.network(f64, y64, prior=rarest)
    return values.detach().double().cpu().numpy()


def _normalise(curves: list[np.ndarray]) -> list[np.ndarray]:
    """Each curve shifted to start its range at 0, all divided by the first curve's range
    (by the largest range when the first is flat): scale and offset do not change what a
    loss trains towards, so only the shape is left to compare."""
    shifted = [c - np.nanmin(c) if np.isfinite(c).any() else c for c in curves]
    ranges = [float(np.nanmax(c)) if np.isfinite(c).any() else 0.0 for c in shifted]
    scale = ranges[0] if ranges[0] > 0 else max(ranges, default=0.0)
    return [c / scale for c in shifted] if scale > 0 else shifted


def loss_shape(
    losses: Mapping[str, Any],
    kind: str,
    baseline: Any | None = None,
    *,
    targets: Sequence[float] = (0.0,),
    residuals: np.ndarray | None = None,
    title: str | None = None,
    axes: Sequence[Axes] | None = None,
) -> Figure:
    """Draw what each loss asks of a prediction, normalised, beside the baseline.

    Classification: the loss of one class's element against its predicted probability
    ``f``, for the true class (``y = 1``) and for a wrong class (``y = 0``), in two
    panels. Regression: the loss against the residual ``f - y`` at each target value in
    ``targets``. Each loss is normalised (shifted to 0, divided by the range of its
    first curve), so losses of any scale compare by shape.

    Parameters
    ----------
    losses : mapping of str to loss
        Label -> :class:`~symloss.network.LearnedLoss` (or a module with
        ``elementwise(f, y)``).
    kind : {"classification", "regression"}
    baseline : loss, optional
        Drawn dashed in black, e.g. ``LearnedLoss(task.baseline, kind)``.
    targets : sequence of float
        Regression: target values ``y`` at which to draw each loss.
    residuals : array, optional
        Regression: the residuals to draw over (default -3 to 3).
    title : str, optional
        Figure title.
    axes : sequence of Axes, optional
        Draw into these (two for classification, one for regression) instead of a new
        figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if kind == CLASSIFICATION:
        needed, width = 2, 9.0
    elif kind == REGRESSION:
        needed, width = 1, 5.5
    else:
        raise ValueError(f"kind must be 'classification' or 'regression', got {kind!r}")
    if axes is None:
        figure, axes = _figure(width, 3.6, needed)
    else:
        axes = list(axes)
        if len(axes) != needed:
            raise ValueError(f"a {kind} loss shape needs {needed} axes, got {len(axes)}")
        figure = axes[0].get_figure()
    entries = ([(_baseline_label(baseline), baseline, True)] if baseline is not None else [])
    entries += [(label, loss, False) for label, loss in losses.items()]
    colours = iter(f"C{i}" for i in range(100))
    if kind == CLASSIFICATION:
        f = PROBABILITIES
        for label, loss, is_baseline in entries:
            true, wrong = _normalise([elementwise(loss, f, np.ones_like(f)),
                                      elementwise(loss, f, np.zeros_like(f))])
            style = _style(is_baseline, colours)
            axes[0].plot(f, true, label=label, **style)
            axes[1].plot(f, wrong, **style)
        axes[0].set_xlabel("predicted probability of the true class, f (y = 1)")
        axes[1].set_xlabel("predicted probability of a wrong class, f (y = 0)")
        axes[0].set_title("true class", fontsize=10)
        axes[1].set_title("a wrong class", fontsize=10)
        for ax in axes:
            ax.set_ylabel("loss of the element (normalised)")
    else:
        r = np.linspace(-3.0, 3.0, 241) if residuals is None else np.asarray(residuals)
        for label, loss, is_baseline in entries:
            values = _normalise([elementwise(loss, t + r, np.full_like(r, t)) for t in targets])
            style = _style(is_baseline, colours)
            for i, (t, curve) in enumerate(zip(targets, values, strict=True)):
                name = label
                if len(targets) > 1 and not is_baseline:
                    name = f"{name}, y = {t:.3g}"
                shade = dict(style)
                if len(targets) > 1 and not is_baseline:
                    shade["alpha"] = 1.0 - 0.6 * i / (len(targets) - 1)
                axes[0].plot(r, curve, label=name if i == 0 or not is_baseline else None,
                             **shade)
        axes[0].set_xlabel("residual f - y")
        axes[0].set_ylabel("loss (normalised)")
    for ax in axes:
        ax.grid(alpha=0.3)
    if entries:
        axes[0].legend(fontsize=8)
    if title:
        # about ten characters of a 10-point title fit in an inch
        width = int(figure.get_figwidth() * 10)
        figure.suptitle(textwrap.fill(title, width), fontsize=10)
    return figure


def _style(is_baseline: bool, colours: Any) -> dict[str, Any]:
    if is_baseline:  # on top: a learned loss equal to the baseline would hide it
        return {"color": "black", "ls": "--", "lw": 1.2, "zorder": 3}
    return {"color": next(colours), "ls": "-", "lw": 1.6}


def _baseline_label(baseline: Any) -> str:
    expression = str(getattr(baseline, "expression", ""))
    names = {"-(y * log(f))": "cross-entropy", "square(f - y)": "squared error",
             "-(y * log(f) + (1 - y) * log(1 - f))": "binary cross-entropy"}
    return f"baseline ({names.get(expression, expression or 'baseline')})"


def search_history(history: Sequence[GenerationStats], metric: str = "fitness") -> Figure:
    """Best and median fitness per generation, and rejections per generation by reason.

    Parameters
    ----------
    history : sequence of GenerationStats
        ``search.history_`` or :meth:`RunDirectory.history`.
    metric : str
        Name of the fitness (the task metric on validation), for the axis label.

    Returns
    -------
    matplotlib.figure.Figure
    """
    figure, (fitness_ax, rejected_ax) = _figure(10.0, 3.8, 2)
    generations = [h.generation for h in history]
    gaps = any(not math.isfinite(h.median_fitness) for h in history)
    for name, values, style in (
        ("best of the population", [h.best_fitness for h in history],
         {"marker": "o", "color": "C0"}),
        ("median of the population" + ("\n(missing: half or more rejected)" if gaps else ""),
         [h.median_fitness for h in history], {"marker": "s", "color": "C1"}),
    ):
        points = [(g, v) for g, v in zip(generations, values, strict=True) if math.isfinite(v)]
        if points:
            fitness_ax.plot(*zip(*points, strict=True), label=name, ms=4, **style)
    finite = [v for h in history for v in (h.best_fitness, h.median_fitness)
              if math.isfinite(v) and v > 0]
    if finite and max(finite) / min(finite) > 20:
        _log_axis(fitness_ax)

    fitness_ax.set_xlabel("generation")
    fitness_ax.set_ylabel(f"{metric} (lower is better)")
    fitness_ax.set_title("fitness", fontsize=10)
    fitness_ax.legend(fontsize=8, loc="best")
    reasons = sorted({reason for h in history for reason in h.rejected},
                     key=lambda r: -sum(h.rejected.get(r, 0) for h in history))
    bottom = np.zeros(len(history))
    for i, reason in enumerate(reasons):
        counts = np.array([h.rejected.get(reason, 0) for h in history], dtype=float)
        rejected_ax.bar(generations, counts, bottom=bottom, label=reason, color=f"C{i}")
        bottom += counts
    rejected_ax.plot(generations, [h.evaluated for h in history], "k_", ms=14, mew=1.5,
                     label="evaluated")
    rejected_ax.set_xlabel("generation")
    rejected_ax.set_ylabel("candidates")
    rejected_ax.set_title("rejections by reason", fontsize=10)
    rejected_ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for ax in (fitness_ax, rejected_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return figure


def _log_axis(ax: Axes) -> None:
    """A logarithmic y axis labelled at 1, 2 and 5 times each power of ten (a range of a
    decade or two would otherwise show one or two labels)."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def learning_curves(
    curves: Mapping[str, Sequence[Curve]],
    metric: str,
    *,
    baseline: str | None = None,
    log_scale: bool = False,
    title: str | None = None,
) -> Figure:
    """Test metric against SGD step: the mean over seeds and a band from the lowest to
    the highest seed, one colour per loss.

    Parameters
    ----------
    curves : mapping of str to sequence of curves
        Label -> one curve per seed (a curve is ``(step, metric)`` pairs; a diverged run's
        curve ends early and non-finite points are left out).
    metric : str
        The metric's name, e.g. ``"test MSE"``.
    baseline : str, optional
        The label drawn dashed in black.
    log_scale : bool
        Logarithmic metric axis (useful for MSE).
    title : str, optional
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    figure, (ax,) = _figure(6.0, 4.0)
    colours = iter(f"C{i}" for i in range(100))
    for label, runs in curves.items():
        steps, mean, low, high = _aggregate(runs)
        if not steps:
            continue
        colour = "black" if label == baseline else next(colours)
        ls = "--" if label == baseline else "-"
        seeds = len(runs)
        ax.plot(steps, mean, ls=ls, color=colour,
                label=f"{label} (mean of {seeds} seed{'s' if seeds > 1 else ''})")
        if seeds > 1:
            ax.fill_between(steps, low, high, color=colour, alpha=0.15, lw=0)
    ax.set_xlabel("SGD step")
    ax.set_ylabel(metric)
    if log_scale:
        _log_axis(ax)
    ax.set_title(title or "meta-test learning curves (band: range over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure


def metatest_curves(result: MetaTestResult, title: str | None = None) -> Figure:
    """:func:`learning_curves` of a meta-test: the learned loss against the baseline.

    Raises
    ------
    ValueError
        If the meta-test recorded no curves (run it with ``curve_points > 0``).
    """
    results = [result.learned] + ([result.baseline] if result.baseline else [])
    if not any(r.curves for r in results):
        raise ValueError("the meta-test recorded no learning curves; run meta_test with "
                         "curve_points > 0")
    labels = ["learned"] + ([f"baseline ({result.baseline.name})"] if result.baseline else [])
    return learning_curves(
        {label: r.curves for label, r in zip(labels, results, strict=True)},
        f"test {result.metric}", baseline=labels[1] if result.baseline else None,
        log_scale=result.metric == "MSE", title=title,
    )


def _aggregate(runs: Sequence[Curve]) -> tuple[list[int], list[float], list[float], list[float]]:
    """Mean, minimum and maximum over runs at each step where any run has a finite value."""
    by_step: dict[int, list[float]] = {}
    for run in runs:
        for step, value in run:
            if value is not None and math.isfinite(value):
                by_step.setdefault(int(step), []).append(float(value))
    steps = sorted(by_step)
    return (steps, [statistics.fmean(by_step[s]) for s in steps],
            [min(by_step[s]) for s in steps], [max(by_step[s]) for s in steps])


def save_run_figures(
    run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], dpi: int = 110
) -> dict[str, Path]:
    """Draw a run's figures into ``out_dir``: ``loss_shape.png`` (the chosen loss),
    ``history.png`` (the search) and ``learning_curves.png`` (when the run has a
    meta-test with curves, as ``symloss search`` records).

    Returns
    -------
    dict
        Figure name (``"loss_shape"``, ``"history"``, ``"learning_curves"``) -> path.

    Raises
    ------
    FileNotFoundError
        If ``run_dir`` holds no finished search (no ``best_loss.json``).
    """
    run = RunDirectory(run_dir)
    if not (run.path / BEST_LOSS_FILE).exists():
        raise FileNotFoundError(
            f"{run.path / BEST_LOSS_FILE} not found; is {run_dir} the run directory of a "
            "finished search?"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loss = load(run.path / BEST_LOSS_FILE)
    task = run.load(TASK_FILE) or {}
    kind = loss.task
    metric = f"validation {task.get('metric', 'metric')}"
    baseline = LearnedLoss(task.get("baseline")
                           or baseline_expression(kind, bool(task.get("single_output"))), kind)
    targets: Sequence[float] = (0.0,)
    residuals = None
    if kind == REGRESSION and task.get("targets"):
        spread = task["targets"]
        targets = tuple(spread["quantiles"][q] for q in ("10%", "50%", "90%"))
        residuals = np.linspace(-2 * spread["std"], 2 * spread["std"], 241)
    figures = {
        "loss_shape": loss_shape({"learned": loss}, kind, baseline, targets=targets,
                                 residuals=residuals,
                                 title=f"chosen loss {loss.sympy()} (learned weights folded in)"),
        "history": search_history(run.history(), metric),
    }
    metatest = run.load(METATEST_FILE)
    if metatest:
        result = MetaTestResult.from_dict(metatest)
        if result.learned.curves:
            figures["learning_curves"] = metatest_curves(result)
    paths = {}
    for name, figure in figures.items():
        paths[name] = out / f"{name}.png"
        figure.savefig(paths[name], dpi=dpi)
    return paths
