"""Executors: in process, a local process pool, Ray; results in order; clear errors."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from symloss.evaluator import Evaluator
from symloss.executors import (
    InProcessExecutor,
    ProcessExecutor,
    _interrupts_deferred,
    make_executor,
    single_torch_thread,
    workers_for,
)
from symloss.scoring import score


def _scaled(payload: int, item: int) -> tuple[int, int]:
    return payload * item, os.getpid()


def test_in_process_for_one_job():
    executor = make_executor("auto", 1, _scaled, 3)
    assert isinstance(executor, InProcessExecutor)
    assert [r[0] for r in executor.map([1, 2, 3])] == [3, 6, 9]
    executor.close()


def test_process_pool_keeps_order_and_uses_workers():
    executor = make_executor("process", 2, _scaled, 5)
    try:
        assert isinstance(executor, ProcessExecutor)
        results = list(executor.map(list(range(8))))
    finally:
        executor.close()
    assert [r[0] for r in results] == [5 * i for i in range(8)]
    assert os.getpid() not in {pid for _, pid in results}


def _slow(payload: float, item: int) -> int:
    time.sleep(payload)
    return item


def test_process_pool_submits_and_stops_unwanted_work_at_close():
    """Futures for single items; a still-running one (unused speculation) is stopped
    at close rather than waited for."""
    executor = ProcessExecutor(_slow, 0.0, 2)
    assert executor.submit(7).result() == 7
    executor.close()
    executor = ProcessExecutor(_slow, 30.0, 2)
    future = executor.submit(1)
    while not future.running():
        time.sleep(0.01)
    started = time.perf_counter()
    executor.close()
    assert time.perf_counter() - started < 10


def test_an_interrupted_map_stops_its_workers_at_close():
    # a Ctrl-C while waiting on map's results leaves items running that nobody wants
    executor = ProcessExecutor(_slow, 30.0, 2)
    results = executor.map([1, 2, 3])
    time.sleep(0.5)
    started = time.perf_counter()
    executor.close()
    assert time.perf_counter() - started < 10
    with pytest.raises(Exception):  # noqa: B017 -- whichever error a stopped pool gives
        next(results)


def _slow_pid(payload: float, item: int) -> int:
    time.sleep(payload)
    return os.getpid()


def test_workers_leave_ctrl_c_to_the_parent():
    # built off the main thread, where no handler is set around the fork: the workers'
    # own setting is what is tested
    made: list[ProcessExecutor] = []
    thread = threading.Thread(target=lambda: made.append(ProcessExecutor(_slow_pid, 1.0, 2)))
    thread.start()
    thread.join()
    executor = made[0]
    try:
        pids = set(executor.map([0, 1]))
        results = executor.map([2, 3])
        time.sleep(0.3)
        for pid in pids:  # as a terminal's Ctrl-C, which reaches the whole process group
            os.kill(pid, signal.SIGINT)
        assert set(results) == pids  # the items ran to their end
    finally:
        executor.close()


def test_a_ctrl_c_while_workers_start_is_raised_after_not_lost():
    # forking runs at-fork hooks, where a KeyboardInterrupt would be printed and dropped
    reached = []
    with pytest.raises(KeyboardInterrupt), _interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        reached.append(True)
    assert reached == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_while_workers_start_stops_them(monkeypatch):
    """The held Ctrl-C is raised inside the executor's constructor, whose caller never
    gets the pool to close: the constructor stops the workers itself, or the
    interpreter's exit would wait on them forever."""
    from concurrent.futures import ProcessPoolExecutor

    submit = ProcessPoolExecutor.submit

    def interrupted(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return submit(self, *args, **kwargs)

    monkeypatch.setattr(ProcessPoolExecutor, "submit", interrupted)
    before = set(threading.enumerate())
    with pytest.raises(KeyboardInterrupt):
        ProcessExecutor(score, None, 2)
    assert multiprocessing.active_children() == []
    for thread in set(threading.enumerate()) - before:  # the pool's manager, which exit joins
        thread.join(timeout=30)
        assert not thread.is_alive()


def test_unknown_executor():
    with pytest.raises(ValueError, match="unknown executor 'dask'"):
        make_executor("dask", 1, _scaled, 1)


def test_ray_missing_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"pip install 'symloss\[ray\]'"):
        make_executor("ray", 1, _scaled, 1)


def test_ray_scores_like_in_process(sine_task, tiny_settings):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'symloss[ray]')")
    settings = tiny_settings.replace(meta_steps=2, fitness_steps=20)
    candidates = ["square(f - y)", "abs(f - y)", "log(1 + square(f - y))"]
    local = Evaluator(sine_task, settings, seed=0).evaluate_many(candidates)
    ray.init(num_cpus=1, include_dashboard=False)
    try:
        executor = make_executor("ray", 1, score, (sine_task, settings, 0))
        remote = Evaluator(sine_task, settings, seed=0, executor=executor).evaluate_many(candidates)
    finally:
        ray.shutdown()
    assert [(e.status, e.fitness, e.weights) for e in remote] == [
        (e.status, e.fitness, e.weights) for e in local
    ]


def test_single_thread_restores_the_callers_setting():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError), single_torch_thread():
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


_ORPHAN_SCRIPT = """
import multiprocessing, sys, threading, time
from symloss.executors import ProcessExecutor

def double(payload, item):
    return 2 * item

def start():
    pool = ProcessExecutor(double, None, 2)
    assert list(pool.map([1, 2])) == [2, 4]
    print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)

if __name__ == "__main__":
    if sys.argv[1] == "thread":  # forked by a thread that is not the main thread
        worker = threading.Thread(target=start)
        worker.start()
        worker.join()
    else:
        start()
    time.sleep(600)
"""


def _running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody has reaped yet does not run)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("forked_by", ["main", "thread"])
def test_workers_end_when_their_parent_is_killed(tmp_path, forked_by):
    script = tmp_path / "orphans.py"
    script.write_text(_ORPHAN_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    parent = subprocess.Popen([sys.executable, str(script), forked_by], env=env,
                              stdout=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(workers) == 2
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_running(pid) for pid in workers)
    finally:  # never leave a process behind, whatever failed
        parent.kill()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_workers_are_capped_at_the_cores_with_a_warning_and_at_the_work():
    cores = os.cpu_count() or 1
    with pytest.warns(UserWarning, match=f"n_jobs=1000 is more than the {cores} CPU cores"):
        assert workers_for(1000) == cores
    assert workers_for(-1) == cores
    assert workers_for(-1, work=1) == 1
    with pytest.warns(UserWarning, match="more than the"):
        executor = make_executor("process", 1000, _scaled, 5, work=1)
    assert isinstance(executor, InProcessExecutor)  # one item: no pool at all
    executor.close()


@pytest.mark.parametrize("n_jobs", [1.5, "2", True, 0, -2])
def test_n_jobs_must_be_a_whole_number_of_workers(n_jobs):
    with pytest.raises(ValueError, match="n_jobs must be a positive whole number"):
        make_executor("auto", n_jobs, _scaled, 5)
