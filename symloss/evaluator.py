"""One candidate loss through every check, cheapest first, to an :class:`Evaluation`.

Order (docs/design.md, "Inner loop"): canonical-key cache, structural rejection, gradient
fingerprint (non-finite / flat rejection and gradient equivalence), then the part handed
to the executor: poor-training rejection, racing (:mod:`symloss.racing`), local search
and fitness training. The fingerprint runs before the poor-training check because it
costs one backward pass instead of hundreds of optimiser steps; a candidate with the same
gradient as an earlier one inherits that one's result, rejection included. The
poor-training check runs in the executor because it is the costliest check (hundreds of
optimiser steps) and no decision of this process depends on its outcome: a candidate it
rejects still leads the later candidates that share its key or gradient.

Every decision depends only on the candidates seen before, in order, so results are
the same whether the expensive part runs in this process or in a pool.

Speculation (local process pool only): once a generation has fewer unfinished
candidates than workers, a worker would wait for the generation's last candidate. The
evaluator then asks the engine for a guess of the next generation (see
:data:`symloss.records.Guesser`), screens the guesses read-only and scores the
survivors on the idle workers. :func:`score` is a pure function of its item, so when the
next generation asks for the very same item, the prefetched result is the one it would
have computed; nothing speculative is registered or reported before that.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

import torch

from symloss.config import Settings
from symloss.executors import Executor, InProcessExecutor, ProcessExecutor, single_torch_thread
from symloss.expression import Expression
from symloss.filters import (
    FAILED,
    NON_FINITE,
    fingerprint,
    fingerprint_reason,
    poor_training_reason,
    probe,
    same_gradient,
    structural_reason,
)
from symloss.local_search import local_search
from symloss.metrics import MetricError
from symloss.racing import race_reason, racing_enabled, run_metric, short_run, short_run_metric
from symloss.records import CACHED, OK, REJECTED, Evaluation, Guesser
from symloss.scale import Reference, reference_batch, search_loss
from symloss.task import Task
from symloss.training import TrainResult, sgd_settings, train


def _screen(
    task: Task, settings: Settings, seed: int, expression: Expression, check: bool,
    limit: float | None, reference: Reference | None, timings: dict[str, float],
) -> tuple[dict[str, Any] | None, TrainResult | None]:
    """The poor-training check (when ``check``), then the race's short run (when a
    ``limit`` is given): the fields of a rejection, or ``None`` when the candidate goes
    on to be trained; and the short run, which fitness training of the plain
    expression continues."""
    started = time.perf_counter()
    try:
        reason = poor_training_reason(expression, task, settings, seed) if check else None
    except MetricError:  # the user's metric failed: every number would be suspect
        raise
    except Exception as error:  # one candidate's failure must not end the search
        reason = f"{FAILED}: {type(error).__name__}: {error}"
    timings["poor_training"] = time.perf_counter() - started
    if reason:
        return {"status": REJECTED, "reason": reason, "timings": timings}, None
    if limit is None:
        return None, None
    started = time.perf_counter()
    try:
        loss = search_loss(task, settings, expression, (), reference)
    except ValueError:  # not normalisable: the full evaluation reports it
        return None, None
    run = short_run(task, loss, settings, seed)
    metric = run_metric(task, run)
    timings["race"] = time.perf_counter() - started
    reason = race_reason(metric, limit, settings, task)
    if reason:
        # the short run's metric, not inf: the search can still rank the candidate
        return {"status": REJECTED, "fitness": metric, "reason": reason, "timings": timings}, None
    return None, run


FAILED_TRAINING = "failed training"


def score(
    payload: tuple[Task, Settings, int], item: str | tuple[str, bool, float | None]
) -> dict[str, Any]:
    """The expensive stage: poor-training check, race, local search (if enabled), fitness.

    ``item`` is an expression's text, or ``(text, check, limit)``: ``check=False`` skips
    the poor-training check (passed earlier in this search), ``limit`` is the highest
    validation metric the race's short run may reach (``None``: no race). Module-level
    so that process pools and Ray can run it. Returns the fields of an
    :class:`Evaluation` that this stage decides, and ``passed_check=True`` when the
    poor-training check ran and passed.
    """
    task, settings, seed = payload
    text, check, limit = (item, True, None) if isinstance(item, str) else item
    expression = Expression.parse(text)
    timings: dict[str, float] = {}
    reference = reference_batch(task, seed) if settings.normalize else None
    rejection, start = _screen(task, settings, seed, expression, check, limit, reference,
                               timings)
    if rejection is not None:
        return {**rejection, "passed_check": check and "race" in timings}
    try:
        fields = _train(task, settings, seed, expression, reference, timings, start)
    except MetricError:  # the user's metric failed: every number would be suspect
        raise
    except Exception as error:  # noqa: BLE001 -- one candidate's failure must not end the search
        fields = {"status": REJECTED, "fitness": math.inf, "timings": timings,
                  "reason": f"{FAILED_TRAINING}: {type(error).__name__}: {error}"}
    return {**fields, "passed_check": check}


def _train(
    task: Task, settings: Settings, seed: int, expression: Expression,
    reference: Reference | None, timings: dict[str, float], start: TrainResult | None = None,
) -> dict[str, Any]:
    """Local search (if enabled) and fitness training: the fields of the evaluation.

    With the local search and ``settings.local_search_guard`` on, both the plain
    expression (unit edge weights) and the refined loss are trained, and the refined
    loss is kept only where its fitness is strictly lower: a refinement tuned on a
    proxy (a few steps, a validation batch) must not make the loss worse by the
    search's own measure. The plain run continues ``start`` (the race's short run of
    the same loss) where there is one.
    """
    if not settings.local_search:
        return _fitness(task, settings, seed, expression, (), reference, timings, "fitness",
                        start)
    if not settings.local_search_guard:
        weights = _refine(task, settings, seed, expression, reference, timings)
        fields = _fitness(task, settings, seed, expression, weights, reference, timings,
                          "fitness")
        return {**fields, "refined": True, "refined_fitness": fields["fitness"]}
    plain = _fitness(task, settings, seed, expression, (), reference, timings, "fitness",
                     start)
    weights = _refine(task, settings, seed, expression, reference, timings)
    refined = _fitness(task, settings, seed, expression, weights, reference, timings,
                       "refined_fitness")
    keep = refined["fitness"] < plain["fitness"]
    return {**(refined if keep else plain), "refined": keep,
            "unrefined_fitness": plain["fitness"], "refined_fitness": refined["fitness"]}


def _refine(
    task: Task, settings: Settings, seed: int, expression: Expression,
    reference: Reference | None, timings: dict[str, float],
) -> tuple[float, ...]:
    """The local search's edge weights for ``expression``."""
    started = time.perf_counter()
    weights = local_search(task, expression, settings, seed + 1, reference).weights
    timings["local_search"] = time.perf_counter() - started
    return weights


def _fitness(
    task: Task, settings: Settings, seed: int, expression: Expression,
    weights: tuple[float, ...], reference: Reference | None, timings: dict[str, float],
    stage: str, start: TrainResult | None = None,
) -> dict[str, Any]:
    """Fitness training of the loss with edge ``weights`` (``()``: the plain
    expression), continuing ``start`` when given: the fields of its evaluation, the
    seconds in ``timings[stage]``."""
    started = time.perf_counter()
    try:
        loss = search_loss(task, settings, expression, weights, reference)
    except ValueError as error:
        when = "after the local search, " if weights else ""
        return {"status": REJECTED, "fitness": math.inf, "weights": weights,
                "reason": f"{NON_FINITE}: {when}{error}", "timings": timings}
    result = train(task, loss, settings.fitness_steps, sgd_settings(settings), seed,
                   start=start)
    fitness = math.inf if result.diverged else task.metric(result.model, task.val)
    timings[stage] = time.perf_counter() - started
    if result.diverged:
        reason = f"{NON_FINITE}: training loss became NaN/inf by step {result.steps}"
    elif not math.isfinite(fitness):
        reason = f"{NON_FINITE}: validation metric is {fitness}"
    else:
        return {"status": OK, "fitness": fitness, "weights": weights, "timings": timings}
    return {"status": REJECTED, "fitness": math.inf, "reason": reason, "weights": weights,
            "timings": timings}


def _evaluation_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields of :func:`score`'s result that an :class:`Evaluation` takes."""
    return {k: v for k, v in fields.items() if k != "passed_check"}


class Evaluator:
    """Scores candidate losses on a task.

    Parameters
    ----------
    task : Task
        The problem (see :func:`symloss.task.make_task`).
    settings : Settings
        Search settings (inner-loop fields are used).
    seed : int
        Seed of every training run; all candidates see the same initialisations and
        batches, so their fitnesses are directly comparable.
    executor : Executor, optional
        Where the expensive stage runs; in this process by default. It must have been
        built with :func:`score` and the payload ``(task, settings, seed)``.
    known : iterable of Evaluation, optional
        Earlier records of this search (a resumed run): a candidate found there is not
        trained again.
    passed : iterable of str, optional
        Expressions (text) that passed the poor-training check earlier in this search;
        the check is not repeated for them.
    on_passed : callable, optional
        Called with a candidate's text when it passed the poor-training check (which
        runs in the executor), before its evaluation is recorded, so that a resumed
        search need not repeat the check.
    speculate : bool, default=True
        With a :class:`~symloss.executors.ProcessExecutor`, score guesses of the next
        generation on idle workers (see :meth:`offer_guess`); results are the same.

    Attributes
    ----------
    n_trained : int
        Candidates trained (local search or fitness) in this session.
    n_prefetched, n_prefetch_hits : int
        Speculative items submitted, and those a later generation used.
    """

    def __init__(
        self,
        task: Task,
        settings: Settings,
        seed: int = 0,
        executor: Executor | None = None,
        known: Iterable[Evaluation] = (),
        passed: Iterable[str] = (),
        on_passed: Callable[[str], None] | None = None,
        speculate: bool = True,
    ) -> None:
        self.task, self.settings, self.seed = task, settings, seed
        self.executor = executor or InProcessExecutor(score, (task, settings, seed))
        self.n_trained = 0
        self._results: dict[str, Evaluation] = {}
        self._fingerprints: list[tuple[torch.Tensor, str]] = []
        self._probe = probe(task, settings, seed)
        self._memo = {e.key: e for e in known if e.status != CACHED}
        self._passed = frozenset(passed)
        self._on_passed = on_passed
        self._race_reference: tuple[str, float] | None = None
        self._speculate = speculate and isinstance(self.executor, ProcessExecutor)
        self._guesser: Guesser | None = None
        self._queued: list[tuple[str, bool, float | None]] = []  # guesses not yet submitted
        self._prefetched: dict[tuple[str, bool, float | None], Future] = {}
        self.n_prefetched = self.n_prefetch_hits = 0

    def offer_guess(self, guesser: Guesser | None) -> None:
        """Use ``guesser`` to guess the generation after the next :meth:`evaluate_many`."""
        self._guesser = guesser

    def evaluate(self, expression: Expression | str) -> Evaluation:
        """Evaluate one candidate."""
        return self.evaluate_many([expression])[0]

    def evaluate_many(
        self,
        expressions: Sequence[Expression | str],
        on_evaluation: Callable[[int, Evaluation], None] | None = None,
    ) -> list[Evaluation]:
        """Evaluate a whole generation, in order; the expensive stage runs in parallel.

        ``on_evaluation(index, evaluation)`` is called as soon as each result is final
        (cheap rejections first, trained candidates as they finish), so a caller can
        record progress that survives an interruption. Torch runs on one intra-op
        thread meanwhile (see :func:`symloss.executors.single_torch_thread`).
        """
        with single_torch_thread():
            return self._evaluate_many(expressions, on_evaluation)

    def _evaluate_many(
        self,
        expressions: Sequence[Expression | str],
        on_evaluation: Callable[[int, Evaluation], None] | None,
    ) -> list[Evaluation]:
        results: list[Evaluation | None] = [None] * len(expressions)

        def decide(i: int, evaluation: Evaluation) -> None:
            results[i] = evaluation
            if on_evaluation is not None:
                on_evaluation(i, evaluation)

        pending: dict[str, tuple[int, Expression, dict[str, float], torch.Tensor]] = {}
        followers: list[tuple[int, Expression, str, str, dict[str, float]]] = []
        for i, item in enumerate(expressions):
            expression = Expression.parse(item)
            timings: dict[str, float] = {}
            started = time.perf_counter()
            key = expression.key()
            timings["key"] = time.perf_counter() - started
            if key in self._results or key in pending:
                followers.append((i, expression, key, "same expression as", timings))
                continue
            try:
                reason, grad, match = self._checks(expression, key, timings, pending)
            except Exception as error:  # one candidate's failure must not end the search
                reason, grad, match = f"{FAILED}: {type(error).__name__}: {error}", None, None
            if reason:
                decide(i, self._register(Evaluation(str(expression), key, REJECTED,
                                                    reason=reason, timings=timings), grad))
            elif match is not None:
                followers.append((i, expression, match, "same gradient as", timings))
            elif self._remembered(key, expression):
                decide(i, self._register(self._memo[key], grad))
            else:
                pending[key] = (i, expression, timings, grad)

        limit = self._race_limit() if pending else None
        items = [(str(e), str(e) not in self._passed, limit) for _, e, _, _ in pending.values()]
        guesser, self._guesser = self._guesser, None
        scored: Iterable[dict[str, Any]]
        if isinstance(self.executor, ProcessExecutor):
            guess = (functools.partial(self._guess, guesser, pending, results, followers)
                     if self._speculate and guesser is not None else None)
            scored = self._in_pool(items, guess)
        else:
            scored = self.executor.map(items)
        for (key, (i, expression, timings, grad)), fields in zip(
            pending.items(), scored, strict=True
        ):
            fields = dict(fields)
            if fields.pop("passed_check") and self._on_passed is not None:
                self._on_passed(str(expression))
            self.n_trained += bool({"local_search", "fitness"} & fields["timings"].keys())
            fields["timings"] = {**timings, **fields["timings"]}
            decide(i, self._register(Evaluation(str(expression), key, **fields), grad))

        for i, expression, source_key, relation, timings in followers:
            source = self._results[source_key]
            # the source's weights are edge weights of the source's tree: they belong to
            # this candidate only when it is the same tree
            same_tree = source.expression == str(expression)
            weights = source.weights if same_tree else ()
            decide(i, Evaluation(
                str(expression), expression.key(), CACHED, fitness=source.fitness,
                reason=f"{relation} {source.expression}", weights=weights, timings=timings,
                source_status=source.status, refined=source.refined and same_tree,
                unrefined_fitness=source.unrefined_fitness,
                refined_fitness=source.refined_fitness,
            ))
        return results  # type: ignore[return-value]

    def _guess(
        self, guesser: Guesser, pending: dict, results: Sequence[Evaluation | None],
        followers: Sequence[tuple], futures: list[Future],
    ) -> None:
        """Queue the guesses of the next generation, made from every fitness of this one
        known by now (by index): decided, scored in the pool (``futures``, in the order of
        ``pending``), or copied by a follower from either."""
        done = {key: f.result() for key, f in zip(pending, futures, strict=True)
                if f.done() and f.exception() is None}
        known = {i: e.fitness for i, e in enumerate(results) if e is not None}
        known |= {pending[k][0]: f.get("fitness", math.inf) for k, f in done.items()}
        for i, _, source, _, _ in followers:
            if source in self._results:
                known[i] = self._results[source].fitness
            elif source in done:
                known[i] = done[source].get("fitness", math.inf)
        finished = [Evaluation(str(pending[k][1]), k, **_evaluation_fields(f))
                    for k, f in done.items()]
        try:
            guesses = guesser(known)
        except Exception:  # noqa: BLE001 -- a failed guess only forgoes speculation
            return
        self._plan(guesses, finished, pending)

    def _in_pool(
        self, items: list[tuple[str, bool, float | None]],
        guess: Callable[[list[Future]], None] | None,
    ) -> Iterator[dict[str, Any]]:
        """Score ``items`` in the process pool, yielding results in order; reuse the
        prefetched results of earlier guesses, and call ``guess(futures)`` once, when
        fewer items are unfinished than there are workers."""
        pool = self.executor
        assert isinstance(pool, ProcessExecutor)
        reused = {item: self._prefetched.pop(item) for item in items if item in self._prefetched}
        # unused guesses first, so that they hold no worker before this generation's items
        for future in self._prefetched.values():
            future.cancel()
        self._prefetched.clear()
        self._queued.clear()
        self.n_prefetch_hits += len(reused)
        futures = [reused.get(item) or pool.submit(item) for item in items]
        yielded = 0
        while yielded < len(futures):
            unfinished = [f for f in futures[yielded:] if not f.done()]
            if guess is not None and len(unfinished) < pool.workers:
                guess(futures)
                guess = None
            self._top_up(len(unfinished))
            if unfinished:
                speculative = [f for f in self._prefetched.values() if not f.done()]
                wait(unfinished + speculative, return_when=FIRST_COMPLETED)
                # before the results go back: the last ones leave workers free while the
                # engine breeds the next generation
                self._top_up(sum(not f.done() for f in futures[yielded:]))
            while yielded < len(futures) and futures[yielded].done():
                yield futures[yielded].result()
                yielded += 1

    def _top_up(self, busy: int) -> None:
        """Submit queued guesses while fewer than ``workers`` items are running."""
        pool = self.executor
        assert isinstance(pool, ProcessExecutor)
        busy += sum(not f.done() for f in self._prefetched.values())
        while self._queued and busy < pool.workers:
            item = self._queued.pop(0)
            self._prefetched[item] = pool.submit(item)
            self.n_prefetched += 1
            busy += 1

    def _plan(
        self, guesses: Sequence[Expression], finished: Sequence[Evaluation], pending: dict
    ) -> None:
        """Queue the items the next generation would submit for ``guesses``, as far as
        it is known now: the race limit counts the ``finished`` candidates of this
        generation, and guesses that the next generation would not score (cached,
        rejected by a cheap check, same gradient as another) are dropped. Read-only:
        nothing is registered."""
        limit = self._race_limit(finished)
        known = [grad for grad, _ in self._fingerprints]
        known += [grad for _, _, _, grad in pending.values() if grad is not None]
        keys: set[str] = set()
        for guess in guesses:
            try:
                key = guess.key()
                if key in self._results or key in pending or key in keys:
                    continue
                keys.add(key)
                if self._remembered(key, guess) or structural_reason(guess):
                    continue
                grad, reason = self._fingerprint(guess)
            except Exception:  # noqa: BLE001 -- the real evaluation reports it
                continue
            rtol = self.settings.fingerprint_rtol
            if reason or any(same_gradient(grad, other, rtol) for other in known):
                continue
            known.append(grad)
            self._queued.append((str(guess), str(guess) not in self._passed, limit))

    def _checks(
        self, expression: Expression, key: str, timings: dict[str, float], pending: dict
    ) -> tuple[str | None, torch.Tensor | None, str | None]:
        """The cheap checks, cheapest first: (rejection reason, fingerprint to register,
        key of an earlier candidate with the same gradient). The poor-training check
        runs in the executor (see :func:`score`)."""
        started = time.perf_counter()
        reason = structural_reason(expression)
        timings["structural"] = time.perf_counter() - started
        if reason:
            return reason, None, None
        started = time.perf_counter()
        grad, reason = self._fingerprint(expression)
        match = None if reason else self._equivalent(grad, pending)
        timings["fingerprint"] = time.perf_counter() - started
        if reason:
            return reason, None, None
        return None, grad, match

    def _remembered(self, key: str, expression: Expression) -> bool:
        """True when the run's records hold this very candidate's result."""
        return key in self._memo and self._memo[key].expression == str(expression)

    def restore(self, evaluations: Iterable[Evaluation]) -> None:
        """Mark earlier results of a resumed search as already seen, in their order.

        Rebuilds the caches exactly as the uninterrupted search had them, so later
        candidates are merged with (``cached``) the same earlier results.
        """
        for evaluation in evaluations:
            if evaluation.status == CACHED or evaluation.key in self._results:
                continue
            expression = Expression.parse(evaluation.expression)
            grad = None
            # a candidate whose check failed has no fingerprint to take again
            if not evaluation.reason.startswith(FAILED) and structural_reason(expression) is None:
                grad, reason = self._fingerprint(expression)
                if reason is not None:
                    grad = None
            self._register(evaluation, grad)

    def _fingerprint(self, expression: Expression) -> tuple[torch.Tensor, str | None]:
        """The candidate's gradient fingerprint and any reason to reject it; in a
        normalised search scaled to unit norm, since ``c * L`` and ``L`` then train alike."""
        grad = fingerprint(expression, self.task, self._probe)
        reason = fingerprint_reason(grad)
        if reason is None and self.settings.normalize:
            grad = grad / grad.norm()
        return grad, reason

    def _race_limit(self, finished: Iterable[Evaluation] = ()) -> float | None:
        """The race's limit for this generation: ``race_ratio`` times the short-run
        metric of the best candidate trained so far (the first of equals); ``None``
        before any candidate was trained, with racing off, or when no candidate could
        exceed it. ``finished``: results to count after the registered ones (a guess of
        the next generation's limit)."""
        if not racing_enabled(self.settings):
            return None
        trained = [e for e in (*self._results.values(), *finished)
                   if e.status == OK and math.isfinite(e.fitness)]
        if not trained:
            return None
        best = min(trained, key=lambda e: e.fitness)
        if self._race_reference is None or self._race_reference[0] != best.key:
            reference = reference_batch(self.task, self.seed) if self.settings.normalize else None
            try:
                loss = search_loss(self.task, self.settings, best.expression, (), reference)
            except ValueError:
                return None
            metric = short_run_metric(self.task, loss, self.settings, self.seed)
            self._race_reference = (best.key, metric)
        if self._race_reference[1] < 0:
            return None  # a ratio of a negative metric is no limit
        limit = self.settings.race_ratio * self._race_reference[1]
        bound = self.task.scoring.bound
        if bound is not None and limit >= bound:
            return None  # no metric value exceeds it: the short runs would be wasted
        return limit

    def _register(self, evaluation: Evaluation, grad: torch.Tensor | None) -> Evaluation:
        self._results[evaluation.key] = evaluation
        if grad is not None:
            self._fingerprints.append((grad, evaluation.key))
        return evaluation

    def _equivalent(self, grad: torch.Tensor, pending: dict) -> str | None:
        """Key of an earlier candidate (registered or pending) with the same gradient."""
        rtol = self.settings.fingerprint_rtol
        for other, key in self._fingerprints:
            if same_gradient(grad, other, rtol):
                return key
        for key, (_, _, _, other) in pending.items():
            if same_gradient(grad, other, rtol):
                return key
        return None
