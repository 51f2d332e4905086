"""SymbolicLossSearch: the scikit-learn-style estimator that discovers a loss."""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import numbers
import os
import warnings
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np
import sympy
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError as SklearnNotFittedError

from symloss.config import Settings, settings_from
from symloss.engines import Engine, SearchContext, get_engine
from symloss.evaluator import Evaluator
from symloss.executors import check_n_jobs
from symloss.expression import Expression
from symloss.filters import FAILED
from symloss.kinds import CLASSIFICATION
from symloss.library import known_losses
from symloss.metrics import Metric
from symloss.network import LearnedLoss, LearnedWith
from symloss.prior import task_prior
from symloss.records import OK, Evaluation, GenerationStats
from symloss.runs import EVALUATIONS_FILE, RUN_FILE, RunDirectory, new_run_path
from symloss.scale import normalising_factor, reference_batch
from symloss.scoring import FAILED_TRAINING
from symloss.selection import Selection, select
from symloss.serialization import MAX_ABS_VALUE, read_json
from symloss.step_size import RateChoice, tune_search_lr
from symloss.symbolic import latex as symbolic_latex
from symloss.tables import Equation, equations_frame, equations_table, latex_table
from symloss.task import (
    BaselineSpec,
    MetricSpec,
    ModelSpec,
    Task,
    make_task,
    resolve_data,
    task_summary,
)

logger = logging.getLogger("symloss")


class NotFittedError(SklearnNotFittedError):
    """Raised when a fitted attribute is used before ``fit`` (scikit-learn's
    ``NotFittedError``, so ``except sklearn.exceptions.NotFittedError`` catches it)."""


def _equations(
    evaluations: Sequence[Evaluation], kind: str, chosen: Evaluation | None = None
) -> list[Equation]:
    """Best trained loss per expression size; ``chosen`` (default: the best overall)
    takes the row of its size and is marked."""
    scored = [e for e in evaluations if e.status == OK and math.isfinite(e.fitness)]
    if not scored:
        return []

    def rank(e: Evaluation) -> tuple[float, int]:
        return (e.fitness, Expression.parse(e.expression).size)

    chosen = chosen or min(scored, key=rank)
    best: dict[int, Evaluation] = {}
    for e in sorted(scored, key=rank):
        best.setdefault(Expression.parse(e.expression).size, e)
    best[Expression.parse(chosen.expression).size] = chosen
    rows = []
    for size in sorted(best):
        e = best[size]
        form = LearnedLoss(e.expression, kind, e.weights or None).sympy()
        tree = Expression.parse(e.expression)
        latex = symbolic_latex(form, lambda tree=tree: tree.latex(simplify=False))
        rows.append(Equation(size, e.fitness, e.expression, e.weights, latex, e is chosen, form,
                             e.refined, e.unrefined_fitness, e.refined_fitness))
    return rows


def _data_fingerprint(task: Task) -> str:
    digest = hashlib.sha256()
    for split in (task.train, task.val, task.test):
        for tensor in (split.x, split.y):
            array = tensor.detach().cpu().numpy()
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


class SymbolicLossSearch(BaseEstimator):
    """Meta-learn a symbolic loss function for a model and dataset (EvoMAL).

    Parameters
    ----------
    preset : {"quick", "paper", "tiny"}
        Base settings (see :mod:`symloss.config`). ``"paper"`` reproduces the EvoMAL
        reference budgets; ``"quick"`` finishes in minutes on a CPU; ``"tiny"`` in
        seconds (it proves that a pipeline runs and finds nothing).
    population_size, generations : int, optional
        Override the preset's genetic-programming budget (``None``: the preset's, or
        ``settings``').
    local_search : bool, optional
        Refine each candidate's edge weights by unrolled differentiation (EvoMAL);
        ``False`` gives GP-LFL, the ablation. ``None``: the preset's (on), or
        ``settings``'. These three are settings too: given both here and in
        ``settings``, they must agree.
    seed_expressions : str, Expression or a sequence of them, optional
        Losses to include in the initial population (after the baseline).
    engine : {"deap", "pysr", "operon"}
        The outer loop. ``"pysr"`` needs PySR and Julia; ``"operon"`` needs pyoperon
        (NSGA-II on fitness and size, see :mod:`symloss.engines.operon`).
    n_jobs : int
        Worker processes evaluating candidates (``-1``: all cores).
    executor : {"auto", "process", "ray"}
        Where candidates are evaluated; ``"ray"`` uses the cluster ``ray.init`` joined.
    device : str
        Torch device of every training run.
    random_state : int, optional
        Seed of the data split, the search and every training run (0 when None).
    run_dir : path-like, optional
        Where records go; an existing run directory of the same search is resumed
        (and its final selection rerun, with this call's selection settings). Defaults to
        ``runs/<timestamp>``.
    verbose : bool
        Show a progress bar.
    task : {"classification", "regression"}, optional
        Override the task-kind inference.
    settings : dict, optional
        Further :class:`~symloss.config.Settings` overrides by name.
    callback : callable, optional
        Called with each generation's :class:`~symloss.records.GenerationStats`.
    metric : str or callable, optional
        What the search optimises and every table reports, lower is better: a name of
        :data:`symloss.metrics.METRICS` (``"mae"``, ``"pinball:0.9"``,
        ``"balanced_error_rate"``, ``"f1_macro"``, ...) or a callable
        ``metric(y_true, y_pred) -> float`` on numpy arrays of predicted labels
        (classification) or predictions (regression). Default: error rate / MSE. A
        callable is stored by its qualified name only: resuming its run needs it again.
    baseline : str, LearnedLoss or path, optional
        The loss you train with today (expression text, a loss, or a saved loss's path):
        losses are normalised to its gradient scale, seeded first, and the final
        selection and meta-test compare against it. Default: cross-entropy / squared
        error.

    Attributes
    ----------
    best_loss_ : LearnedLoss
        The chosen loss, normalised: its gradient with respect to the model outputs at
        a fresh model on the training data is as large as the baseline's, so it works
        at the learning rate a loop already uses for the baseline. Its
        ``learned_with`` holds the search's optimiser settings, the rate the final
        selection found best for it (``recommended_lr``) and the scale at which the
        search scored it (``best_loss_.as_searched()`` gives that loss back).
    equations_ : pandas.DataFrame
        The best loss at each expression size by search fitness, one row per size with
        columns ``size, fitness, expression, weights, latex, sympy, chosen, refined,
        unrefined_fitness, refined_fitness`` (``sympy`` holds SymPy expressions, learned
        weights folded in; the last three say whether the local search's refinement was
        kept and give both fitnesses, see :class:`~symloss.records.Evaluation`); the
        chosen one (the winner of the final selection, see
        :class:`~symloss.config.Settings`) takes the row of its size and has
        ``chosen=True``.
    history_ : list of GenerationStats
        Per generation: best/median fitness, counts, seconds.
    evaluations_ : list of Evaluation
        Every evaluation of the search, in order.
    selection_ : list of Selection
        The finalists of the final selection, best first (empty when
        ``selection_top_k`` is 0): each with its validation metrics of the longer runs.
    n_evaluations_ : int
        Number of candidates evaluated (cached and rejected included).
    run_dir_ : Path
        The run directory.
    settings_ : Settings
        The settings used (``lr`` as tuned before the search, see ``lr_choice_``).
    lr_choice_ : RateChoice or None
        The baseline's validation metric at every rate of ``settings.lr_grid`` and the
        rate the search used; ``None`` when the rate was fixed.
    task_ : Task
        The task the search ran on.

    Examples
    --------
    >>> import tempfile
    >>> import symloss
    >>> search = symloss.SymbolicLossSearch(preset="tiny", random_state=0, verbose=False,
    ...                                     run_dir=tempfile.mkdtemp())
    >>> search = search.fit("sine", "mlp")
    >>> search.best_loss_.task
    'regression'

    See Also
    --------
    symloss.fit : build and fit in one call.
    symloss.evaluate : meta-test a learned loss against the baseline.
    """

    def __init__(
        self,
        preset: str = "quick",
        population_size: int | None = None,
        generations: int | None = None,
        local_search: bool | None = None,
        seed_expressions: Sequence[str | Expression] | None = None,
        engine: str = "deap",
        n_jobs: int = 1,
        executor: str = "auto",
        device: str = "cpu",
        random_state: int | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        verbose: bool = True,
        task: str | None = None,
        settings: dict[str, Any] | None = None,
        callback: Callable[[GenerationStats], None] | None = None,
        metric: MetricSpec = None,
        baseline: BaselineSpec = None,
    ) -> None:
        self.preset = preset
        self.population_size = population_size
        self.generations = generations
        self.local_search = local_search
        self.seed_expressions = seed_expressions
        self.engine = engine
        self.n_jobs = n_jobs
        self.executor = executor
        self.device = device
        self.random_state = random_state
        self.run_dir = run_dir
        self.verbose = verbose
        self.task = task
        self.settings = settings
        self.callback = callback
        self.metric = metric
        self.baseline = baseline

    # -- scikit-learn conventions (get_params, set_params, clone via BaseEstimator) ------
    _FITTED = (
        "best_loss_", "equations_", "history_", "evaluations_", "n_evaluations_", "run_dir_",
        "settings_", "task_", "selection_", "lr_choice_",
    )

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: a fitted attribute before fit.
        if name in SymbolicLossSearch._FITTED:
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet ({name} is set by "
                "fit); call fit(dataset, model) first"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "best_loss_")

    def _check_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call fit(dataset, "
                "model) first"
            )

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.get_params().items() if v != _DEFAULTS.get(k)}
        args = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        head = f"{type(self).__name__}({args})"
        if not self.__sklearn_is_fitted__():
            return head
        return f"{head}\n{equations_table(self.equations_, self.task_.kind_metric)}"

    # -- fitting -------------------------------------------------------------------------
    def _settings(self) -> Settings:
        return settings_from(self.preset, self.settings, population_size=self.population_size,
                             generations=self.generations, local_search=self.local_search)

    def fit(self, dataset: Any, model: ModelSpec) -> SymbolicLossSearch:
        """Search for a loss on ``dataset`` with ``model``.

        Parameters
        ----------
        dataset : str, (X, y), Dataset or dict
            A built-in dataset name (``"sine"``, ``"diabetes"``, ``"digits"``, ...) or
            anything :func:`symloss.task.make_task` accepts.
        model : str, nn.Module or callable
            A built-in model name (``"linear"``, ``"mlp"``, ...; sized to the data), a
            module instance, or a zero-argument callable returning a fresh module.

        Returns
        -------
        self
        """
        settings = self._settings()
        seed = _seed(self.random_state)
        check_n_jobs(self.n_jobs)
        engine = get_engine(self.engine)
        engine.check_available()
        data, kind = resolve_data(dataset, seed=seed)
        task = make_task(data, model, task=self.task or kind, seed=seed, device=self.device,
                         metric=self.metric, baseline=self.baseline)
        seeds = self._seed_expressions(task, settings)

        run = RunDirectory(self.run_dir or new_run_path())
        _check_resumed_metric(run, task.scoring)
        resumed = run.open({
            "format": "symloss.run", "version": 1, "engine": self.engine, "seed": seed,
            "kind": task.kind, "data": _data_fingerprint(task),
            "settings": settings.to_dict(), "seeds": [str(e) for e in seeds],
            **task.scoring.describe(), "baseline": str(task.baseline),
            "baseline_weights": list(task.baseline_weights),
        })
        try:
            # after the description: the run is what was asked for, on this data
            settings = _capped_batches(settings, len(task.train), set(self.settings or ()))
            run.save_task(task_summary(task, dataset, model))
            executor = _executor_for(task, self.executor, self.n_jobs)
            lr_choice = _search_rate(task, settings, seed, run, executor)
            if lr_choice is not None:
                settings = settings.replace(lr=lr_choice.lr)
            history, all_evaluations = _search(
                engine, task, settings, seed, seeds, run, resumed, executor, self.verbose,
                self.callback,
            )

            selection = []
            if settings.selection_top_k > 0:
                selection = select(task, settings, all_evaluations, seed, executor,
                                   run.training_cache())
                _save_or_warn(run, "the final selection",
                              lambda: run.save_selection([r.to_dict() for r in selection]))
            else:  # a rerun without the final selection: an earlier one no longer applies
                run.discard_selection()
            equations = _equations(all_evaluations, task.kind,
                                   selection[0].evaluation if selection else None)
            if not equations:
                raise RuntimeError(_nothing_trained(all_evaluations, run))
            chosen = next(row for row in equations if row.chosen)
            metadata: dict[str, Any] = {
                "fitness": chosen.fitness, "run_dir": str(run.path), "engine": self.engine,
                "seed": seed, "local_search": settings.local_search,
                "meta_objective": task.meta_objective_name,
            }
            if selection:
                metadata["selection_metric"] = selection[0].mean
            self.best_loss_ = _normalised_loss(
                LearnedLoss(chosen.expression, task.kind, chosen.weights or None,
                            metadata=metadata, class_prior=task_prior(task)),
                task, settings, seed, selection[0] if selection else None,
            )
            _save_or_warn(run, "the chosen loss", lambda: self.best_loss_.save(run.best_loss_path))
            _save_or_warn(run, "the equations table",
                          lambda: run.save_hall_of_fame([row.to_dict() for row in equations]))
            self.equations_ = equations_frame(equations)
            self.history_ = history
            self.evaluations_ = all_evaluations
            self.n_evaluations_ = len(all_evaluations)
            self.selection_ = selection
            self.run_dir_ = run.path
            self.settings_ = settings
            self.lr_choice_ = lr_choice
            self.task_ = task
            return self
        finally:
            run.close()

    def _seed_expressions(self, task: Task, settings: Settings) -> list[Expression]:
        """In order of priority: the baseline (the user's, else the library's), the
        user's seeds, the known losses of the metric (the pinball loss of ``pinball:Q``),
        then the library of known losses (with the usual baseline after a user's)."""
        if settings.class_prior and task.kind != CLASSIFICATION:
            raise ValueError(
                "class_prior=True offers the class prior p, which only classification tasks "
                f"have; this task is {task.kind}: leave class_prior off"
            )
        given = self.seed_expressions or ()
        if isinstance(given, str | Expression):  # one expression, not its characters
            given = [given]
        user = [Expression.parse(e) for e in given]
        for e in user:
            if e.uses_class_prior and not settings.class_prior:
                raise ValueError(
                    f"the seed expression {e} uses the class prior p; pass "
                    "settings={'class_prior': True} to offer p to the search"
                )
        library = known_losses(task.kind, task.single_output, settings.class_prior)
        extra = [known for known in task.scoring.seeds if known not in library]
        return [task.baseline, *user, *extra,
                *(library if task.custom_baseline else library[1:])]

    # -- exports -------------------------------------------------------------------------
    def latex(self) -> str:
        """LaTeX of the chosen loss (learned weights folded in)."""
        self._check_fitted()
        return self.best_loss_.latex()

    def sympy(self) -> sympy.Expr:
        """SymPy form of the chosen loss (learned weights folded in)."""
        self._check_fitted()
        return self.best_loss_.sympy()

    def latex_table(self, precision: int = 4) -> str:
        """The equations table as a booktabs LaTeX table for a paper (needs
        ``\\usepackage{booktabs}``); the chosen loss's size is starred."""
        self._check_fitted()
        return latex_table(self.equations_, f"validation {self.task_.kind_metric}", precision)

    def pytorch(self) -> LearnedLoss:
        """The chosen loss as a torch module (same as ``best_loss_``)."""
        self._check_fitted()
        return self.best_loss_


_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(SymbolicLossSearch.__init__).parameters.items()
    if name != "self"
}


def _seed(random_state: Any) -> int:
    """``random_state`` as a seed: None is 0; any other value must be an integer that
    NumPy and torch accept as a seed."""
    if random_state is None:
        return 0
    if (isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral)
            or not 0 <= random_state < 2**32):
        raise ValueError(
            f"random_state must be None or an integer in [0, 2**32), got {random_state!r}"
        )
    return int(random_state)


def _capped_batches(settings: Settings, n_train: int, asked: Collection[str]) -> Settings:
    """``settings`` with ``batch_size`` and ``meta_batch_size`` at most ``n_train``.

    Batches are drawn with replacement, so a larger batch learns nothing more and only
    costs memory (``10**9`` exhausts any machine); a meta-batch of validation examples
    is as large as its training one. A size the user ``asked`` for warns; a preset's
    default larger than a small dataset is capped quietly.
    """
    capped = {name: n_train for name in ("batch_size", "meta_batch_size")
              if getattr(settings, name) > n_train}
    for name in capped:
        message = (f"{name}={getattr(settings, name)} is larger than the {n_train} training "
                   f"examples; using {n_train} (batches are drawn with replacement, so a "
                   "larger one only costs memory)")
        if name in asked:
            warnings.warn(message, stacklevel=3)
        else:
            logger.info(message)
    return settings.replace(**capped) if capped else settings


def _nothing_trained(evaluations: Sequence[Evaluation], run: RunDirectory) -> str:
    """Why a search found no loss: the first candidate that failed with an error (the
    model or data is the likely cause, not the candidates), else the rejections."""
    failed = next((e for e in evaluations if e.reason.startswith((FAILED, FAILED_TRAINING))), None)
    if failed is not None:
        why = f"the first failure, of {failed.expression}: {failed.reason}"
    else:
        reasons = Counter(e.reason.split(":")[0] for e in evaluations if e.reason)
        why = "rejections: " + ", ".join(f"{n} {r}" for r, n in reasons.most_common(3))
    return (f"no candidate loss could be trained successfully ({why}); check the model and "
            f"data (every evaluation is in {run.path / EVALUATIONS_FILE})")


def _save_or_warn(run: RunDirectory, what: str, save: Callable[[], object]) -> None:
    """Write a summary file of a finished search. A failure to write it must not lose the
    search: the records are on disk, so warn and go on."""
    try:
        save()
    except OSError as error:
        warnings.warn(
            f"could not save {what} in {run.path} ({error}); the search itself is complete: "
            "fit again with the same run_dir to write it without evaluating any candidate "
            "again",
            stacklevel=3,
        )


def _check_resumed_metric(run: RunDirectory, metric: Metric) -> None:
    """Refuse, before anything else, to resume a run with another metric than it was
    searched with; a callable's run says that the same callable must be passed again."""
    path = run.path / RUN_FILE
    if not path.is_file():
        return
    try:
        existing = read_json(path, "symloss run description")
    except ValueError:
        return  # RunDirectory.open says what is wrong with it
    stored = existing.get("metric") if isinstance(existing, dict) else None
    if stored is None or stored == metric.name:
        return
    if not existing.get("metric_restorable", True):
        raise ValueError(
            f"{run.path} was searched with the callable metric {stored!r}, which cannot be "
            f"restored from its name; pass the same callable as metric= to resume it (got "
            f"{metric.name!r}), or use another run_dir"
        )
    raise ValueError(
        f"{run.path} was searched with metric {stored!r}, not {metric.name!r}; pass "
        f"metric={stored!r} to resume it, or use another run_dir"
    )


def _executor_for(task: Task, kind: str, n_jobs: int) -> tuple[str, int]:
    """The executor to use: local worker processes cannot share an accelerator that this
    process already initialised (CUDA cannot be used in a forked child), so off the CPU
    the local pool becomes one in-process worker; Ray workers start their own."""
    if task.device.type != "cpu" and kind != "ray" and n_jobs != 1:
        warnings.warn(
            f"n_jobs={n_jobs} with device {task.device}: evaluating in this process instead "
            "(the accelerator is the parallelism; use executor='ray' for several devices)",
            stacklevel=3,
        )
        return kind, 1
    return kind, n_jobs


def _search_rate(
    task: Task, settings: Settings, seed: int, run: RunDirectory, executor: tuple[str, int]
) -> RateChoice | None:
    """The search's learning rate: the baseline's best on ``settings.lr_grid``, chosen
    once and kept in the run directory (a resumed run reuses it); ``None`` when the
    grid is empty (the rate is fixed)."""
    if not settings.lr_grid:
        return None
    saved = run.load_search_lr()
    if saved is not None:
        return RateChoice.from_dict(saved)
    choice = tune_search_lr(task, settings, seed, executor)
    logger.info("search learning rate %g (baseline validation metric by rate: %s)",
                choice.lr, choice.metrics)
    run.save_search_lr(choice.to_dict())
    return choice


def _normalised_loss(
    loss: LearnedLoss, task: Task, settings: Settings, seed: int, best: Selection | None
) -> LearnedLoss:
    """``loss`` scaled to the baseline's gradient scale on ``task``, with how it was
    learned: the search's optimiser, the scale it was scored at, the best rate."""
    reference = reference_batch(task, seed)
    try:
        factor = normalising_factor(loss, task, reference)
        if factor > MAX_ABS_VALUE:
            raise ValueError(f"its normalising factor {factor:g} is beyond the {MAX_ABS_VALUE:g} "
                             "a saved loss's scale may have")
    except ValueError as error:
        warnings.warn(f"the chosen loss is returned unnormalised: {error}", stacklevel=3)
        factor = 1.0
    search_scale = factor if settings.normalize else 1.0
    recommended = None
    if best is not None and best.lr is not None:
        # the selection trained the loss at search_scale; the same steps at this scale
        recommended = best.lr * search_scale / factor
    learned_with = LearnedWith(
        optimizer="sgd", lr=settings.lr, momentum=settings.momentum,
        nesterov=settings.nesterov, weight_decay=settings.weight_decay,
        search_scale=search_scale, recommended_lr=recommended,
        metric=task.scoring.name, metric_restorable=task.scoring.restorable,
        baseline=str(task.baseline) if task.custom_baseline else None,
    )
    return LearnedLoss(loss.expression, loss.task, loss.weights, loss.metadata,
                       scale=factor, learned_with=learned_with, class_prior=loss.class_prior)


def _search(
    engine: Engine,
    task: Task,
    settings: Settings,
    seed: int,
    seeds: list[Expression],
    run: RunDirectory,
    resumed: bool,
    executor_kind: tuple[str, int],
    verbose: bool,
    callback: Callable[[GenerationStats], None] | None,
) -> tuple[list[GenerationStats], list[Evaluation]]:
    """Run (or resume) the engine's search, recording every evaluation in ``run``.

    Returns the generation history and every evaluation in search order.
    """
    checkpoint = run.load_checkpoint() if resumed else None
    records = run.records() if resumed else []
    done = checkpoint["generation"] if checkpoint else -1
    if resumed:
        logger.info("resuming %s after generation %d (%d records)", run.path, done,
                    len(records))

    evaluator = Evaluator(task, settings, seed, executor_kind,
                          known=[r.evaluation for r in records],
                          passed=run.passed() if resumed else (),
                          on_passed=run.append_passed)
    try:
        # in search order, not file order: records are written as results are decided
        kept = sorted((r for r in records if r.generation <= done),
                      key=lambda r: (r.generation, r.index))
        evaluator.restore(r.evaluation for r in kept)
        all_evaluations = [r.evaluation for r in kept]
        recorded = {(r.generation, r.index) for r in records}
        generation = [done + 1]

        def evaluate(expressions: Sequence[Expression]) -> list[Evaluation]:
            g = generation[0]

            def record(index: int, evaluation: Evaluation) -> None:
                if (g, index) not in recorded:
                    run.append(g, index, evaluation)

            results = evaluator.evaluate_many(expressions, on_evaluation=record)
            all_evaluations.extend(results)
            generation[0] += 1
            return results

        progress = _Progress(settings.generations + 1, done + 1, verbose)

        def on_generation(stats: GenerationStats) -> None:
            progress.update(stats)
            if callback is not None:
                callback(stats)

        context = SearchContext(
            kind=task.kind, settings=settings, seed=seed, seeds=seeds, evaluate=evaluate,
            load_state=lambda: checkpoint, save_state=run.save_checkpoint,
            on_generation=on_generation, offer_guess=evaluator.offer_guess,
        )
        try:
            history = engine.search(context)
        finally:
            progress.close()
    finally:
        evaluator.close()
    return history, all_evaluations


class _Progress:
    """A tqdm bar over generations (silent when not verbose)."""

    def __init__(self, total: int, start: int, verbose: bool) -> None:
        self._bar = None
        self._evaluations = 0
        if verbose:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=start, unit="gen", desc="symloss",
                             dynamic_ncols=True)

    def update(self, stats: GenerationStats) -> None:
        logger.info("generation %d: best %.4g %s", stats.generation, stats.best_fitness,
                    stats.best_expression)
        self._evaluations += stats.evaluated
        if self._bar is not None:
            self._bar.set_postfix_str(
                f"{self._evaluations} evals, best {stats.best_fitness:.4g}: "
                f"{stats.best_expression}"
            )
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def fit(dataset: Any, model: ModelSpec, **params: Any) -> SymbolicLossSearch:
    """Build a :class:`SymbolicLossSearch` with ``params`` and fit it.

    Examples
    --------
    >>> import tempfile
    >>> import symloss
    >>> search = symloss.fit("sine", "mlp", preset="tiny", verbose=False,
    ...                      run_dir=tempfile.mkdtemp())
    >>> print(search.best_loss_.expression)  # doctest: +SKIP
    square(f - y)
    """
    return SymbolicLossSearch(**params).fit(dataset, model)
