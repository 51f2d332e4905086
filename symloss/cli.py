"""The ``symloss`` command: search, show, report, evaluate, export, list."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from symloss.config import PRESETS, settings_from
from symloss.datasets import DATASETS, load_dataset
from symloss.engines import ENGINES
from symloss.estimator import Equation, SymbolicLossSearch, equations_table
from symloss.executors import check_n_jobs
from symloss.lossfile import load
from symloss.metatest import MetaTestResult, check_seeds, meta_test
from symloss.metrics import METRICS
from symloss.models import MODELS
from symloss.network import TARGETS, LearnedLoss
from symloss.records import GenerationStats
from symloss.runs import (
    BEST_LOSS_FILE,
    CHECKPOINT_FILE,
    HALL_OF_FAME_FILE,
    TASK_FILE,
    RunDirectory,
    new_run_path,
)
from symloss.selection import ADAM_CHECKPOINTS, selection_rates
from symloss.serialization import positive_number, read_json
from symloss.step_size import rate_ladder
from symloss.task import check_device, make_task, resolve_data
from symloss.training import SGDSettings, sgd_settings

MAX_DIGITS = 17
"""Most significant digits ``export --digits`` takes: a float64 has no more."""
METATEST_CURVE_POINTS = 20
"""Points of the meta-test learning curves recorded for reports (each one evaluates the
test split once)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="symloss", description="Meta-learn symbolic loss functions (EvoMAL)."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    search = commands.add_parser("search", help="discover a loss for a built-in task")
    search.add_argument("task", help=f"built-in dataset: {', '.join(DATASETS)}")
    search.add_argument("--model", default="mlp", help=f"built-in model: {', '.join(MODELS)}")
    search.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    search.add_argument("--seed", type=int, default=0)
    search.add_argument("--run-dir", help="run directory (an existing one is resumed)")
    search.add_argument("--jobs", type=int, default=-1,
                        help="worker processes evaluating candidates and training the "
                             "meta-test's runs (default -1: all cores; results do not depend "
                             "on it)")
    search.add_argument("--population", type=int, help="override the population size")
    search.add_argument("--generations", type=int, help="override the number of generations")
    search.add_argument("--no-local-search", action="store_true", help="GP-LFL ablation")
    search.add_argument("--engine", default="deap", choices=ENGINES)
    search.add_argument("--device", default="cpu")
    search.add_argument("--data-path", help="folder of local data files (mnist, cifar10, ...)")
    search.add_argument("--label-noise", type=float, default=0.0, metavar="FRACTION",
                        help="classification: replace this fraction of the training labels "
                             "by another class (validation and test stay clean)")
    search.add_argument("--metatest-steps", type=int, help="SGD steps of the meta-test")
    search.add_argument("--metric", metavar="NAME",
                        help="what to optimise and report, lower is better: "
                             f"{', '.join(METRICS)} (default: error_rate / mse)")
    search.add_argument("--baseline", metavar="LOSS",
                        help="the loss you train with today, as expression text or a saved "
                             "loss JSON (default: cross-entropy / squared error)")
    search.add_argument("--output", help="also save the learned loss JSON here")
    search.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override any setting, e.g. --set meta_steps=100")

    show = commands.add_parser("show", help="print the equations table of a run")
    show.add_argument("run_dir")
    show.add_argument("--plot", metavar="DIR",
                      help="also draw the run's figures (PNG) into DIR (needs matplotlib)")

    report = commands.add_parser("report", help="write a Markdown report of a run")
    report.add_argument("run_dir")
    report.add_argument("--out", metavar="DIR",
                        help="where report.md and its figures go (default: the run directory)")

    evaluate = commands.add_parser("evaluate", help="meta-test a saved loss on a task")
    evaluate.add_argument("loss", help="loss JSON file")
    evaluate.add_argument("task", help=f"built-in dataset: {', '.join(DATASETS)}")
    evaluate.add_argument("--model", default="mlp")
    evaluate.add_argument("--steps", type=int, default=2000)
    evaluate.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    evaluate.add_argument("--lr", type=float,
                          help="centre of the learning-rate grid (default: the rate the loss "
                               "was searched at, else 0.01)")
    rates = evaluate.add_mutually_exclusive_group()
    rates.add_argument("--lr-grid", type=float, nargs="+", metavar="LR",
                       help="train each loss at these learning rates and report each at its "
                            "best on validation (default: --lr and two rungs either side on "
                            "the 1-3-10 ladder)")
    rates.add_argument("--single-lr", action="store_true",
                       help="train both losses at --lr only (no grid)")
    evaluate.add_argument("--metric", metavar="NAME",
                          help=f"what to report: {', '.join(METRICS)} (default: the metric "
                               "the loss was searched for, else error_rate / mse)")
    evaluate.add_argument("--baseline", metavar="LOSS",
                          help="the loss to compare with, as expression text or a saved loss "
                               "JSON (default: the baseline the loss was searched against)")
    evaluate.add_argument("--data-path")
    evaluate.add_argument("--label-noise", type=float, default=0.0, metavar="FRACTION",
                          help="as for search: noisy training labels, clean validation/test")
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--jobs", type=int, default=-1,
                          help="worker processes training the runs (default -1: all cores; "
                               "results do not depend on it)")

    export = commands.add_parser(
        "export", help="write a saved loss as standalone code (torch, numpy, jax), as an "
        "XGBoost or LightGBM objective (numpy only), or as math")
    export.add_argument("loss", help="loss JSON file (e.g. RUN_DIR/best_loss.json)")
    export.add_argument("--to", required=True, choices=(*TARGETS, "latex", "sympy"))
    export.add_argument("-o", "--output", help="write to this file instead of printing")
    export.add_argument("--digits", type=int, default=3,
                        help="decimals of the weights in latex and sympy (code keeps them all)")

    commands.add_parser("list", help="list built-in datasets, models and presets")
    return parser


def _setting_overrides(pairs: Sequence[str]) -> dict[str, object]:
    overrides: dict[str, object] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise ValueError(f"--set expects NAME=VALUE, got {pair!r}")
        try:
            overrides[name.strip()] = json.loads(text)
        except json.JSONDecodeError:
            overrides[name.strip()] = text
    return overrides


def _check_output(path: str | None) -> None:
    """Refuse an ``--output`` that cannot be written, before the search rather than after."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"--output {path} is a directory; give a file name such as "
                         f"{target / 'loss.json'}")
    parent = next((p for p in target.parents if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ValueError(f"--output {path} cannot be written: {parent} is not a writable "
                         "directory")


def _check_seed(seed: int, flag: str) -> None:
    if not 0 <= seed < 2**32:
        raise ValueError(f"{flag} must be an integer in [0, 2**32), got {seed}")


def _search(args: argparse.Namespace) -> None:
    settings = _setting_overrides(args.set)
    if args.metatest_steps is not None:
        settings["metatest_steps"] = args.metatest_steps
    parameters = {"population_size": args.population, "generations": args.generations,
                  "local_search": False if args.no_local_search else None}
    # refuse bad settings before loading data or searching
    settings_from(args.preset, settings, **parameters)
    _check_output(args.output)
    _check_seed(args.seed, "--seed")
    check_n_jobs(args.jobs)
    check_device(args.device)
    data = load_dataset(args.task, path=args.data_path, seed=args.seed,
                        label_noise=args.label_noise)
    run_dir = args.run_dir or str(new_run_path(args.task))
    search = SymbolicLossSearch(
        preset=args.preset, **parameters, engine=args.engine, n_jobs=args.jobs,
        device=args.device, random_state=args.seed, run_dir=run_dir, settings=settings,
        metric=args.metric, baseline=args.baseline,
    )
    scored = f"metric {args.metric!r}" if args.metric else "the default metric"
    print(f"symloss: searching a loss for {args.task} ({data.description}) with model "
          f"{args.model!r}, preset {args.preset!r}, {scored}; records in {run_dir}")
    checkpoint = RunDirectory(run_dir).load_checkpoint() if Path(run_dir).is_dir() else None
    if checkpoint is not None:
        print(f"symloss: resuming the run in {run_dir} after generation "
              f"{checkpoint['generation']}")
    started = time.perf_counter()
    # held until the last file is written: the meta-test's and --output's come after fit
    with RunDirectory(run_dir).hold():
        try:
            search.fit(data, args.model)
        except KeyboardInterrupt:
            print(f"\ninterrupted; resume with the same command and --run-dir {run_dir}")
            raise SystemExit(130) from None
        try:
            _report(args, search, started)
        except KeyboardInterrupt:
            print(f"\ninterrupted after the search; the search is complete and the loss is "
                  f"saved in {search.run_dir_ / BEST_LOSS_FILE}", file=sys.stderr)
            raise SystemExit(130) from None


def _report(args: argparse.Namespace, search: SymbolicLossSearch, started: float) -> None:
    """Print a finished search's results, meta-test its loss, save the requested copy."""
    s = search.settings_
    print()
    if search.lr_choice_ is not None:
        tried = ", ".join(f"{lr:g}: {m:.4g}" for lr, m in search.lr_choice_.metrics.items())
        print(f"search learning rate {s.lr:g}, the baseline's best on the grid "
              f"(validation {search.task_.kind_metric} after {s.fitness_steps} steps: {tried})\n")
    print(equations_table(search.equations_, search.task_.kind_metric))
    loss = search.best_loss_
    print(f"\nchosen loss ({search.n_evaluations_} evaluations, "
          f"{time.perf_counter() - started:.0f} s):")
    print(f"  {loss.expression}")
    print(f"  LaTeX: {search.latex()}")
    print(f"  normalised to the baseline's gradient scale (x{loss.scale:.4g}); "
          + (f"best SGD rate in the final selection {loss.learned_with.recommended_lr:g}"
             if loss.learned_with.recommended_lr is not None
             else f"learned at SGD rate {s.lr:g}"))
    if search.selection_:
        rates = ", ".join(f"{lr:g}" for lr in selection_rates(s))
        print(f"\nfinal selection: validation {search.task_.kind_metric} after {s.selection_steps}"
              f" steps, mean of {s.selection_seeds} seeds, each loss at its best SGD rate of "
              f"{rates}" + (f"; and with Adam at {s.selection_adam_lr:g}, ranked by the "
                            "average of both (x: worse than the plain baseline with SGD, "
                            "then not run with Adam, or at one of "
                            f"{ADAM_CHECKPOINTS} points of the Adam runs, which then "
                            "stopped there; cannot win)"
                            if s.selection_adam_lr > 0 else ""))
        kind = search.task_.kind
        for finalist in search.selection_:
            e = finalist.evaluation
            form = LearnedLoss(e.expression, kind, e.weights or None).sympy()
            tuned = "learned weights" if e.weights else "plain"
            reached = len(finalist.adam_curve)
            stopped = f" (stopped at {reached}/{ADAM_CHECKPOINTS})" if reached < ADAM_CHECKPOINTS \
                else ""
            adam = (f"  Adam {finalist.adam_mean:.4f}{' ' if finalist.eligible else 'x'}{stopped}"
                    if finalist.adam_metrics else
                    "  Adam  not run x" if s.selection_adam_lr > 0 else "")
            print(f"  {finalist.mean:10.4f}  lr {finalist.lr:<7g}{adam}  {form}   ({tuned})")
    seeds = s.metatest_seeds_for(args.seed)
    grid = rate_ladder(s.lr, 1)
    print(f"\nmeta-test: fresh models, seeds {list(seeds)} (the search used seed {args.seed}); "
          f"each loss at its best SGD rate of {', '.join(f'{lr:g}' for lr in grid)} on "
          "validation")
    result = meta_test(loss, search.task_, steps=s.metatest_steps, seeds=seeds,
                       sgd=sgd_settings(s), lr_grid=grid, curve_points=METATEST_CURVE_POINTS,
                       n_jobs=search.n_jobs)
    print(result.table())
    print(_verdict(result))
    RunDirectory(search.run_dir_).save_metatest(result.to_dict())
    print(f"\nsaved the loss to {search.run_dir_ / BEST_LOSS_FILE}")
    if args.output:
        print(f"and to {search.best_loss_.save(args.output)}")


def _verdict(result: MetaTestResult) -> str:
    """One line: the learned loss's mean test metric against the tuned baseline's."""
    base = result.baseline
    if base is None:
        return ""
    learned = result.learned.mean
    ratio = learned / base.mean if base.mean > 0 else float("nan")
    better = "better than" if learned < base.mean else (
        "the same as" if learned == base.mean else "worse than")
    return (f"learned loss: test {result.metric} {learned:.4f}, {better} the baseline "
            f"({base.name}) at its own best rate: {base.mean:.4f} ({ratio:.2f}x)")


def _show(args: argparse.Namespace) -> None:
    path = Path(args.run_dir) / HALL_OF_FAME_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found; is {args.run_dir} the run directory of a finished search?"
        )
    try:
        rows = [Equation.from_dict(r) for r in read_json(path, "symloss equations table")]
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} is not a valid symloss equations table ({error!r})") from None
    task = RunDirectory(args.run_dir).load(TASK_FILE) or {}
    print(equations_table(rows, task.get("metric")))
    chosen = next((r for r in rows if r.chosen), None)
    if chosen is not None:
        print(f"\nchosen: {chosen.expression}\nLaTeX: {chosen.latex}")
    state = RunDirectory(args.run_dir).load_checkpoint()
    if state is not None:
        try:
            history = [GenerationStats.from_dict(h) for h in state.get("history", [])]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{Path(args.run_dir) / CHECKPOINT_FILE} holds an invalid history ({error!r})"
            ) from None
        print("\ngeneration   best     median   evaluated  cached  rejected   seconds")
        for h in history:
            rejected = sum(h.rejected.values())
            print(f"{h.generation:10d} {h.best_fitness:8.4f} {h.median_fitness:9.4g} "
                  f"{h.evaluated:10d} {h.cached:7d} {rejected:9d} {h.seconds:9.1f}")
    if args.plot:
        from symloss.plots import save_run_figures

        paths = save_run_figures(args.run_dir, args.plot)
        print("\nfigures: " + ", ".join(str(p) for p in paths.values()))


def _write_report(args: argparse.Namespace) -> None:
    from symloss.report import write_report

    print(f"wrote {write_report(args.run_dir, args.out)}")


def _evaluate(args: argparse.Namespace) -> None:
    seeds = check_seeds(args.seeds)
    check_n_jobs(args.jobs)
    check_device(args.device)
    if args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    loss = load(args.loss)
    learned_with = getattr(loss, "learned_with", None)
    if args.lr is not None:
        lr = positive_number(args.lr, "--lr")
    else:
        lr = positive_number(learned_with.lr if learned_with is not None else 0.01,
                             f"the learning rate the loss in {args.loss} was searched at "
                             "(give --lr)")
    grid = () if args.single_lr else tuple(
        positive_number(r, "every --lr-grid rate") for r in args.lr_grid or rate_ladder(lr, 2))
    data = load_dataset(args.task, path=args.data_path, seed=0, label_noise=args.label_noise)
    parts, kind = resolve_data(data)
    metric = args.metric or (learned_with.metric if learned_with is not None
                             and learned_with.metric_restorable else None)
    baseline = args.baseline or (learned_with.baseline if learned_with is not None else None)
    task = make_task(parts, args.model, task=kind, device=args.device, metric=metric,
                     baseline=baseline)
    print(f"meta-testing {getattr(loss, 'expression', type(loss).__name__)} on {args.task} "
          f"with model {args.model!r}, SGD "
          + (f"at lr {lr:g}" if not grid else
             f"at each loss's best rate of {', '.join(f'{r:g}' for r in grid)} on validation"))
    result = meta_test(loss, task, steps=args.steps, seeds=seeds,
                       sgd=SGDSettings(lr=lr), lr_grid=grid, n_jobs=args.jobs)
    print(result.table())
    print(_verdict(result))


def _export(args: argparse.Namespace) -> None:
    if not 1 <= args.digits <= MAX_DIGITS:
        raise ValueError(f"--digits must be between 1 and {MAX_DIGITS} (digits of the weights), "
                         f"got {args.digits}")
    loss = load(args.loss)
    if not isinstance(loss, LearnedLoss):
        raise ValueError(
            f"{args.loss} holds a {type(loss).__name__}, not a symbolic loss; only symbolic "
            "losses (symloss search, LearnedLoss) can be exported"
        )
    if args.to == "latex":
        text = loss.latex(args.digits) + "\n"
    elif args.to == "sympy":
        text = str(loss.sympy(args.digits)) + "\n"
    else:
        text = loss.to_source(args.to)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
        print(f"wrote the {args.to} form of {loss.expression} to {args.output}")
    else:
        print(text, end="")


def _list() -> None:
    print("datasets:")
    for name, text in DATASETS.items():
        print(f"  {name:14s} {text}")
    print("models:")
    for name, text in MODELS.items():
        print(f"  {name:14s} {text}")
    print("presets:", ", ".join(sorted(PRESETS)))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``symloss`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    try:
        if args.command == "search":
            _search(args)
        elif args.command == "show":
            _show(args)
        elif args.command == "report":
            _write_report(args)
        elif args.command == "evaluate":
            _evaluate(args)
        elif args.command == "export":
            _export(args)
        else:
            _list()
    except (ValueError, OSError, ImportError, RuntimeError) as error:
        print(f"symloss: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nsymloss: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("symloss: error: out of memory; use a smaller input, batch or model",
              file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 -- the command reports every failure in one line
        print(f"symloss: error: {type(error).__name__}: {_one_line(error)}", file=sys.stderr)
        return 2
    return 0


def _one_line(error: BaseException) -> str:
    """The error's message on one line (a message may quote text with line breaks)."""
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
