"""One candidate loss through every check, cheapest first, to an :class:`Evaluation`.

Order (docs/design.md, "Inner loop"): canonical-key cache, structural rejection, gradient
fingerprint (non-finite / flat rejection and gradient equivalence), poor-training
rejection, then the expensive part -- local search and fitness training -- which is the
only part handed to the executor. The fingerprint runs before the poor-training check
because it costs one backward pass instead of hundreds of optimiser steps; a candidate
with the same gradient as an earlier one inherits that one's result, rejection included.

Every decision depends only on the candidates seen before, in order, so results are
the same whether the expensive part runs in this process or in a pool.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from symloss.config import Settings
from symloss.executors import Executor, InProcessExecutor, single_torch_thread
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
from symloss.network import LearnedLoss
from symloss.records import CACHED, OK, REJECTED, Evaluation
from symloss.scale import Reference, normalising_factor, reference_batch
from symloss.task import Task
from symloss.training import sgd_settings, train


def search_loss(
    task: Task,
    settings: Settings,
    expression: Expression | str,
    weights: Sequence[float] = (),
    reference: Reference | None = None,
) -> LearnedLoss:
    """The loss as the search trains it: normalised to the baseline's gradient scale
    at ``reference`` when ``settings.normalize`` is on, as it is otherwise.

    Raises
    ------
    ValueError
        If the loss must be normalised but its gradient there is zero or not finite.
    """
    loss = LearnedLoss(expression, task.kind, weights or None)
    if not settings.normalize:
        return loss
    if reference is None:
        raise ValueError("a normalised search needs the reference batch")
    return loss.with_scale(normalising_factor(loss, task, reference))


def score(payload: tuple[Task, Settings, int], text: str) -> dict[str, Any]:
    """The expensive stage: local search (if enabled) then fitness training.

    Module-level so that process pools and Ray can run it. Returns the fields of an
    :class:`Evaluation` that this stage decides.
    """
    task, settings, seed = payload
    expression = Expression.parse(text)
    timings: dict[str, float] = {}
    weights: tuple[float, ...] = ()
    reference = reference_batch(task, seed) if settings.normalize else None
    if settings.local_search:
        started = time.perf_counter()
        weights = local_search(task, expression, settings, seed + 1, reference).weights
        timings["local_search"] = time.perf_counter() - started
    started = time.perf_counter()
    try:
        loss = search_loss(task, settings, expression, weights, reference)
    except ValueError as error:
        return {"status": REJECTED, "fitness": math.inf, "weights": weights,
                "reason": f"{NON_FINITE}: after the local search, {error}", "timings": timings}
    result = train(task, loss, settings.fitness_steps, sgd_settings(settings), seed)
    fitness = math.inf if result.diverged else task.metric(result.model, task.val)
    timings["fitness"] = time.perf_counter() - started
    if result.diverged:
        reason = f"{NON_FINITE}: training loss became NaN/inf by step {result.steps}"
    elif not math.isfinite(fitness):
        reason = f"{NON_FINITE}: validation metric is {fitness}"
    else:
        return {"status": OK, "fitness": fitness, "weights": weights, "timings": timings}
    return {"status": REJECTED, "fitness": math.inf, "reason": reason, "weights": weights,
            "timings": timings}


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
        Called with a candidate's text when it passes the poor-training check, before it
        is trained, so that a resumed search need not repeat the check.

    Attributes
    ----------
    n_trained : int
        Candidates that reached the expensive stage in this session.
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
                if str(expression) not in self._passed and self._on_passed is not None:
                    self._on_passed(str(expression))
                pending[key] = (i, expression, timings, grad)

        scored = self.executor.map([str(e) for _, e, _, _ in pending.values()])
        for (key, (i, expression, timings, grad)), fields in zip(
            pending.items(), scored, strict=True
        ):
            self.n_trained += 1
            fields = dict(fields)
            fields["timings"] = {**timings, **fields["timings"]}
            decide(i, self._register(Evaluation(str(expression), key, **fields), grad))

        for i, expression, source_key, relation, timings in followers:
            source = self._results[source_key]
            # the source's weights are edge weights of the source's tree: they belong to
            # this candidate only when it is the same tree
            weights = source.weights if source.expression == str(expression) else ()
            decide(i, Evaluation(
                str(expression), expression.key(), CACHED, fitness=source.fitness,
                reason=f"{relation} {source.expression}", weights=weights, timings=timings,
            ))
        return results  # type: ignore[return-value]

    def _checks(
        self, expression: Expression, key: str, timings: dict[str, float], pending: dict
    ) -> tuple[str | None, torch.Tensor | None, str | None]:
        """The cheap checks, cheapest first: (rejection reason, fingerprint to register,
        key of an earlier candidate with the same gradient). The poor-training check is
        skipped for a candidate known from the run's records or known to pass it."""
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
        if match is not None or self._remembered(key, expression):
            return None, grad, match
        started = time.perf_counter()
        if str(expression) not in self._passed:
            reason = poor_training_reason(expression, self.task, self.settings, self.seed)
        timings["poor_training"] = time.perf_counter() - started
        return reason, grad, None

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
