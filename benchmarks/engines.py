"""DEAP's generational GP against Operon's NSGA-II at the same number of evaluations.

For each task and seed, both engines search with the same settings (the ``quick``
preset's inner loop, a small population, no final selection) and the same seed
population. The DEAP engine evaluates ``population_size - elitism`` children per
generation, the Operon engine ``population_size``, so the runs are compared on their
first ``N`` evaluations, ``N`` the smaller total: the best validation fitness found
among them (error rate or MSE; lower is better). Also printed: candidates actually
trained within those ``N`` (the rest were cached, equivalent or rejected by the cheap
checks), the size of the best loss, and wall-clock seconds of the whole search.

``--no-seeds`` starts both from random trees instead of the baseline and known losses,
which at small budgets decide most of the outcome.

Usage: python benchmarks/engines.py --tasks sine:mlp digits:mlp --seeds 0 1 2 [--no-seeds]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from symloss.estimator import SymbolicLossSearch
from symloss.expression import Expression
from symloss.records import OK, Evaluation
from symloss.runs import RunDirectory

ENGINES = ("deap", "operon")


@dataclass(frozen=True)
class Run:
    """One search, reduced to its first ``budget`` evaluations."""

    task: str
    engine: str
    seed: int
    evaluations: int
    trained: int
    best_fitness: float
    best_size: int
    seconds: float


def search(task: str, engine: str, seed: int, population: int, generations: int,
           run_dir: Path, seeded: bool = True) -> tuple[list[Evaluation], float]:
    """Run one search; its evaluations in search order and its wall-clock seconds."""
    dataset, model = task.split(":")
    estimator = SymbolicLossSearch(
        engine=engine, population_size=population, generations=generations,
        random_state=seed, verbose=False, run_dir=run_dir,
        settings={"selection_top_k": 0, "seed_population": seeded},
    )
    started = time.perf_counter()
    try:
        estimator.fit(dataset, model)
    except RuntimeError as exc:  # no candidate trained: possible from random trees alone
        print(f"{task} seed {seed} {engine}: {exc}", flush=True)
    seconds = time.perf_counter() - started
    records = sorted(RunDirectory(run_dir).records(), key=lambda r: (r.generation, r.index))
    return [r.evaluation for r in records], seconds


def reduce(task: str, engine: str, seed: int, evaluations: list[Evaluation], budget: int,
           seconds: float) -> Run:
    """The best of the first ``budget`` evaluations."""
    first = evaluations[:budget]
    best = min(first, key=lambda e: e.fitness)
    return Run(task, engine, seed, len(first), sum(e.status == OK for e in first),
               best.fitness, Expression.parse(best.expression).size, seconds)


def mean_std(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "inf"
    spread = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return f"{statistics.mean(finite):.4f} ± {spread:.4f}"


def report(runs: list[Run]) -> str:
    """Per-run rows, then per task and engine the mean ± std and the wins per seed."""
    lines = ["| task | engine | seed | evaluations | trained | best fitness | size | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r.task} | {r.engine} | {r.seed} | {r.evaluations} | {r.trained} | "
                     f"{r.best_fitness:.4f} | {r.best_size} | {r.seconds:.0f} |")
    lines += ["", "| task | engine | best fitness (mean ± std) | trained | seconds | "
              "seeds won (ties) |", "|---|---|---|---|---|---|"]
    for task in dict.fromkeys(r.task for r in runs):
        by_engine = {e: [r for r in runs if r.task == task and r.engine == e] for e in ENGINES}
        pairs = list(zip(*(by_engine[e] for e in ENGINES), strict=True))
        ties = sum(a.best_fitness == b.best_fitness for a, b in pairs)
        for engine, rows in by_engine.items():
            won = sum(
                (a if engine == "deap" else b).best_fitness
                < (b if engine == "deap" else a).best_fitness
                for a, b in pairs
            )
            lines.append(
                f"| {task} | {engine} | {mean_std([r.best_fitness for r in rows])} | "
                f"{statistics.mean(r.trained for r in rows):.1f} | "
                f"{statistics.mean(r.seconds for r in rows):.0f} | {won} ({ties}) |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["sine:mlp", "digits:mlp"],
                        help="dataset:model pairs")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--no-seeds", action="store_true",
                        help="random initial populations (no baseline or known losses): "
                             "compares the engines' search alone")
    args = parser.parse_args()
    runs: list[Run] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        # first calls (SymPy, autograd, imports) would bill whichever engine runs first
        for engine in ENGINES:
            search(args.tasks[0], engine, 0, 2, 1, Path(root) / f"warm-up-{engine}")
        for task in args.tasks:
            for seed in args.seeds:
                results = {
                    engine: search(task, engine, seed, args.population, args.generations,
                                   Path(root) / f"{task.replace(':', '-')}-{engine}-{seed}",
                                   seeded=not args.no_seeds)
                    for engine in ENGINES
                }
                budget = min(len(evaluations) for evaluations, _ in results.values())
                for engine, (evaluations, seconds) in results.items():
                    runs.append(reduce(task, engine, seed, evaluations, budget, seconds))
                    print(f"{task} seed {seed} {engine}: best {runs[-1].best_fitness:.4f} "
                          f"in {budget} evaluations ({seconds:.0f} s)", flush=True)
    seeding = "random initial populations" if args.no_seeds else "seeded initial populations"
    print(f"\npopulation {args.population}, {args.generations} generations, {seeding}, "
          f"'quick' inner loop, no final selection; {time.perf_counter() - started:.0f} s "
          "in all\n")
    print(report(runs))


if __name__ == "__main__":
    main()
