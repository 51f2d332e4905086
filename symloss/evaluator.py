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

The expensive stage itself is :func:`symloss.scoring.score`; with a process pool, the
evaluator screens guesses of the next generation here and :mod:`symloss.speculation`
scores them on idle workers.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future

import torch

from symloss.config import Settings
from symloss.executors import Executor, make_executor, single_torch_thread
from symloss.expression import Expression
from symloss.filters import (
    FAILED,
    fingerprint,
    fingerprint_reason,
    probe,
    same_gradient,
    structural_reason,
)
from symloss.racing import racing_enabled, short_run_metric
from symloss.records import CACHED, OK, REJECTED, Evaluation, Guesser
from symloss.scale import reference_batch, search_loss
from symloss.scoring import Scored, score
from symloss.speculation import Item, Prefetcher
from symloss.task import Task


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
    executor : (str, int) or Executor, optional
        Where the expensive stage runs: ``(kind, n_jobs)`` as for
        :func:`symloss.executors.make_executor` (the evaluator builds it and releases it
        in :meth:`close`), or an executor built with :func:`symloss.scoring.score` and
        the payload ``(task, settings, seed)``; in this process by default.
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
        With an executor that runs futures (a process pool), score guesses of the next
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
        executor: tuple[str, int] | Executor | None = None,
        known: Iterable[Evaluation] = (),
        passed: Iterable[str] = (),
        on_passed: Callable[[str], None] | None = None,
        speculate: bool = True,
    ) -> None:
        self.task, self.settings, self.seed = task, settings, seed
        self.n_trained = 0
        self._results: dict[str, Evaluation] = {}
        self._fingerprints: list[tuple[torch.Tensor, str]] = []
        self._probe = probe(task, settings, seed)
        self._memo = {e.key: e for e in known if e.status != CACHED}
        self._passed = frozenset(passed)
        self._on_passed = on_passed
        self._race_reference: tuple[str, float] | None = None
        # last: nothing after it can fail and leave a pool behind
        self._owns_executor = isinstance(executor, tuple) or executor is None
        self.executor = (make_executor(*(executor or ("auto", 1)), score,
                                       (task, settings, seed), work=settings.population_size)
                         if self._owns_executor else executor)
        self._prefetcher = Prefetcher(self.executor) if self.executor.futures else None
        self._speculate = speculate and self._prefetcher is not None
        self._guesser: Guesser | None = None

    @property
    def n_prefetched(self) -> int:
        """Speculative items submitted."""
        return self._prefetcher.n_prefetched if self._prefetcher is not None else 0

    @property
    def n_prefetch_hits(self) -> int:
        """Speculative items a later generation used."""
        return self._prefetcher.n_hits if self._prefetcher is not None else 0

    def close(self) -> None:
        """Release the executor's workers if the evaluator built it."""
        if self._owns_executor:
            self.executor.close()

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
        scored: Iterable[Scored]
        if self._prefetcher is not None:
            guess = (functools.partial(self._guess, guesser, pending, results, followers)
                     if self._speculate and guesser is not None else None)
            scored = self._prefetcher.results(items, guess)
        else:
            scored = self.executor.map(items)
        for (key, (i, expression, timings, grad)), result in zip(
            pending.items(), scored, strict=True
        ):
            if result.passed_check and self._on_passed is not None:
                self._on_passed(str(expression))
            self.n_trained += result.trained
            decide(i, self._register(result.evaluation(str(expression), key, timings), grad))

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
        known |= {pending[k][0]: f.fields.get("fitness", math.inf) for k, f in done.items()}
        for i, _, source, _, _ in followers:
            if source in self._results:
                known[i] = self._results[source].fitness
            elif source in done:
                known[i] = done[source].fields.get("fitness", math.inf)
        finished = [f.evaluation(str(pending[k][1]), k, {}) for k, f in done.items()]
        try:
            guesses = guesser(known)
        except Exception:  # noqa: BLE001 -- a failed guess only forgoes speculation
            return
        self._plan(guesses, finished, pending)

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
        queued: list[Item] = []
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
            queued.append((str(guess), str(guess) not in self._passed, limit))
        if self._prefetcher is not None:
            self._prefetcher.queue(queued)

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
