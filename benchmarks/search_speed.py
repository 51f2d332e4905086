"""Wall time of whole searches, by stage, with one and two worker processes.

Runs, one after the other in this process:

1. ``diabetes / linear`` at the EvoMAL reference's own per-candidate budget with a
   small GP (population 12, 6 generations; 250 meta-steps, 1 unrolled step, meta-lr
   1e-3; 500 fitness steps; 1,000 poor-training steps; SGD lr 0.01, momentum 0.9,
   Nesterov, weight decay 5e-4) -- the configuration the reference was timed on;
2. ``digits / mlp`` with the ``quick`` preset (final selection included).

Each search runs with ``n_jobs=1`` and ``n_jobs=2``, ``--repeat`` times (3 by default,
the ``n_jobs`` values interleaved), and the median run is reported; the script prints
the wall time,
the seconds and candidate counts of every stage, the speed-up of two workers over one,
whether both gave identical results (they must), and the ratio to the reference's
figures (measured on a 2-core machine of the same kind, see ``REFERENCE``).

Timings on a shared machine are noisy: the 1-minute load average is printed before and
after each run; with 2 cores, a load above ~1 while a one-worker search runs (above ~2
for two workers) means other work competed for the cores and the numbers are slow.

Usage::

    python benchmarks/search_speed.py             # the benchmark (a few minutes)
    python benchmarks/search_speed.py --quick     # a smoke run with tiny budgets
    python benchmarks/search_speed.py --before /path/to/old/checkout   # same run, old code
    python benchmarks/search_speed.py --quality --json after.json [--compare before.json]
    python benchmarks/search_speed.py --only digits --set local_search_guard=false  # no guard

``--before DIR`` also times the reference-budget search at ``n_jobs=1`` with the symloss
found in ``DIR`` (a checkout of an earlier version, run in a subprocess), right before
the current code, so the speed-up is measured on the same machine in the same run.

``--quality`` instead searches on three seeds per configuration and meta-tests each
chosen loss (test metric, mean over the preset's meta-test seeds), so that a speed
change can be checked not to change what the search finds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from symloss import SymbolicLossSearch
from symloss.metatest import meta_test
from symloss.records import CACHED, OK, REJECTED, rejection_category
from symloss.training import sgd_settings

STAGES = ("key", "structural", "fingerprint", "poor_training", "race", "local_search",
          "fitness", "refined_fitness")

REFERENCE = {
    "config": "diabetes/linear",
    "seconds": 90.0,
    "range": "82-90 s",
    "candidates": 56,
    "stages": {"local_search": 48.0, "rejection filter": 24.0, "fitness": 18.0},
    "source": "EvoMAL reference harness (DEAP 1.3.1 + higher, unmodified), seed 0, "
              "2-core machine, issue 11",
}
BEFORE = {"seconds": 40.0, "source": "symloss before issue 11, same machine kind, n_jobs=1"}

# The reference's per-candidate budget (issue 11), on the paper preset with a small GP.
REFERENCE_SETTINGS = dict(
    fitness_steps=500, poor_training_steps=1000, meta_steps=250, unroll_steps=1,
    meta_lr=1e-3, momentum=0.9, nesterov=True, weight_decay=0.0005, selection_top_k=0,
)
SMOKE = dict(meta_steps=5, fitness_steps=30, poor_training_steps=30, selection_steps=30,
             selection_seeds=1)


@dataclass(frozen=True)
class Config:
    """One search to time."""

    name: str
    dataset: str
    model: str
    preset: str
    population: int
    generations: int
    settings: dict[str, Any] = field(default_factory=dict)


CONFIGS = (
    Config("diabetes/linear (reference budget)", "diabetes", "linear", "paper", 12, 6,
           REFERENCE_SETTINGS),
    Config("digits/mlp (quick preset)", "digits", "mlp", "quick", 12, 6),
)
# Small enough for a GPU check on CPU and CUDA in a few minutes (benchmarks/gpu_check.sh).
MNIST = Config("mnist-5k/lenet5 (small quick search)", "mnist", "lenet5", "quick", 6, 2,
               dict(meta_steps=10, fitness_steps=100, poor_training_steps=50,
                    selection_top_k=0))


@dataclass
class Run:
    """What one timed search produced."""

    config: str
    n_jobs: int
    wall: float
    search: float
    stage_seconds: dict[str, float]
    stage_counts: dict[str, int]
    statuses: dict[str, int]
    rejections: dict[str, int]
    outcome: list[tuple[Any, ...]]
    chosen: str
    load: tuple[float, float]
    walls: list[float] = field(default_factory=list)
    """Wall seconds of every repeat (the run kept is the median one)."""
    repeats_identical: bool = True
    """Whether every repeat evaluated every candidate the same way."""


def median_run(trials: list[Run]) -> Run:
    """The repeat with the median wall time (the lower middle for an even count), with
    every repeat's wall time and whether all repeats gave the same results."""
    ranked = sorted(trials, key=lambda r: r.wall)
    middle = ranked[(len(ranked) - 1) // 2]
    return dataclasses.replace(
        middle, walls=[r.wall for r in trials],
        repeats_identical=all(r.outcome == middle.outcome for r in trials))


def _search(
    config: Config, n_jobs: int, seed: int, smoke: bool, device: str = "cpu"
) -> SymbolicLossSearch:
    settings = {**config.settings, **(SMOKE if smoke else {})}
    with tempfile.TemporaryDirectory() as run_dir:
        return SymbolicLossSearch(
            preset=config.preset, population_size=config.population,
            generations=min(2, config.generations) if smoke else config.generations,
            n_jobs=n_jobs, device=device, random_state=seed, settings=settings,
            verbose=False, run_dir=run_dir,
        ).fit(config.dataset, config.model)


def timed(config: Config, n_jobs: int, seed: int, smoke: bool, device: str = "cpu") -> Run:
    """Run one search and summarise where its time went."""
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    search = _search(config, n_jobs, seed, smoke, device)
    wall = time.perf_counter() - started
    seconds: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for evaluation in search.evaluations_:
        for stage, value in evaluation.timings.items():
            seconds[stage] += value
            counts[stage] += 1
    statuses = Counter(e.status for e in search.evaluations_)
    rejections = Counter(rejection_category(e.reason) for e in search.evaluations_
                         if e.status == REJECTED)
    outcome = [(e.expression, e.status, e.fitness, e.weights) for e in search.evaluations_]
    name = config.name if device == "cpu" else f"{config.name} on {device}"
    return Run(name, n_jobs, wall, sum(h.seconds for h in search.history_),
               dict(seconds), dict(counts), dict(statuses), dict(rejections), outcome,
               str(search.best_loss_.expression), (load_before, os.getloadavg()[0]))


def report(runs: list[Run], before: Run | None = None, smoke: bool = False) -> str:
    """The benchmark's text output (``before``: the same search with earlier code; a
    ``smoke`` run has tiny budgets and is not compared with the reference)."""
    lines = []
    for name in dict.fromkeys(r.config for r in runs):
        group = [r for r in runs if r.config == name]
        lines.append(f"\n== {name} ==")
        header = f"{'n_jobs':>6} {'wall s':>7} {'search s':>8} {'other s':>7} " + " ".join(
            f"{s:>15}" for s in STAGES) + "   load avg before/after"
        lines.append(header)
        for r in group:
            cells = " ".join(
                f"{r.stage_seconds.get(s, 0.0):9.2f} ({r.stage_counts.get(s, 0):3d})"
                for s in STAGES)
            lines.append(f"{r.n_jobs:>6} {r.wall:7.1f} {r.search:8.1f} "
                         f"{r.wall - r.search:7.1f} {cells}   {r.load[0]:.2f} / {r.load[1]:.2f}")
        first = group[0]
        if len(first.walls) > 1:
            lines.append(f"wall s of each of {len(first.walls)} repeats (the table shows the "
                         "median): " + "; ".join(
                             f"n_jobs={r.n_jobs} " + ", ".join(f"{w:.1f}" for w in r.walls)
                             for r in group)
                         + f"; same results in every repeat: "
                         f"{'yes' if all(r.repeats_identical for r in group) else 'NO'}")
        lines.append(
            f"candidates: {sum(first.statuses.values())} evaluated, "
            f"{first.statuses.get(OK, 0)} trained, {first.statuses.get(REJECTED, 0)} rejected "
            f"({', '.join(f'{k} {v}' for k, v in sorted(first.rejections.items()))}), "
            f"{first.statuses.get(CACHED, 0)} cached; chosen loss: {first.chosen}")
        lines.append("stage cells: seconds summed over candidates (worker seconds, which "
                     "overlap when n_jobs > 1) and, in brackets, candidates that ran the stage;"
                     " 'other' = wall - search: task set-up, pool start, final selection")
        raced = first.rejections.get("raced", 0)
        trained = first.statuses.get(OK, 0)
        if raced and trained:
            per_candidate = sum(first.stage_seconds.get(s, 0.0) for s in
                                ("local_search", "fitness", "refined_fitness")) / trained
            lines.append(
                f"racing (n_jobs={first.n_jobs}): {raced} candidates stopped after the short run,"
                f" saving ~{raced * per_candidate:.1f} s of local search and fitness "
                f"(at the trained candidates' mean), for {first.stage_seconds['race']:.1f} s "
                "of short runs")
        if len(group) > 1:
            same = all(r.outcome == first.outcome for r in group[1:])
            lines.append(f"identical results for every n_jobs: {'yes' if same else 'NO'}")
            for r in group[1:]:
                lines.append(f"n_jobs={r.n_jobs} vs n_jobs={first.n_jobs}: "
                             f"{first.wall / r.wall:.2f}x faster")
        if name.startswith(REFERENCE["config"]) and not smoke:
            ref = REFERENCE["seconds"]
            lines.append(
                f"reference: {ref:.0f} s ({REFERENCE['range']}) for {REFERENCE['candidates']}"
                f" candidates (local search 48 s, rejection filter 24 s, fitness 18 s); "
                f"{REFERENCE['source']}")
            old, source = BEFORE["seconds"], BEFORE["source"]
            if before is not None:
                old, source = before.wall, "earlier code, measured in this run at n_jobs=1"
                repeats = (f" (median of {', '.join(f'{w:.1f}' for w in before.walls)})"
                           if len(before.walls) > 1 else "")
                lines.append(
                    f"earlier code, n_jobs=1: {before.wall:.1f} s{repeats}; stages "
                    + ", ".join(f"{s} {before.stage_seconds.get(s, 0.0):.2f}" for s in STAGES)
                    + f"; chosen loss {before.chosen}"
                    f"; load avg {before.load[0]:.2f} / {before.load[1]:.2f}")
            lines.append(f"symloss before: {old:.1f} s ({source})")
            lines.append("targets: n_jobs=1 at least 2.5x faster than before, n_jobs=2 at least "
                         "1.7x faster than n_jobs=1; together at least 5x the reference")
            for r in group:
                lines.append(f"n_jobs={r.n_jobs}: {ref / r.wall:.1f}x the reference, "
                             f"{old / r.wall:.2f}x symloss before")
    cpu = {r.config: r for r in runs if r.n_jobs == 1}
    for r in runs:
        base = r.config.rsplit(" on ", 1)[0]
        if base != r.config and base in cpu:
            lines.append(f"\n{r.config}: {r.wall:.1f} s against {cpu[base].wall:.1f} s on the "
                         f"CPU (n_jobs=1): {cpu[base].wall / r.wall:.2f}x")
    return "\n".join(lines)


def quality(seeds: list[int], n_jobs: int, smoke: bool) -> dict[str, Any]:
    """Search on every seed, meta-test each chosen loss; test metrics by config and seed."""
    results: dict[str, Any] = {}
    for config in CONFIGS:
        rows = []
        for seed in seeds:
            search = _search(config, n_jobs, seed, smoke)
            settings = search.settings_
            test = meta_test(
                search.best_loss_, search.task_, steps=50 if smoke else settings.metatest_steps,
                seeds=settings.metatest_seeds_for(seed), sgd=sgd_settings(settings),
                n_jobs=n_jobs)
            rows.append({"seed": seed, "loss": str(search.best_loss_.expression),
                         "weights": search.best_loss_.weights,
                         "learned": test.learned.mean, "baseline": test.baseline.mean})
            print(f"{config.name} seed {seed}: learned {test.learned.mean:.4f}, baseline "
                  f"{test.baseline.mean:.4f}  {rows[-1]['loss']}", flush=True)
        results[config.name] = rows
    return results


def compare(after: dict[str, Any], before: dict[str, Any]) -> str:
    """Side-by-side meta-test metrics of two quality runs (lower is better)."""
    lines = [f"{'config':36} {'seed':>4} {'before':>9} {'after':>9}  same loss"]
    for name, rows in after.items():
        old = {r["seed"]: r for r in before.get(name, [])}
        for row in rows:
            prior = old.get(row["seed"])
            if prior is None:
                continue
            same = prior["loss"] == row["loss"] and len(prior["weights"]) == len(
                row["weights"]) and all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(
                    prior["weights"], row["weights"], strict=True))
            lines.append(f"{name:36} {row['seed']:>4} {prior['learned']:9.4f} "
                         f"{row['learned']:9.4f}  {'yes' if same else 'no'}")
        both = [(old[r["seed"]]["learned"], r["learned"]) for r in rows if r["seed"] in old]
        if both:
            lines.append(f"{name:36} mean {statistics.fmean(b for b, _ in both):9.4f} "
                         f"{statistics.fmean(a for _, a in both):9.4f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["diabetes", "digits", "mnist"],
                        help="time one configuration only (mnist: the GPU check's search)")
    parser.add_argument("--devices", nargs="+", default=["cpu"],
                        help="torch devices to time each search on, e.g. cuda cpu")
    parser.add_argument("--quality", action="store_true",
                        help="meta-test the chosen losses of three seeds instead of timing")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", help="write the quality results here")
    parser.add_argument("--compare", help="quality results of an earlier run to compare with")
    parser.add_argument("--before", help="checkout of an earlier symloss to time first")
    parser.add_argument("--repeat", type=int, default=3,
                        help="time every search this many times (interleaving the n_jobs "
                             "values) and report the median (default 3)")
    parser.add_argument("--set", nargs="+", default=[], metavar="NAME=VALUE",
                        help="settings for every search, VALUE in JSON, e.g. "
                             "local_search_guard=false (the search without the local "
                             "search's guard, to measure what the guard costs)")
    parser.add_argument("--runs-json", help=argparse.SUPPRESS)  # used by --before
    args = parser.parse_args()
    try:
        overrides = {name: json.loads(value)
                     for name, value in (item.split("=", 1) for item in args.set)}
    except ValueError as error:
        parser.error(f"--set takes NAME=VALUE with VALUE in JSON ({error})")

    if args.quality:
        results = quality(args.seeds, max(args.jobs), args.quick)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(results, handle, indent=1)
        if args.compare:
            with open(args.compare) as handle:
                print(compare(results, json.load(handle)))
        return

    configs = [c for c in (*CONFIGS, MNIST) if c.dataset == args.only] if args.only else CONFIGS
    configs = [dataclasses.replace(c, settings={**c.settings, **overrides}) for c in configs]
    print(f"{os.cpu_count()} CPU cores; torch on one intra-op thread per worker; seed "
          f"{args.seed}{'; SMOKE RUN (tiny budgets)' if args.quick else ''}", flush=True)
    for config in configs:  # untimed: first-call costs (SymPy caches, torch kernels)
        for device in args.devices:
            _search(config, 1, args.seed, True, device)
    before = _time_before(args) if args.before else None
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    runs = []
    for config in configs:
        for device in args.devices:
            # off the CPU a search evaluates in process whatever n_jobs says
            jobs = args.jobs if device == "cpu" else [1]
            trials: dict[int, list[Run]] = {n_jobs: [] for n_jobs in jobs}
            for _ in range(args.repeat):  # interleaved, so a change in load hits every n_jobs
                for n_jobs in jobs:
                    trials[n_jobs].append(timed(config, n_jobs, args.seed, args.quick, device))
                    print(f"  done: {config.name}, n_jobs={n_jobs}: "
                          f"{trials[n_jobs][-1].wall:.1f} s", flush=True)
            runs += [median_run(trials[n_jobs]) for n_jobs in jobs]
    if args.runs_json:
        with open(args.runs_json, "w") as handle:
            json.dump([dataclasses.asdict(r) for r in runs], handle)
        return
    print(report(runs, before, args.quick))


def _time_before(args: argparse.Namespace) -> Run:
    """The reference-budget search at n_jobs=1 with the symloss in ``args.before``."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, __file__, "--only", "diabetes", "--jobs", "1",
                   "--seed", str(args.seed), "--repeat", str(args.repeat),
                   "--runs-json", out.name]
        if args.quick:
            command.append("--quick")
        env = {**os.environ, "PYTHONPATH": os.path.abspath(args.before)}
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        with open(out.name) as handle:
            data = json.load(handle)[0]
    data["outcome"] = [tuple(o) for o in data["outcome"]]
    data["load"] = tuple(data["load"])
    run = Run(**data)
    print(f"  done: {run.config}, n_jobs=1, symloss from {args.before}: {run.wall:.1f} s",
          flush=True)
    return run


if __name__ == "__main__":
    main()
