"""A Markdown report of a run directory that renders on GitHub (``symloss report``).

Reads only the run's files (see :mod:`symloss.runs`): the settings, the data summary,
the equations table, the chosen loss in LaTeX, the final selection, the per-generation
history, the meta-test when ``symloss search`` recorded one, and the figures of
:mod:`symloss.plots`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from symloss.kinds import CLASSIFICATION
from symloss.lossfile import load
from symloss.metatest import MetaTestResult
from symloss.network import LearnedLoss
from symloss.plots import save_run_figures
from symloss.records import GenerationStats
from symloss.runs import (
    BEST_LOSS_FILE,
    HALL_OF_FAME_FILE,
    METATEST_FILE,
    RUN_FILE,
    SELECTION_FILE,
    TASK_FILE,
    RunDirectory,
)
from symloss.tables import Equation, markdown_table

REPORT_FILE = "report.md"


def write_report(
    run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Write ``report.md`` and its figures for the run in ``run_dir``.

    Parameters
    ----------
    run_dir : path-like
        The run directory of a finished search.
    out_dir : path-like, optional
        Where the report and figures go (default: the run directory itself). Elsewhere,
        the chosen loss's JSON is copied beside the report so that it stands alone.

    Returns
    -------
    Path
        The report file.

    Raises
    ------
    FileNotFoundError
        If the run has not finished (no ``hall_of_fame.json`` or ``best_loss.json``).
    """
    run = RunDirectory(run_dir)
    for name in (HALL_OF_FAME_FILE, BEST_LOSS_FILE):
        if not (run.path / name).exists():
            raise FileNotFoundError(
                f"{run.path / name} not found; is {run_dir} the run directory of a finished "
                "search?"
            )
    out = Path(out_dir) if out_dir is not None else run.path
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() != run.path.resolve():
        shutil.copyfile(run.path / BEST_LOSS_FILE, out / BEST_LOSS_FILE)
    figures = save_run_figures(run.path, out)
    loss = load(run.path / BEST_LOSS_FILE)
    description = run.load(RUN_FILE) or {}
    task = run.load(TASK_FILE) or {}
    rows = [Equation.from_dict(r) for r in run.load(HALL_OF_FAME_FILE)]
    metric = task.get("metric", "metric")
    sections = [
        _heading(run.path, description, task),
        _chosen(loss, rows, figures),
        _data(task),
        "## Equations\n\nThe best loss of each expression size found by the search, by "
        f"validation {metric} after the search's short training run (lower is better); "
        "the chosen loss in bold."
        + (" Plain and refined: the fitness of the expression as written and after the "
           "local search refined its edge weights; the search keeps the refined loss only "
           "where it trains better (marked kept)." if any(
               r.unrefined_fitness is not None for r in rows) else "")
        + "\n\n" + markdown_table(rows, metric=metric),
        _selection(run.load(SELECTION_FILE), metric, description, loss.task),
        _history(run.history(), figures),
        _metatest(run.load(METATEST_FILE), figures),
        _settings(description),
    ]
    path = out / REPORT_FILE
    path.write_text("\n\n".join(s for s in sections if s) + "\n")
    return path


def _heading(path: Path, description: dict[str, Any], task: dict[str, Any]) -> str:
    dataset = task.get("dataset") or "user data"
    facts = [f"task `{dataset}` ({task.get('kind', description.get('kind', '?'))})",
             f"model `{task.get('model', '?')}`", f"engine `{description.get('engine', '?')}`",
             f"seed {description.get('seed', '?')}"]
    return (f"# symloss run `{path.name}`\n\n" + ", ".join(facts) + ". Written by "
            "`symloss report` from the run directory's records.")


def _chosen(loss: Any, rows: Sequence[Equation], figures: dict[str, Path]) -> str:
    lines = ["## Chosen loss", ""]
    if isinstance(loss, LearnedLoss):
        chosen = next((r for r in rows if r.chosen), None)
        lines += ["```math", loss.latex(), "```", "",
                  f"Expression `{loss.expression}`"
                  + (f" (search fitness {chosen.fitness:.4f})" if chosen else "")
                  + (", with the learned edge weights "
                     + ", ".join(f"{w:.4g}" for w in loss.weights)
                     + " folded into the formula (to 3 significant digits)"
                     if any(w != 1.0 for w in loss.weights) else ", plain (no learned weights)")
                  + _refinement_text(chosen) + ". " + _rate_text(loss) + "Per element: "
                  + ("`f` is the softmax (sigmoid for one output) probability and `y` the "
                     "one-hot label; summed over classes, averaged over the batch."
                     if loss.task == CLASSIFICATION else
                     "`f` is the prediction and `y` the target; summed over the outputs, "
                     "averaged over the batch.")]
    if "loss_shape" in figures:
        lines += ["", "![The chosen loss against the baseline, both normalised]"
                  f"({figures['loss_shape'].name})"]
    lines += ["", "Use it without a search:", "", "```python", "import symloss",
              "", f'loss = symloss.load("{BEST_LOSS_FILE}")  # a torch module',
              "value = loss(y_pred, y_true)  # logits or predictions, labels or targets",
              "```", "", "or as standalone code that needs no symloss: "
              f"`symloss export {BEST_LOSS_FILE} --to torch` (or `numpy`, `jax`, `latex`, "
              "`sympy`)."]
    return "\n".join(lines)


def _rate_text(loss: LearnedLoss) -> str:
    """How the saved loss is scaled and the learning rate it was chosen at."""
    text = ""
    if loss.scale != 1.0:
        text += (f"It is normalised to the baseline's gradient scale (factor {loss.scale:.4g}),"
                 " so it works at the learning rate a loop uses for the baseline")
    with_ = loss.learned_with
    if with_ is not None and with_.recommended_lr is not None:
        best = f"rate {with_.recommended_lr:g}"
        text += (f"; the final selection trained it best at SGD {best}" if text
                 else f"The final selection trained it best at SGD {best}")
    return text + ". " if text else ""


def _data(task: dict[str, Any]) -> str:
    if not task:
        return ""
    lines = ["## Data", ""]
    if task.get("description"):
        lines.append(f"- data: {task['description']}")
    lines.append(f"- splits: {task['splits']} (train / validation / test never overlap; "
                 "the search trains on train and scores on validation, the meta-test "
                 "reports test)")
    lines.append(f"- inputs: shape {tuple(task['input_shape'])}, {task['input_dtype']}")
    if task["kind"] == CLASSIFICATION:
        counts = task.get("class_counts") or []
        lines.append(f"- classes: {task['n_classes']}; training examples per class: "
                     + ", ".join(str(c) for c in counts))
    else:
        t = task["targets"]
        q = t["quantiles"]
        lines.append(f"- targets ({t['outputs']} per example): mean {t['mean']:.4g}, "
                     f"std {t['std']:.4g}, range [{t['min']:.4g}, {t['max']:.4g}], "
                     f"10% / 50% / 90% quantiles {q['10%']:.4g} / {q['50%']:.4g} / "
                     f"{q['90%']:.4g}")
    lines.append(f"- model: `{task['model']}`, {task['model_parameters']:,} parameters")
    lines.append(f"- metric: {task['metric']} (lower is better); baseline loss "
                 f"`{task['baseline']}`")
    if task.get("meta_objective"):
        lines.append(f"- local search meta-objective: {task['meta_objective']}")
    return "\n".join(lines)


def _selection(selection: list[dict[str, Any]] | None, metric: str,
               description: dict[str, Any], kind: str) -> str:
    if not selection:
        return ""
    settings = description.get("settings", {})
    adam = any(row.get("adam_curve") for row in selection)
    lines = ["## Final selection", "",
             f"The best distinct losses and the baseline retrained for "
             f"{settings.get('selection_steps', '?')} SGD steps on "
             f"{settings.get('selection_seeds', '?')} seeds, each at its best SGD rate"]
    if adam:
        lines[-1] += (
            f", and with Adam at rate {settings.get('selection_adam_lr', '?')} on the same "
            f"seeds. A learned loss is eligible only if its mean validation {metric} is no "
            "worse than the plain baseline's with SGD and at every checkpoint of the Adam "
            "runs; the eligible one with the lowest score (the average of the SGD and Adam "
            "means) is chosen (first row). A loss already worse than the plain baseline with "
            "SGD cannot be chosen, so it is not trained with Adam, and one behind the plain "
            "baseline at an Adam checkpoint stops there.")
        header = (f"| SGD mean validation {metric} | per seed | SGD rate | Adam at the "
                  "checkpoints | score | eligible | search fitness | expression | "
                  "with learned weights |")
        lines += ["", header, "|---:|---|---:|---|---:|:-:|---:|---|---|"]
    else:
        lines[-1] += f"; the lowest mean validation {metric} is chosen (first row)."
        lines += ["", f"| mean validation {metric} | per seed | SGD rate | search fitness | "
                  "expression | with learned weights |", "|---:|---|---:|---:|---|---|"]
    for row in selection:
        mean = "diverged" if row["mean"] is None else f"{row['mean']:.4f}"
        seeds = _metrics_text(row["metrics"])
        fitness = row.get("search_fitness")
        fitness_text = "-" if fitness is None else f"{fitness:.4f}"
        weights = row.get("weights")
        if weights is None:  # runs of earlier versions did not record them
            form = "-"
        elif weights:
            form = f"$`{LearnedLoss(row['expression'], kind, weights).latex()}`$"
        else:
            form = "(plain)"
        rate = "-" if row.get("lr") is None else f"{row['lr']:g}"
        cells = [mean, seeds, rate]
        if adam:
            curve = row.get("adam_curve") or []
            stopped = 0 < len(curve) < max(len(r.get("adam_curve") or []) for r in selection)
            cells += [(_metrics_text(curve) + ("; stopped, behind the plain baseline"
                                               if stopped else ""))
                      or "not run (worse with SGD)",
                      "diverged" if row.get("score") is None else f"{row['score']:.4f}",
                      "yes" if row.get("eligible", True) else "no"]
        cells += [fitness_text, f"`{row['expression']}`", form.replace("|", chr(92) + "|")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _refinement_text(row: Equation | None) -> str:
    """What the local search's guard decided for the chosen row, when it ran."""
    if row is None or row.unrefined_fitness is None or row.refined_fitness is None:
        return ""
    plain, refined = row.unrefined_fitness, row.refined_fitness
    if row.refined:
        return f"; the refinement improved its search fitness from {plain:.4f}"
    return f"; its refined form trained worse ({refined:.4f} against {plain:.4f}) and was not kept"


def _metrics_text(values: Sequence[float | None]) -> str:
    """Metrics of several runs as text, ``div.`` for a diverged one (``None``)."""
    return ", ".join("div." if m is None else f"{m:.4f}" for m in values)


def _history(history: Sequence[GenerationStats], figures: dict[str, Path]) -> str:
    if not history:
        return ""
    lines = ["## Search history", "",
             "| generation | best | median | evaluated | cached | rejected (by reason) "
             "| seconds |", "|---:|---:|---:|---:|---:|---|---:|"]
    for h in history:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(h.rejected.items())) or "-"
        lines.append(f"| {h.generation} | {_number(h.best_fitness)} | "
                     f"{_number(h.median_fitness)} | {h.evaluated} | {h.cached} | "
                     f"{sum(h.rejected.values())}: {reasons} | {h.seconds:.1f} |")
    if "history" in figures:
        lines += ["", f"![Best and median fitness and rejections per generation]"
                      f"({figures['history'].name})"]
    return "\n".join(lines)


def _metatest(data: dict[str, Any] | None, figures: dict[str, Path]) -> str:
    if not data:
        return ("## Meta-test\n\nThis run has no recorded meta-test (`symloss search` records "
                "one; in Python, `symloss.evaluate`).")
    result = MetaTestResult.from_dict(data)
    results = [result.learned] + ([result.baseline] if result.baseline else [])
    lines = ["## Meta-test", "",
             f"Fresh models trained for {result.steps} SGD steps with each loss, seeds "
             f"{', '.join(map(str, result.seeds))} (not the search seed); test {result.metric}"
             " (lower is better).", "",
             "| seed | learned |" + (f" baseline ({result.baseline.name}) |"
                                      if result.baseline else ""),
             "|---:|" + "---:|" * len(results)]
    for i, seed in enumerate(result.seeds):
        lines.append(f"| {seed} | " + " | ".join(_metric(r.metrics[i]) for r in results) + " |")
    lines.append("| **mean ± std** | " + " | ".join(
        f"**{_metric(r.mean)} ± {_metric(r.std)}**" for r in results) + " |")
    if result.extras.get("lr_grid"):
        lines.append("| SGD rate | " + " | ".join(f"{r.lr:g}" for r in results) + " |")
        grid = ", ".join(f"{lr:g}" for lr in result.extras["lr_grid"])
        lines += ["", f"Each loss trained at its best rate of {grid} on validation."]
    if "learning_curves" in figures:
        lines += ["", f"![Meta-test learning curves, learned against baseline]"
                      f"({figures['learning_curves'].name})"]
    return "\n".join(lines)


def _settings(description: dict[str, Any]) -> str:
    settings = description.get("settings")
    if not settings:
        return ""
    lines = ["## Settings", "", "<details><summary>All search settings</summary>", "",
             "| setting | value |", "|---|---|"]
    lines += [f"| `{name}` | `{json.dumps(value)}` |" for name, value in settings.items()]
    seeds = description.get("seeds") or []
    lines += ["", "</details>", "",
              f"Initial population seeded with {len(seeds)} known losses "
              f"({', '.join(f'`{s}`' for s in seeds)})." if seeds else ""]
    return "\n".join(line for line in lines)


def _metric(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else "diverged"


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-" if value is None else str(value)
    return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
