"""Executors: in process, a local process pool, Ray; results in order; clear errors."""

from __future__ import annotations

import os
import sys
import time

import pytest
import torch

from symloss.evaluator import Evaluator, score
from symloss.executors import (
    InProcessExecutor,
    ProcessExecutor,
    make_executor,
    single_torch_thread,
)


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


@pytest.mark.parametrize("n_jobs", [0, -2])
def test_bad_job_counts(n_jobs):
    with pytest.raises(ValueError, match="n_jobs must be a positive number of workers or -1"):
        make_executor("auto", n_jobs, _scaled, 1)


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
