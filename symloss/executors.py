"""Where candidate scoring runs: in this process, a local process pool, or Ray.

An executor maps a module-level function ``fn(payload, item)`` over items, in order. The
payload (task, settings, seed) is shipped to each worker once, not per item.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import numbers
import os
import signal
import sys
import threading
import time
import warnings
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import torch

EXECUTORS = ("auto", "process", "ray")
_WORKER_STATE: dict[str, Any] = {}
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
PARENT_POLL_SECONDS = 1.0
"""How often a worker that cannot ask the kernel for a parent-death signal checks
whether its parent still runs."""


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    """Run torch CPU ops on one intra-op thread, restoring the caller's setting after.

    Candidate losses train small models whose ops are too small to gain from threads
    (a tiny MLP step measured 20x slower with two threads on a busy two-core machine);
    parallelism comes from evaluating candidates in separate workers instead. It also
    makes in-process results bit-identical to the single-threaded pool workers'.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Executor(ABC):
    """Runs ``fn(payload, item)`` for many items, returning results in order."""

    futures: bool = False
    """Whether it also runs single items as futures (``submit``) on ``workers`` workers,
    which speculation needs (:mod:`symloss.speculation`)."""

    def __init__(self, fn: Callable[[Any, Any], Any], payload: Any) -> None:
        self.fn = fn
        self.payload = payload

    @abstractmethod
    def map(self, items: Sequence[Any]) -> Iterator[Any]:
        """Results of ``fn(payload, item)`` for every item, in order, as they finish."""

    def close(self) -> None:  # noqa: B027 -- optional hook, nothing to release by default
        """Release workers."""


class InProcessExecutor(Executor):
    """Runs items one after another in this process."""

    def map(self, items: Sequence[Any]) -> Iterator[Any]:
        return (self.fn(self.payload, item) for item in items)


def _exit_with_parent(parent: int, by_signal: bool) -> None:
    """End this worker process when its parent ends, however it ends.

    A parent killed outright (``kill -9``, the out-of-memory killer) cannot stop its
    workers, which would otherwise wait on their queue forever, each holding its copy
    of the task. With ``by_signal`` on Linux the kernel kills the worker when the
    thread that forked it ends (``prctl(PR_SET_PDEATHSIG)``; the pool passes it only
    when that thread is the main thread, which lives as long as the process);
    otherwise a daemon thread polls the parent's pid every
    :data:`PARENT_POLL_SECONDS`.
    """
    if by_signal and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0:
                if os.getppid() != parent:  # it ended before the signal was asked for
                    os._exit(1)
                return
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                     name="symloss-parent-watch").start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)  # no clean-up: the worker writes nothing, and its parent is gone


def _init_worker(
    fn: Callable[[Any, Any], Any], payload: Any, parent: int, parent_signal: bool
) -> None:
    _exit_with_parent(parent, parent_signal)
    # One intra-op thread per worker, as in process (see single_torch_thread).
    torch.set_num_threads(1)
    # Ctrl-C in a terminal reaches every process of the group: the parent alone decides,
    # and stops the workers (ProcessExecutor.close)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_STATE["fn"], _WORKER_STATE["payload"] = fn, payload


def _started() -> None:
    """Nothing: the first item of a pool, which makes it start its workers."""


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl-C that arrives inside the block and raise it after.

    Forking runs the parent's at-fork hooks (logging's lock release, for one), and a
    KeyboardInterrupt raised inside a hook is printed and dropped, so a Ctrl-C while a
    pool starts its workers was lost. Only the main thread can set signal handlers;
    elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt


def _run_in_worker(item: Any) -> Any:
    return _WORKER_STATE["fn"](_WORKER_STATE["payload"], item)


def _run_single_threaded(fn: Callable[[Any, Any], Any], payload: Any, item: Any) -> Any:
    with single_torch_thread():
        return fn(payload, item)


class ProcessExecutor(Executor):
    """A pool of ``n_jobs`` local worker processes (forked where the platform allows).

    Besides :meth:`map`, it runs single items as futures (:meth:`submit`), which lets
    the evaluator keep idle workers busy with speculative work. Workers end when this
    process ends, even when it is killed (see :func:`_exit_with_parent`).
    """

    futures = True

    def __init__(self, fn: Callable[[Any, Any], Any], payload: Any, n_jobs: int) -> None:
        super().__init__(fn, payload)
        self.workers = n_jobs
        self._submitted: weakref.WeakSet[Future] = weakref.WeakSet()
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        # the workers are forked by this thread (the first submit below starts them all)
        main_thread = threading.current_thread() is threading.main_thread()
        self._pool = ProcessPoolExecutor(
            max_workers=n_jobs, mp_context=context, initializer=_init_worker,
            initargs=(fn, payload, os.getpid(), main_thread),
        )
        try:
            with _interrupts_deferred():
                self._pool.submit(_started)  # forks the workers now, not at some later item
        except BaseException:
            # a Ctrl-C held while the workers started: the caller never gets this pool to
            # close, and the interpreter's exit would wait on its workers forever
            self._stop()
            raise

    def map(self, items: Sequence[Any]) -> Iterator[Any]:
        futures = [self.submit(item) for item in items]
        return (future.result() for future in futures)

    def submit(self, item: Any) -> Future:
        """A future of ``fn(payload, item)``, queued behind the items submitted before."""
        future = self._pool.submit(_run_in_worker, item)
        self._submitted.add(future)
        return future

    def close(self) -> None:
        """Release the workers; stop them when an item still runs (speculative work
        nobody will use, or an interrupted search) rather than wait for it."""
        if all(future.done() for future in self._submitted):
            self._pool.shutdown(wait=True, cancel_futures=True)
            return
        self._stop()

    def _stop(self) -> None:
        """Stop the workers, whatever they are running."""
        # ProcessPoolExecutor has no public way to stop running work before Python 3.14
        workers = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in workers:
            process.terminate()
        for process in workers:
            process.join()


@contextlib.contextmanager
def mapping(
    kind: str, n_jobs: int, fn: Callable[[Any, Any], Any], payload: Any,
    work: int | None = None, lazy: bool = False,
) -> Iterator[Callable[[Sequence[Any]], Any]]:
    """A function giving ``fn(payload, item)`` of every item, in order, spread over the
    executor :func:`make_executor` builds for ``kind`` and ``n_jobs``, with torch on one
    intra-op thread here; the executor serves the whole block, so work asked for in
    several rounds starts its workers once, and it is closed on the way out (stopping
    work still running after an error or a Ctrl-C). It returns a list, or with ``lazy``
    an iterator that gives each result as soon as it and those before it are done."""
    pool = make_executor(kind, n_jobs, fn, payload, work)

    def run(items: Sequence[Any]) -> Any:
        results = pool.map(list(items)) if items else iter(())
        return results if lazy else list(results)

    try:
        with single_torch_thread():
            yield run
    finally:
        pool.close()


class RayExecutor(Executor):
    """Runs items as Ray tasks on the cluster ``ray.init`` connects to."""

    def __init__(self, fn: Callable[[Any, Any], Any], payload: Any) -> None:
        super().__init__(fn, payload)
        try:
            import ray
        except ImportError as error:
            raise ImportError(
                "executor='ray' needs Ray: pip install 'symloss[ray]', then connect with "
                "ray.init(address=...) before fit (or let symloss start a local Ray)"
            ) from error
        if not ray.is_initialized():
            ray.init()
        self._ray = ray
        self._payload_ref = ray.put(payload)
        self._remote = ray.remote(_run_single_threaded)

    def map(self, items: Sequence[Any]) -> Iterator[Any]:
        refs = [self._remote.remote(self.fn, self._payload_ref, item) for item in items]
        return (self._ray.get(ref) for ref in refs)


def check_n_jobs(n_jobs: Any) -> int:
    """``n_jobs`` as an int: a positive number of workers or -1 (one per core), or a
    ValueError saying so (``1.5``, ``"2"`` and ``True`` are refused, not guessed at)."""
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral) or (
        n_jobs == 0 or n_jobs < -1
    ):
        raise ValueError(
            f"n_jobs must be a positive whole number of workers or -1 (all cores), got "
            f"{n_jobs!r}"
        )
    return int(n_jobs)


def workers_for(n_jobs: int, work: int | None = None, warn: bool = True) -> int:
    """Worker processes for ``n_jobs`` (see :func:`check_n_jobs`): never more than the
    CPU cores (more only compete for them, each holding a copy of the task; asking for
    more warns, where ``warn``) nor than ``work`` items, when known."""
    cores = os.cpu_count() or 1
    if check_n_jobs(n_jobs) > cores and warn:
        warnings.warn(f"n_jobs={n_jobs} is more than the {cores} CPU cores; using {cores} "
                      "worker processes", stacklevel=1)  # one place: shown once
    workers = cores if n_jobs == -1 else min(n_jobs, cores)
    return max(1, min(workers, work)) if work is not None else workers


def make_executor(
    kind: str, n_jobs: int, fn: Callable[[Any, Any], Any], payload: Any,
    work: int | None = None,
) -> Executor:
    """An executor for ``kind`` ("auto", "process" or "ray") and ``n_jobs``.

    ``n_jobs=1`` runs in process; ``-1`` means one worker per CPU core. Local workers
    are capped at the cores and at ``work``, the items the executor will have at once
    when known (see :func:`workers_for`).
    """
    if kind not in EXECUTORS:
        raise ValueError(f"unknown executor {kind!r}; choose one of {EXECUTORS}")
    check_n_jobs(n_jobs)
    if kind == "ray":
        return RayExecutor(fn, payload)
    workers = workers_for(n_jobs, work)
    if workers == 1:
        return InProcessExecutor(fn, payload)
    return ProcessExecutor(fn, payload, workers)
