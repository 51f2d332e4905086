"""Wall time of whole searches, by stage, with one and two worker processes.

Runs, one after the other in this process:

1. ``diabetes / linear`` at the EvoMAL reference's own per-candidate budget with a
   small GP (population 12, 6 generations; 250 meta-steps, 1 unrolled step, meta-lr
   1e-3; 500 fitness steps; 1,000 poor-training steps; SGD lr 0.01, momentum 0.9,
   Nesterov, weight decay 5e-4) -- the configuration the reference was timed on;
2. ``digits / mlp`` with the ``quick`` preset (final selection included);
3. ``noisy-digits / mlp``: what ``examples/noisy_labels.py`` runs in symloss (digits with
   40% of the training labels replaced, the ``quick`` search, then ``symloss.evaluate``
   at the preset's meta-test steps and seeds), its plain PyTorch loops aside.

Each search runs with ``n_jobs=1`` and ``n_jobs=2``, ``--repeat`` times (3 by default,
the ``n_jobs`` values interleaved), and the median run is reported; the script prints
the wall time, the seconds and candidate counts of every stage, the speed-up of two
workers over one, whether both gave identical results (they must), the chosen loss and
its rate, and the ratio to the reference's figures (measured on a 2-core machine of the
same kind, see ``REFERENCE``).

Timings on a shared machine are noisy: the 1-minute load average is printed before and
after each run; with 2 cores, a load above ~1 while a one-worker search runs (above ~2
for two workers) means other work competed for the cores and the numbers are slow.

Usage::

    python benchmarks/search_speed.py             # the benchmark (several minutes)
    python benchmarks/search_speed.py --quick     # a smoke run with tiny budgets
    python benchmarks/search_speed.py --before /path/to/old/checkout   # old code too
    python benchmarks/search_speed.py --decisions --before /path/to/old/checkout
    python benchmarks/search_speed.py --quality --json after.json [--compare before.json]
    python benchmarks/search_speed.py --only digits --set local_search_guard=false  # no guard

``--before DIR`` also times the same searches (same ``--jobs``, ``--repeat`` and ``--set``)
with the symloss found in ``DIR`` (a checkout of an earlier version, run in a subprocess),
each repeat of the earlier code just before the same repeat of this code, so that the
speed-up is measured on the same machine in the same run and a drift in the machine's
speed hits both alike;
each configuration's report then says how much faster this code is at each ``n_jobs``
and whether it chose the same loss at the same rate.

``--decisions`` instead searches on ``--seeds`` (0, 1, 2) for digits, noisy digits and
sine (``quick``) and prints each chosen loss, its rate and its meta-test (test metric of
the learned loss and the baseline, each at its best rate, the preset's meta-test steps
and seeds), beside the earlier code's with ``--before``: a speed change must not change
what the search decides, and where rounding alone changes a choice, the test metrics
show whether the new one is as good.

``--quality`` searches on three seeds per configuration and meta-tests each chosen loss
(test metric, mean over the preset's meta-test seeds), so that a speed change can be
checked not to change what the search finds.
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

import symloss
from symloss import SymbolicLossSearch
from symloss.datasets import load_dataset
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
    label_noise: float = 0.0
    """Fraction of training labels replaced (``load_dataset(..., label_noise=)``)."""
    metatest: bool = False
    """Also time the meta-test the README's examples run after the search
    (``symloss.evaluate`` at the preset's steps and seeds, its default rate grid)."""


CONFIGS = (
    Config("diabetes/linear (reference budget)", "diabetes", "linear", "paper", 12, 6,
           REFERENCE_SETTINGS),
    Config("digits/mlp (quick preset)", "digits", "mlp", "quick", 12, 6),
    # the search and meta-test of examples/noisy_labels.py (its plain PyTorch loops aside)
    Config("noisy-digits/mlp (noisy-labels example)", "digits", "mlp", "quick", 12, 6,
           label_noise=0.4, metatest=True),
)
# the tasks whose chosen losses --decisions compares between two versions
DECISIONS = (
    CONFIGS[1], CONFIGS[2],
    Config("sine/mlp (quick preset)", "sine", "mlp", "quick", 12, 6),
)
# Small enough for a GPU check on CPU and CUDA in a few minutes (benchmarks/gpu_check.sh).
MNIST = Config("mnist-5k/lenet5 (small quick search)", "mnist", "lenet5", "quick", 6, 2,
               dict(meta_steps=10, fitness_steps=100, poor_training_steps=50,
                    selection_top_k=0))
ONLY = {"diabetes": CONFIGS[0], "digits": CONFIGS[1], "noisy-digits": CONFIGS[2],
        "mnist": MNIST}


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
    chosen_lr: float | None = None
    """The final selection's rate for the chosen loss."""
    metatest: tuple[float, float] | None = None
    """Mean test metric of the learned loss and the baseline, where the config
    meta-tests."""
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
    data = (load_dataset(config.dataset, label_noise=config.label_noise, seed=seed)
            if config.label_noise else config.dataset)
    with tempfile.TemporaryDirectory() as run_dir:
        search = SymbolicLossSearch(
            preset=config.preset, population_size=config.population,
            generations=min(2, config.generations) if smoke else config.generations,
            n_jobs=n_jobs, device=device, random_state=seed, settings=settings,
            verbose=False, run_dir=run_dir,
        ).fit(data, config.model)
    if config.metatest:
        loss = search.best_loss_
        search.metatest_ = symloss.evaluate(
            loss, data, config.model, steps=50 if smoke else search.settings_.metatest_steps,
            seeds=search.settings_.metatest_seeds, lr=loss.learned_with.lr, n_jobs=n_jobs,
            device=device)
    return search


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
    test = getattr(search, "metatest_", None)
    return Run(name, n_jobs, wall, sum(h.seconds for h in search.history_),
               dict(seconds), dict(counts), dict(statuses), dict(rejections), outcome,
               str(search.best_loss_.expression), (load_before, os.getloadavg()[0]),
               search.best_loss_.learned_with.recommended_lr,
               None if test is None else (test.learned.mean, test.baseline.mean))


def report(runs: list[Run], earlier: list[Run] | None = None, smoke: bool = False) -> str:
    """The benchmark's text output (``earlier``: the same searches with earlier code; a
    ``smoke`` run has tiny budgets and is not compared with the reference)."""
    lines = []
    earlier = earlier or []
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
            f"{first.statuses.get(CACHED, 0)} cached; chosen loss: {first.chosen}"
            + (f" at lr {first.chosen_lr:g}" if first.chosen_lr else "")
            + (f"; meta-test: learned {first.metatest[0]:.4f}, baseline {first.metatest[1]:.4f}"
               if first.metatest else ""))
        lines.append("stage cells: seconds summed over candidates (worker seconds, which "
                     "overlap when n_jobs > 1) and, in brackets, candidates that ran the stage;"
                     " 'other' = wall - search: task set-up, pool start, search-rate choice,"
                     " final selection" + (" and meta-test" if first.metatest else ""))
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
        for r in group:
            old_run = next((e for e in earlier if e.config == name and e.n_jobs == r.n_jobs),
                           None)
            if old_run is None:
                continue
            same = (old_run.chosen, old_run.chosen_lr) == (r.chosen, r.chosen_lr)
            lines.append(
                f"earlier code, n_jobs={r.n_jobs}: {old_run.wall:.1f} s (repeats "
                f"{', '.join(f'{w:.1f}' for w in old_run.walls)}; search {old_run.search:.1f} s,"
                f" other {old_run.wall - old_run.search:.1f} s); this code "
                f"{old_run.wall / r.wall:.2f}x faster; chosen loss "
                + ("the same" if same else
                   f"DIFFERENT (earlier: {old_run.chosen} at lr {old_run.chosen_lr})")
                + (f"; earlier meta-test: learned {old_run.metatest[0]:.4f}, baseline "
                   f"{old_run.metatest[1]:.4f}" if old_run.metatest else ""))
        if name.startswith(REFERENCE["config"]) and not smoke:
            ref = REFERENCE["seconds"]
            lines.append(
                f"reference: {ref:.0f} s ({REFERENCE['range']}) for {REFERENCE['candidates']}"
                f" candidates (local search 48 s, rejection filter 24 s, fitness 18 s); "
                f"{REFERENCE['source']}")
            old, source = BEFORE["seconds"], BEFORE["source"]
            before = next((e for e in earlier if e.config == name and e.n_jobs == 1), None)
            if before is not None:
                old, source = before.wall, "earlier code, measured in this run at n_jobs=1"
                lines.append(
                    "earlier code, n_jobs=1, stages "
                    + ", ".join(f"{s} {before.stage_seconds.get(s, 0.0):.2f}" for s in STAGES)
                    + f"; load avg {before.load[0]:.2f} / {before.load[1]:.2f}")
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
    parser.add_argument("--only", nargs="+", choices=sorted(ONLY),
                        help="time these configurations only (mnist: the GPU check's search)")
    parser.add_argument("--devices", nargs="+", default=["cpu"],
                        help="torch devices to time each search on, e.g. cuda cpu")
    parser.add_argument("--quality", action="store_true",
                        help="meta-test the chosen losses of three seeds instead of timing")
    parser.add_argument("--decisions", action="store_true",
                        help="search on --seeds for digits, noisy digits and sine and print "
                             "each chosen loss and rate (with --before: beside the earlier "
                             "code's)")
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

    if args.decisions:
        print(decisions(args, overrides))
        return
    configs = [ONLY[name] for name in args.only] if args.only else CONFIGS
    configs = [dataclasses.replace(c, settings={**c.settings, **overrides}) for c in configs]
    print(f"{os.cpu_count()} CPU cores; torch on one intra-op thread per worker; seed "
          f"{args.seed}{'; SMOKE RUN (tiny budgets)' if args.quick else ''}", flush=True)
    for config in configs:  # untimed: first-call costs (SymPy caches, torch kernels)
        for device in args.devices:
            _search(config, 1, args.seed, True, device)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    runs: list[Run] = []
    earlier: list[Run] | None = [] if args.before else None
    for config in configs:
        for device in args.devices:
            # off the CPU a search evaluates in process whatever n_jobs says
            jobs = args.jobs if device == "cpu" else [1]
            trials: dict[int, list[Run]] = {n_jobs: [] for n_jobs in jobs}
            before: dict[int, list[Run]] = {n_jobs: [] for n_jobs in jobs}
            # interleaved, so that a change in load hits every n_jobs, and the earlier
            # code as much as this one
            for _ in range(args.repeat):
                if earlier is not None and device == "cpu":
                    for run in _earlier(args, config):
                        before[run.n_jobs].append(run)
                for n_jobs in jobs:
                    trials[n_jobs].append(timed(config, n_jobs, args.seed, args.quick, device))
                    print(f"  done: {config.name}, n_jobs={n_jobs}: "
                          f"{trials[n_jobs][-1].wall:.1f} s", flush=True)
            runs += [median_run(trials[n_jobs]) for n_jobs in jobs]
            if earlier is not None:
                earlier += [median_run(before[n_jobs]) for n_jobs in jobs if before[n_jobs]]
    if args.runs_json:
        with open(args.runs_json, "w") as handle:
            json.dump([dataclasses.asdict(r) for r in runs], handle)
        return
    print(report(runs, earlier, args.quick))


def _earlier(args: argparse.Namespace, config: Config) -> list[Run]:
    """One repeat of ``config``'s search at each ``n_jobs`` with the symloss in
    ``args.before`` (a subprocess running this script with that checkout first on the
    path)."""
    name = next(key for key, value in ONLY.items() if value.name == config.name)
    data = _with_earlier_code(args, ["--jobs", *map(str, args.jobs), "--seed", str(args.seed),
                                     "--repeat", "1", "--only", name])
    runs = []
    for row in data:
        row["outcome"] = [tuple(o) for o in row["outcome"]]
        row["load"] = tuple(row["load"])
        row["metatest"] = tuple(row["metatest"]) if row.get("metatest") else None
        runs.append(Run(**row))
        print(f"  done: {row['config']}, n_jobs={row['n_jobs']}, symloss from {args.before}: "
              f"{row['wall']:.1f} s", flush=True)
    return runs


def _with_earlier_code(args: argparse.Namespace, options: list[str]) -> Any:
    """What this script writes to ``--runs-json`` when run with ``options`` (and the
    ``--set`` and ``--quick`` of ``args``) on the symloss in ``args.before``."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, __file__, *options, "--runs-json", out.name]
        command += ["--set", *args.set] if args.set else []
        command += ["--quick"] if args.quick else []
        env = {**os.environ, "PYTHONPATH": os.path.abspath(args.before)}
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        with open(out.name) as handle:
            return json.load(handle)


def decisions(args: argparse.Namespace, overrides: dict[str, Any]) -> str:
    """The chosen loss and rate of a search on each of ``args.seeds`` for the
    :data:`DECISIONS` tasks, beside the earlier code's with ``args.before``."""
    n_jobs = max(args.jobs)
    rows: dict[str, Any] = {}
    for config in DECISIONS:
        config = dataclasses.replace(config, settings={**config.settings, **overrides},
                                     metatest=True)
        for seed in args.seeds:
            search = _search(config, n_jobs, seed, args.quick)
            loss, test = search.best_loss_, search.metatest_
            rows[f"{config.name} seed {seed}"] = [str(loss.expression), list(loss.weights),
                                                  loss.learned_with.recommended_lr,
                                                  test.learned.mean, test.baseline.mean]
            print(f"  done: {config.name} seed {seed}: {loss.expression} at lr "
                  f"{loss.learned_with.recommended_lr}, test {test.learned.mean:.4f} "
                  f"(baseline {test.baseline.mean:.4f})", flush=True)
    if args.runs_json:
        with open(args.runs_json, "w") as handle:
            json.dump(rows, handle)
        return "written to " + args.runs_json
    earlier: dict[str, Any] = {}
    if args.before:
        earlier = _with_earlier_code(args, ["--decisions", "--jobs", str(n_jobs),
                                            "--seeds", *map(str, args.seeds)])
    lines = [f"{'search':48} {'chosen loss (lr)':36} {'test':>7} {'earlier code':36} "
             f"{'test':>7} {'baseline':>8} same"]
    for key, (loss, weights, lr, test, baseline) in rows.items():
        old = earlier.get(key)
        old_text = "-" if old is None else f"{old[0]} ({old[2]:g})"
        old_test = "-" if old is None else f"{old[3]:.4f}"
        same = "-" if old is None else "yes" if (old[0], old[2]) == (loss, lr) and all(
            math.isclose(a, b, rel_tol=1e-6) for a, b in zip(old[1], weights, strict=False)
        ) and len(old[1]) == len(weights) else "NO"
        lines.append(f"{key:48} {f'{loss} ({lr:g})':36} {test:7.4f} {old_text:36} "
                     f"{old_test:>7} {baseline:8.4f} {same}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
