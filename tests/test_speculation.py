"""Speculative prefetch of the next generation (local process pool): the same results as
without it, guesses that are really reused, and an engine that guesses without changing
its own course."""

from __future__ import annotations

import pytest

from symloss.engines.base import SearchContext
from symloss.engines.deap import DeapEngine
from symloss.evaluator import Evaluator
from symloss.executors import ProcessExecutor
from symloss.expression import Expression
from symloss.library import known_losses
from symloss.scoring import score


def _search(task, settings, n_jobs: int, speculate: bool):
    """A real DEAP search; returns every evaluation's outcome, the populations each
    generation evaluated, and the evaluator."""
    executor = (ProcessExecutor(score, (task, settings, 0), n_jobs) if n_jobs > 1 else None)
    evaluator = Evaluator(task, settings, 0, executor, speculate=speculate)
    generations: list[list[str]] = []
    outcomes: list[tuple] = []

    def evaluate(expressions):
        generations.append([str(e) for e in expressions])
        results = evaluator.evaluate_many(expressions)
        outcomes.extend((e.expression, e.status, e.fitness, e.weights, e.reason)
                        for e in results)
        return results

    context = SearchContext(kind=task.kind, settings=settings, seed=0,
                            seeds=known_losses(task.kind), evaluate=evaluate,
                            offer_guess=evaluator.offer_guess)
    try:
        DeapEngine().search(context)
    finally:
        evaluator.executor.close()
    return outcomes, generations, evaluator


@pytest.fixture(scope="module")
def settings(tiny_settings):
    return tiny_settings.replace(population_size=8, generations=3, selection_top_k=0)


def test_speculation_changes_no_result_and_is_reused(diabetes_task, settings):
    plain, plain_generations, one = _search(diabetes_task, settings, 1, speculate=False)
    off, _, pool_off = _search(diabetes_task, settings, 2, speculate=False)
    on, generations, pool_on = _search(diabetes_task, settings, 2, speculate=True)
    assert on == off == plain
    assert generations == plain_generations
    assert pool_off.n_prefetched == pool_off.n_prefetch_hits == 0
    assert pool_on.n_prefetch_hits > 0  # guesses came true and their results were used
    assert pool_on.n_trained == pool_off.n_trained == one.n_trained  # prefetches not counted


def test_guessing_leaves_the_engines_course_unchanged(diabetes_task, settings):
    """Calling every guesser (as an idle pool would) breeds the same populations."""
    def run(guess: bool) -> list[list[str]]:
        generations: list[list[str]] = []
        offered = []

        def evaluate(expressions):
            generations.append([str(e) for e in expressions])
            if guess and offered[-1] is not None:
                for known in ({}, {0: 0.5}):  # guess twice, with and without fitnesses
                    assert all(isinstance(e, Expression) for e in offered[-1](known))
            return evaluator.evaluate_many(expressions)

        evaluator = Evaluator(diabetes_task, settings, 0)
        context = SearchContext(kind="regression", settings=settings, seed=0,
                                seeds=known_losses("regression"), evaluate=evaluate,
                                offer_guess=offered.append)
        DeapEngine().search(context)
        return generations

    assert run(guess=True) == run(guess=False)


def test_a_guess_with_every_fitness_known_is_the_next_generation(diabetes_task, settings):
    """With the generation's fitnesses all known, the guess is exactly what the engine
    breeds next (the guess of the worst-/best-case unknowns coincide)."""
    generations: list[list[str]] = []
    guesses: list[list[str]] = []
    offered = []

    def evaluate(expressions):
        generations.append([str(e) for e in expressions])
        results = evaluator.evaluate_many(expressions)
        if offered and offered[-1] is not None:
            known = {i: e.fitness for i, e in enumerate(results)}
            guesses.append([str(e) for e in offered[-1](known)])
            offered.clear()
        return results

    evaluator = Evaluator(diabetes_task, settings, 0)
    context = SearchContext(kind="regression", settings=settings, seed=0,
                            seeds=known_losses("regression"), evaluate=evaluate,
                            offer_guess=offered.append)
    DeapEngine().search(context)
    assert len(guesses) == settings.generations
    for guess, following in zip(guesses, generations[1:], strict=True):
        assert set(guess) == set(following)


def test_the_estimator_speculates_and_records_nothing_speculative(tmp_path, monkeypatch):
    """Through SymbolicLossSearch with two workers: the run directory's records are the
    same with speculation on and off, and prefetched results were used."""
    import symloss.estimator as estimator
    from symloss import SymbolicLossSearch
    from symloss.runs import PASSED_FILE, RunDirectory

    evaluators: list[Evaluator] = []

    def run(speculate: bool):
        class Recorded(Evaluator):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs, speculate=speculate)
                evaluators.append(self)

        monkeypatch.setattr(estimator, "Evaluator", Recorded)
        path = tmp_path / f"speculate-{speculate}"
        search = SymbolicLossSearch(
            preset="tiny", population_size=8, generations=3, n_jobs=2, random_state=0,
            verbose=False, run_dir=path, settings={"selection_top_k": 0},
        ).fit("diabetes", "linear")
        records = sorted((r.generation, r.index, r.evaluation.expression, r.evaluation.status,
                           r.evaluation.fitness, r.evaluation.weights, r.evaluation.reason)
                          for r in RunDirectory(path).records())
        passed = sorted((path / PASSED_FILE).read_text().splitlines())
        return records, passed, [h.best_fitness for h in search.history_]

    assert run(speculate=False) == run(speculate=True)
    off, on = evaluators
    assert off.n_prefetch_hits == 0 and on.n_prefetch_hits > 0
    assert on.n_trained == off.n_trained
