"""Speculation: score guesses of the next generation on idle workers of a process pool.

Once a generation has fewer unfinished candidates than workers, a worker would wait for
the generation's last candidate. The evaluator then asks the engine for a guess of the
next generation (:data:`symloss.records.Guesser`), screens the guesses read-only and
queues the survivors here; they run on the idle workers. :func:`symloss.scoring.score`
is a pure function of its item, so when the next generation asks for the very same
item, the prefetched result is the one it would have computed; a guess it does not ask
for is cancelled, and nothing speculative is registered or reported before that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait

from symloss.executors import ProcessExecutor
from symloss.scoring import Scored

Item = tuple[str, bool, float | None]
"""What :func:`symloss.scoring.score` is asked: ``(expression, check, race limit)``."""


class Prefetcher:
    """A process pool's items in order, with queued guesses run on its idle workers.

    Attributes
    ----------
    n_prefetched, n_hits : int
        Speculative items submitted, and those a later generation used.
    """

    def __init__(self, pool: ProcessExecutor) -> None:
        self.pool = pool
        self._queued: list[Item] = []  # guesses not yet submitted
        self._prefetched: dict[Item, Future] = {}
        self.n_prefetched = self.n_hits = 0

    def queue(self, items: Iterable[Item]) -> None:
        """Score ``items`` when workers are idle (a guess of the next generation)."""
        self._queued.extend(items)

    def results(
        self, items: list[Item],
        guess: Callable[[list[Future]], None] | None,
    ) -> Iterator[Scored]:
        """Score ``items`` in the process pool, yielding results in order; reuse the
        prefetched results of earlier guesses, and call ``guess(futures)`` once, when
        fewer items are unfinished than there are workers."""
        pool = self.pool
        reused = {item: self._prefetched.pop(item) for item in items if item in self._prefetched}
        # unused guesses first, so that they hold no worker before this generation's items
        for future in self._prefetched.values():
            future.cancel()
        self._prefetched.clear()
        self._queued.clear()
        self.n_hits += len(reused)
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
        pool = self.pool
        busy += sum(not f.done() for f in self._prefetched.values())
        while self._queued and busy < pool.workers:
            item = self._queued.pop(0)
            self._prefetched[item] = pool.submit(item)
            self.n_prefetched += 1
            busy += 1
