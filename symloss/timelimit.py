"""Run a computation under a time limit, with a fallback when it fails or runs over.

SymPy's ``simplify`` can run for minutes on some loss expressions, and a few forms make
it raise. Rendering a loss must do neither, so it goes through :func:`attempt`, which
returns a cheaper fallback instead.

The limit is a ``SIGALRM`` timer (``signal.setitimer``): it interrupts pure-Python work
such as SymPy's from the main thread, and costs nothing when the work finishes in time.
A worker thread cannot be stopped from outside, so where the timer is unavailable
(threads other than the main one, platforms without ``SIGALRM``) a computation that may
run unboundedly is not started at all: :func:`attempt` returns the fallback at once.
An enclosing timer (another :func:`attempt`, pytest-timeout) is paused and re-armed
with the time it had left, so it still fires when it is due.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_REPEAT_SECONDS = 0.05


class _Expired(BaseException):
    """Raised by the timer inside the limited call. A BaseException, so that the
    ``except Exception`` blocks inside SymPy cannot swallow it."""


def can_limit_time() -> bool:
    """True when this thread can bound a computation in time (main thread, ``SIGALRM``)."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def attempt(
    fn: Callable[[], T],
    fallback: Callable[[], T],
    seconds: float,
    *,
    unlimited_ok: bool = False,
) -> T:
    """``fn()`` if it returns within ``seconds`` without raising, else ``fallback()``.

    Parameters
    ----------
    fn : callable
        The computation (no arguments).
    fallback : callable
        Called for the result when ``fn`` raises an ``Exception``, runs over the limit,
        or cannot be bounded here. It must itself be cheap and never raise.
    seconds : float
        The time limit.
    unlimited_ok : bool
        Where time cannot be limited (see :func:`can_limit_time`), run ``fn`` anyway
        (still falling back on an exception). Pass True only for work that is bounded by
        its input, such as printing; without it such places get the fallback.

    Returns
    -------
    The result of ``fn`` or of ``fallback``.
    """
    if not can_limit_time():
        if not unlimited_ok:
            return fallback()
        try:
            return fn()
        except Exception:
            return fallback()
    try:
        return _within(fn, seconds)
    except (_Expired, Exception):
        return fallback()


def _within(fn: Callable[[], T], seconds: float) -> T:
    """``fn()`` under a SIGALRM timer of ``seconds``; raises :class:`_Expired` on expiry.
    An enclosing timer is paused (setitimer returns it atomically) and re-armed after."""
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, 0)
    outer_handler = signal.getsignal(signal.SIGALRM)
    started = time.monotonic()

    def expire(signum: int, frame: object) -> None:
        raise _Expired

    signal.signal(signal.SIGALRM, expire)
    try:
        limit = min(seconds, outer_delay) if outer_delay > 0 else seconds
        # repeating: an exception raised inside a weakref or __del__ callback is
        # swallowed by Python, so the timer fires again until one reaches ``fn``
        signal.setitimer(signal.ITIMER_REAL, max(limit, 1e-6), _REPEAT_SECONDS)
        try:
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, outer_handler)
        if outer_delay > 0:
            left = outer_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), outer_interval)
