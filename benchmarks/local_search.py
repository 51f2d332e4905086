"""Local search methods compared: unrolled 1 step (paper), unrolled 10 steps, implicit.

For each task and each method, the local search refines the edge weights of one starting
expression on ``--seeds`` meta-seeds; each resulting loss then trains fresh models (seeds
the search never saw) and is scored on the clean test split. Printed per row: seconds per
candidate (the local-search stage only), the test metric (mean +- std over meta-seeds)
and its ratio to the baseline loss trained the same way; for the known-answer tasks also
the loss's offset (known answer: 0, see ``known_answer.py``).

Tasks:
- ``quantile``, ``mixture``: linear regression with asymmetric noise on the training
  labels only (``known_answer.py``); trained at the task's fixed SGD rate.
- ``digits``: the built-in 64-40-40-10 MLP on scikit-learn digits with 40% of the training
  labels replaced by random ones (validation and test clean), starting from a mix of
  cross-entropy and squared error. Losses are normalised to cross-entropy's gradient
  scale (in the search, as the default search does, and after it), and every loss, the
  baseline included, is trained at its best rate of a small grid (chosen on validation
  per fresh seed), so no loss wins by being a larger step size in disguise.

``--population`` measures instead what the local search does to a whole generation, as
a search sees it: for each task (``sine``, ``diabetes``, ``noisy-digits``), the candidates
of generation 0 of a ``quick`` search (seed 0, the search's learning rate tuned as the
search tunes it) are evaluated as the search evaluates them, once per method. Each
trained candidate's record holds its fitness unrefined and refined (the local search's
guard trains both, see docs/design.md, "Local search"). Printed per candidate: both
fitnesses (refined as the method left it; ``*``: the guard kept the refined loss); per
method: candidates improved and worse, the geometric mean of refined / unrefined (raw,
and as kept by the guard), the best unrefined against the best refined fitness, and how
many candidates within 10% of the best unrefined one end more than 1% worse.

A candidate's fitness is one training run (seed 0): on noisy digits its error count
varies by tens of examples from one training seed to the next, so one candidate's
fitness is partly the luck of its seed. ``--fitness-seeds N`` therefore also trains
every candidate, as written and as refined by each method (the weights the search's
local search gives it, kept or not), on ``N`` further training seeds, and prints the
mean validation metric over them: what each loss does, not what one run of it did.

Usage: python benchmarks/local_search.py --quick     (a few minutes on two CPU cores)
       python benchmarks/local_search.py --population --tasks sine diabetes noisy-digits
       python benchmarks/local_search.py --population --tasks noisy-digits --fitness-seeds 8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from known_answer import KnownAnswerTask, mixture_task, quantile_task  # noqa: E402

from symloss.config import Settings, preset  # noqa: E402
from symloss.engines.base import SearchContext  # noqa: E402
from symloss.engines.deap import DeapEngine  # noqa: E402
from symloss.evaluator import Evaluator  # noqa: E402
from symloss.expression import Expression  # noqa: E402
from symloss.library import known_losses  # noqa: E402
from symloss.local_search import local_search  # noqa: E402
from symloss.network import LearnedLoss  # noqa: E402
from symloss.records import CACHED, Evaluation  # noqa: E402
from symloss.scale import reference_batch, search_loss  # noqa: E402
from symloss.step_size import tune_search_lr  # noqa: E402
from symloss.task import Task, make_task, resolve_data  # noqa: E402
from symloss.training import SGDSettings, sgd_settings, train  # noqa: E402

METHODS: dict[str, dict[str, object]] = {
    "none (starting expression)": {"meta_steps": 0},
    "unrolled, 1 step (paper): 250 Adam steps at 1e-3": {
        "local_search_method": "unrolled", "unroll_steps": 1, "meta_steps": 250,
        "meta_lr": 1e-3},
    "unrolled, 10 steps: 100 Adam steps at 1e-2": {
        "local_search_method": "unrolled", "unroll_steps": 10, "meta_steps": 100,
        "meta_lr": 1e-2},
    "implicit: 20 inner steps, Neumann 10 x 0.01; 100 Adam steps at 1e-2": {
        "local_search_method": "implicit", "implicit_inner_steps": 20, "neumann_terms": 10,
        "neumann_alpha": 0.01, "meta_steps": 100, "meta_lr": 1e-2},
    "implicit, cheaper: 10 inner steps, Neumann 5 x 0.01; 100 Adam steps at 1e-2": {
        "local_search_method": "implicit", "implicit_inner_steps": 10, "neumann_terms": 5,
        "neumann_alpha": 0.01, "meta_steps": 100, "meta_lr": 1e-2},
    "online (quick), 5 steps unrolled along the run: 40 Adam steps at 1e-2": {
        "local_search_method": "online", "unroll_steps": 5, "meta_steps": 40,
        "meta_lr": 1e-2},
}
DIGITS_EXPRESSION = "-(y * log(f)) + square(f - y)"
DIGITS_LABEL_NOISE = 0.4


@dataclass(frozen=True)
class Case:
    """One task of the benchmark: where to search, what to start from, how to judge."""

    name: str
    task: Task
    expression: str
    lrs: tuple[float, ...]
    normalize: bool = False
    known: KnownAnswerTask | None = None


def noisy_digits(seed: int = 0) -> Task:
    """Digits with :data:`DIGITS_LABEL_NOISE` of the training labels made random."""
    data, kind = resolve_data("digits")
    x, y = data["train"]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_val = len(y) // 5
    val, fit = order[:n_val], order[n_val:]
    y_fit = y[fit].copy()
    flip = rng.random(len(fit)) < DIGITS_LABEL_NOISE
    y_fit[flip] = rng.integers(0, 10, int(flip.sum()))
    return make_task({"train": (x[fit], y_fit), "val": (x[val], y[val]), "test": data["test"]},
                     "mlp", task=kind)


def score_loss(case: Case, loss: LearnedLoss, steps: int, seeds: Sequence[int]) -> float:
    """Mean test metric over fresh ``seeds``, at the rate best on validation (per seed)."""
    values = []
    for seed in seeds:
        best = (float("inf"), float("inf"))
        for lr in case.lrs:
            result = train(case.task, loss, steps, SGDSettings(lr=lr), seed)
            if result.diverged:
                continue
            best = min(best, (case.task.metric(result.model, case.task.val),
                              case.task.metric(result.model, case.task.test)))
        values.append(best[1])
    return statistics.fmean(values)


def run_case(case: Case, settings: Settings, meta_seeds: Sequence[int], steps: int,
             fresh_seeds: Sequence[int], rows_like: Sequence[str] = ()
             ) -> list[dict[str, object]]:
    """One row per method (those whose name starts with one of ``rows_like``, all by
    default): seconds per candidate, test metric, offset."""
    baseline = score_loss(case, LearnedLoss(case.task.baseline, case.task.kind), steps,
                           fresh_seeds)
    reference = reference_batch(case.task) if case.normalize else None
    settings = settings.replace(normalize=case.normalize)
    rows = []
    for method, overrides in METHODS.items():
        if rows_like and not method.startswith(tuple(rows_like)):
            continue
        seconds, metrics, offsets = [], [], []
        for seed in meta_seeds:
            started = time.perf_counter()
            result = local_search(case.task, case.expression, settings.replace(**overrides),
                                  seed, reference)
            seconds.append(time.perf_counter() - started)
            loss = search_loss(case.task, settings, case.expression, result.weights, reference)
            metrics.append(score_loss(case, loss, steps, fresh_seeds))
            if case.known is not None:
                offsets.append(case.known.offset(result.weights))
        rows.append({
            "task": case.name, "method": method, "seconds": statistics.fmean(seconds),
            "metric": statistics.fmean(metrics),
            "std": statistics.stdev(metrics) if len(metrics) > 1 else 0.0,
            "ratio": statistics.fmean(metrics) / baseline,
            "offset": statistics.fmean(offsets) if offsets else None,
        })
        print(f"  {case.name}: {method}: {rows[-1]['metric']:.4f} "
              f"({rows[-1]['seconds']:.1f} s per candidate)", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, object]]) -> str:
    """The results as a markdown table."""
    lines = ["| task | local search | seconds per candidate | test metric | vs baseline "
             "| offset (known: 0) |", "|---|---|---|---|---|---|"]
    for row in rows:
        offset = "" if row["offset"] is None else f"{row['offset']:+.3f}"
        lines.append(f"| {row['task']} | {row['method']} | {row['seconds']:.1f} | "
                     f"{row['metric']:.4f} +- {row['std']:.4f} | {row['ratio']:.3f}x | "
                     f"{offset} |")
    return "\n".join(lines)


def cases(names: Sequence[str]) -> list[Case]:
    """The named benchmark tasks."""
    built = []
    for name in names:
        if name in ("quantile", "mixture"):
            known = quantile_task() if name == "quantile" else mixture_task()
            built.append(Case(name, known.task, known.expression, (known.lr,), known=known))
        elif name == "digits":
            built.append(Case("digits (40% noisy labels, MLP)", noisy_digits(),
                              DIGITS_EXPRESSION, (0.03, 0.1, 0.3), normalize=True))
        else:
            raise SystemExit(f"unknown task {name!r}; choose from quantile, mixture, digits")
    return built


POPULATION_METHODS: dict[str, dict[str, object]] = {
    "unrolled": {"local_search_method": "unrolled"},
    "implicit": {"local_search_method": "implicit"},
    "online": {"local_search_method": "online"},
}
"""Methods of ``--population``: overrides of the ``quick`` preset's local search."""
POPULATION_TASKS = ("sine", "diabetes", "noisy-digits")
NEAR_BEST = 1.10  # "within 10% of the best unrefined fitness"
WORSE = 1.01  # "more than 1% worse"


class _Captured(Exception):
    """Raised by the capturing evaluate: generation 0 is all that is wanted."""


def generation_zero(task: Task, settings: Settings, seed: int) -> list[Expression]:
    """The candidates of generation 0 of a DEAP search with these settings and seed
    (the seeded library losses, then random trees), without evaluating them."""
    captured: list[Expression] = []

    def evaluate(expressions: Sequence[Expression]) -> list[Evaluation]:
        captured.extend(expressions)
        raise _Captured

    context = SearchContext(kind=task.kind, settings=settings, seed=seed,
                            seeds=known_losses(task.kind, task.single_output),
                            evaluate=evaluate)
    with contextlib.suppress(_Captured):
        DeapEngine().search(context)
    return captured


def population_task(name: str) -> Task:
    """The task of a ``--population`` run."""
    if name == "noisy-digits":
        return noisy_digits()
    if name not in ("sine", "diabetes"):
        raise SystemExit(f"unknown population task {name!r}; choose from {POPULATION_TASKS}")
    data, kind = resolve_data(name)
    return make_task(data, "mlp" if name == "sine" else "linear", task=kind)


def _ratio(refined: float, unrefined: float) -> float | None:
    if math.isfinite(refined) and math.isfinite(unrefined) and unrefined > 0:
        return refined / unrefined
    return None


def _geomean(values: Sequence[float]) -> float:
    positive = [v for v in values if v > 0]
    return math.exp(statistics.fmean(math.log(v) for v in positive)) if positive else math.nan


def population_summary(records: Sequence[Evaluation]) -> dict[str, object]:
    """Improved / worse counts, geometric means and near-best outcomes of one method."""
    pairs = [(e.unrefined_fitness, e.refined_fitness, e.fitness) for e in records]
    best = min(u for u, _, _ in pairs)
    near = [(u, r, k) for u, r, k in pairs if u <= NEAR_BEST * best]
    raw = [x for u, r, _ in pairs if (x := _ratio(r, u)) is not None]
    kept = [x for u, _, k in pairs if (x := _ratio(k, u)) is not None]
    return {
        "n": len(pairs),
        "improved": sum(r < u for u, r, _ in pairs),
        "worse": sum(r > u for u, r, _ in pairs),
        "geomean": _geomean(raw), "geomean_kept": _geomean(kept),
        "best_unrefined": best, "best_refined": min(r for _, r, _ in pairs),
        "best_kept": min(k for _, _, k in pairs),
        "near": len(near), "near_worse": sum(r > WORSE * u for u, r, _ in near),
        "near_worse_kept": sum(k > WORSE * u for u, _, k in near),
        "kept_refined": sum(e.refined for e in records),
    }


FRESH_SEED_OFFSET = 1000
"""``--fitness-seeds``: the further training seeds are ``seed + 1000, seed + 1001, ...``,
none of them a seed that the search's fitness run or its local search initialises from."""


def seeds_mean(task: Task, settings: Settings, seed: int, expression: str,
               weights: Sequence[float], seeds: Sequence[int]) -> float:
    """Mean validation metric of the loss as the search trains it (normalised at the
    search's reference batch, fitness optimiser and steps) over training ``seeds``;
    ``inf`` if a run diverges or the loss cannot be normalised."""
    reference = reference_batch(task, seed) if settings.normalize else None
    try:
        loss = search_loss(task, settings, expression, weights, reference)
    except ValueError:
        return math.inf
    values = []
    for fresh in seeds:
        result = train(task, loss, settings.fitness_steps, sgd_settings(settings), fresh)
        values.append(math.inf if result.diverged else task.metric(result.model, task.val))
    return statistics.fmean(values)


def run_population(
    name: str, methods: Sequence[str], seed: int = 0, fitness_seeds: int = 0,
    **overrides: object,
) -> tuple[list[str], dict[str, list[Evaluation]], dict[str, float],
           dict[str, dict[str, float]]]:
    """Generation 0 of a ``quick`` search on task ``name``, evaluated once per method:
    the candidates trained (in order), each method's records of them, each method's
    mean seconds per candidate in its local search, plain and refined fitness runs
    (keys ``"<method> <stage>"``), and with ``fitness_seeds`` the mean validation
    metric over that many further training seeds (:func:`seeds_mean`) of each
    candidate, by expression, as written (key ``"unrefined"``) and as each method
    refined it (its weights recomputed as the evaluator computes them)."""
    task = population_task(name)
    settings = preset("quick", **overrides)
    settings = settings.replace(lr=tune_search_lr(task, settings, seed).lr)
    population = generation_zero(task, settings, seed)
    records: dict[str, list[Evaluation]] = {}
    seconds: dict[str, float] = {}
    for method in methods:
        evaluator = Evaluator(task, settings.replace(**POPULATION_METHODS[method]), seed)
        results = evaluator.evaluate_many(population)
        trained = [e for e in results if e.status != CACHED and e.refined_fitness is not None]
        records[method] = trained
        for stage in ("local_search", "fitness", "refined_fitness"):
            seconds[f"{method} {stage}"] = statistics.fmean(
                e.timings.get(stage, 0.0) for e in trained)
        print(f"  {name}: {method}: {len(trained)} candidates, "
              f"{seconds[f'{method} local_search']:.1f} s local search per candidate",
              file=sys.stderr, flush=True)
    expressions = [e.expression for e in records[methods[0]]]
    means: dict[str, dict[str, float]] = {}
    if fitness_seeds:
        fresh = range(seed + FRESH_SEED_OFFSET, seed + FRESH_SEED_OFFSET + fitness_seeds)
        reference = reference_batch(task, seed) if settings.normalize else None
        means["unrefined"] = {x: seeds_mean(task, settings, seed, x, (), fresh)
                              for x in expressions}
        for method in methods:
            method_settings = settings.replace(**POPULATION_METHODS[method])
            means[method] = {}
            for e in records[method]:
                # as the evaluator refines (symloss.scoring._refine): meta-seed seed + 1
                weights = local_search(task, e.expression, method_settings, seed + 1,
                                       reference).weights
                means[method][e.expression] = seeds_mean(task, method_settings, seed,
                                                         e.expression, weights, fresh)
        print(f"  {name}: means over {fitness_seeds} further training seeds done",
              file=sys.stderr, flush=True)
    return expressions, records, seconds, means


def population_table(
    name: str, expressions: Sequence[str], records: dict[str, list[Evaluation]],
    seconds: dict[str, float],
) -> str:
    """Per candidate and per method, as markdown."""
    methods = list(records)
    by_method = {m: {e.expression: e for e in records[m]} for m in methods}

    def cell(method: str, expression: str) -> str:
        e = by_method[method].get(expression)
        return "-" if e is None else f"{e.refined_fitness:.4f}{'*' if e.refined else ''}"

    lines = _candidate_rows(
        f"### {name}", expressions, methods,
        lambda x: by_method[methods[0]][x].unrefined_fitness, cell)
    lines += ["", "| method | s per candidate: local search, plain fitness, refined fitness "
              "| improved / worse | geo-mean refined/unrefined "
              "(kept) | best unrefined -> refined (kept) | within 10% of best: >1% worse "
              "(kept) |", "|---|---:|---|---|---|---|"]
    for m in methods:
        s = population_summary(records[m])
        lines.append(
            f"| {m} | " + ", ".join(f"{seconds[f'{m} {stage}']:.1f}" for stage in (
                "local_search", "fitness", "refined_fitness"))
            + f" | {s['improved']} / {s['worse']} of {s['n']} | "
            f"{s['geomean']:.3f} ({s['geomean_kept']:.3f}) | {s['best_unrefined']:.4f} -> "
            f"{s['best_refined']:.4f} ({s['best_kept']:.4f}) | {s['near_worse']} of "
            f"{s['near']} ({s['near_worse_kept']}) |")
    return "\n".join(lines)


def _candidate_rows(
    title: str, expressions: Sequence[str], methods: Sequence[str],
    unrefined: Callable[[str], float], cell: Callable[[str, str], str],
) -> list[str]:
    """A markdown table of one row per candidate: its unrefined value, then ``cell(method,
    expression)`` per method."""
    lines = [title, "", "| candidate | unrefined | " + " | ".join(methods) + " |",
             "|---|---:|" + "---:|" * len(methods)]
    for expression in expressions:
        cells = [f"`{expression}`", f"{unrefined(expression):.4f}"]
        cells += [cell(m, expression) for m in methods]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def seeds_table(name: str, expressions: Sequence[str], records: dict[str, list[Evaluation]],
                means: dict[str, dict[str, float]], n: int) -> str:
    """``--fitness-seeds``: per candidate, the mean validation metric over ``n`` further
    training seeds, as written and as each method refined it (``*``: the guard kept the
    refined loss on the search's own seed); per method, the best candidate's and the
    geometric mean of refined / unrefined, raw and for what the guard kept."""
    methods = list(records)
    kept_by = {m: {e.expression: e.refined for e in records[m]} for m in methods}
    plain = means["unrefined"]

    def cell(method: str, expression: str) -> str:
        value = means[method].get(expression)
        return "-" if value is None else f"{value:.4f}{'*' if kept_by[method][expression] else ''}"

    lines = _candidate_rows(f"### {name}: mean over {n} further training seeds", expressions,
                            methods, plain.__getitem__, cell)
    lines += ["", "| method | best unrefined -> refined (kept) | geo-mean refined/unrefined "
              "(kept) |", "|---|---|---|"]
    for m in methods:
        pairs = [(plain[x], r, r if kept_by[m][x] else plain[x]) for x, r in means[m].items()]
        raw = [v for u, r, _ in pairs if (v := _ratio(r, u)) is not None]
        kept = [v for u, _, k in pairs if (v := _ratio(k, u)) is not None]
        lines.append(
            f"| {m} | {min(u for u, _, _ in pairs):.4f} -> {min(r for _, r, _ in pairs):.4f} "
            f"({min(k for _, _, k in pairs):.4f}) | {_geomean(raw):.3f} ({_geomean(kept):.3f}) |")
    return "\n".join(lines)


def population_main(args: argparse.Namespace) -> None:
    """The ``--population`` mode."""
    torch.set_num_threads(1)
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    print(f"Generation 0 of a quick search (seed {args.seed}), refined by each method; "
          f"settings overrides {overrides or 'none'}. Fitness: validation MSE (sine, "
          "diabetes) / error rate (digits) after the search's fitness training; `*`: the "
          "guard kept the refined loss. Geo-mean and best: raw refined (and as kept).")
    for name in args.tasks:
        expressions, records, seconds, means = run_population(
            name, args.methods, args.seed, args.fitness_seeds, **overrides)
        print()
        print(population_table(name, expressions, records, seconds), flush=True)
        if means:
            print()
            print(seeds_table(name, expressions, records, means, args.fitness_seeds),
                  flush=True)


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer training steps and fresh seeds (a few minutes)")
    parser.add_argument("--tasks", nargs="+", default=["quantile", "mixture", "digits"])
    parser.add_argument("--seeds", type=int, default=3, help="meta-seeds per method")
    parser.add_argument("--rows", nargs="+", default=[], metavar="PREFIX",
                        help="only the methods whose name starts with one of these, e.g. "
                             "none online")
    parser.add_argument("--population", action="store_true",
                        help="whole generation 0 of a quick search, unrefined vs refined "
                             f"(tasks: {', '.join(POPULATION_TASKS)})")
    parser.add_argument("--methods", nargs="+", default=list(POPULATION_METHODS),
                        choices=list(POPULATION_METHODS), help="--population: methods")
    parser.add_argument("--seed", type=int, default=0, help="--population: search seed")
    parser.add_argument("--set", nargs="+", default=[], metavar="NAME=VALUE",
                        help="--population: settings overrides, VALUE in JSON")
    parser.add_argument("--fitness-seeds", type=int, default=0, metavar="N",
                        help="--population: also the mean validation metric of every "
                             "candidate, unrefined and refined, over N further training "
                             "seeds")
    args = parser.parse_args(argv)
    if args.population:
        if args.tasks == ["quantile", "mixture", "digits"]:
            args.tasks = list(POPULATION_TASKS)
        population_main(args)
        return []
    torch.set_num_threads(1)
    steps, fresh = (500, (101,)) if args.quick else (2000, (101, 102, 103))
    rows = []
    for case in cases(args.tasks):
        settings = preset("quick").replace(meta_batch_size=128, lr=case.lrs[len(case.lrs) // 2])
        known_steps = 1000 if case.known is not None else steps
        rows += run_case(case, settings, range(1, args.seeds + 1), known_steps, fresh,
                         args.rows)
    print(f"Test metric: MSE (regression) / error rate (digits), mean +- std over "
          f"{args.seeds} meta-seeds, each loss trained on fresh seed(s) {list(fresh)}.")
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
