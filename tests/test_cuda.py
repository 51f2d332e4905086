"""The CUDA paths: tasks, training, every evaluator stage and a whole search on a GPU.

Marked ``cuda`` (``pytest -m cuda``, run by ``benchmarks/gpu_check.sh``) and skipped,
with the reason, where no CUDA device is available.
"""

from __future__ import annotations

import math

import pytest
import torch

import symloss
from symloss.evaluator import Evaluator
from symloss.local_search import local_search
from symloss.network import LearnedLoss
from symloss.records import OK, REJECTED
from symloss.task import make_task, resolve_data
from symloss.training import SGDSettings, train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA device (torch.cuda.is_available() is False)"),
]


@pytest.fixture(scope="module")
def tasks():
    data, kind = resolve_data("diabetes")
    return make_task(data, "linear", task=kind), make_task(data, "linear", task=kind,
                                                          device="cuda")


def test_task_models_and_training_on_the_gpu(tasks):
    cpu, gpu = tasks
    assert gpu.train.x.is_cuda and gpu.val.y.is_cuda
    a, b = gpu.new_model(3), gpu.new_model(3)
    assert all(p.is_cuda for p in a.parameters())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    # the same initialisation as on the CPU: models are built there, then moved
    assert all(torch.equal(p.cpu(), q) for p, q in zip(a.parameters(),
                                                       cpu.new_model(3).parameters(),
                                                       strict=True))
    loss = LearnedLoss("square(f - y)", "regression")
    sgd = SGDSettings(lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    on_gpu, on_cpu = train(gpu, loss, 100, sgd, 0), train(cpu, loss, 100, sgd, 0)
    assert not on_gpu.diverged
    assert gpu.metric(on_gpu.model, gpu.val) == pytest.approx(
        cpu.metric(on_cpu.model, cpu.val), rel=1e-3)


def test_every_evaluator_stage_on_the_gpu(tasks, tiny_settings):
    cpu, gpu = tasks
    settings = tiny_settings.replace(meta_steps=3, fitness_steps=40, lr=0.05, normalize=False)
    generations = [["square(f - y)", "abs(f - y)", "f * y", "y * y"],
                   ["square(f - y) * 0.001", "log(1 + square(f - y))"]]
    ev_gpu, ev_cpu = Evaluator(gpu, settings), Evaluator(cpu, settings)
    for texts in generations:
        on_gpu, on_cpu = ev_gpu.evaluate_many(texts), ev_cpu.evaluate_many(texts)
        assert [e.status for e in on_gpu] == [e.status for e in on_cpu]
        assert [e.reason.split(":")[0] for e in on_gpu] == [e.reason.split(":")[0]
                                                            for e in on_cpu]
        for a, b in zip(on_gpu, on_cpu, strict=True):
            if math.isfinite(b.fitness):
                assert a.fitness == pytest.approx(b.fitness, rel=1e-3)
    assert on_gpu[0].status == REJECTED and on_gpu[0].reason.startswith("raced:")
    assert on_gpu[1].status == OK and set(on_gpu[1].timings) >= {"local_search", "fitness"}


def test_local_search_on_the_gpu(tasks, tiny_settings):
    _, gpu = tasks
    result = local_search(gpu, "square(f - y) * 0.01", tiny_settings.replace(meta_steps=5), 0)
    assert len(result.objective) == 5 and all(math.isfinite(w) for w in result.weights)


def test_a_search_on_the_gpu_evaluates_in_process(tmp_path):
    search = symloss.SymbolicLossSearch(preset="tiny", settings={"unroll_steps": 5},
                                        device="cuda", n_jobs=2, random_state=0,
                                        verbose=False, run_dir=tmp_path)
    with pytest.warns(UserWarning, match="evaluating in this process"):
        search.fit("sine", "mlp")
    assert search.task_.device.type == "cuda"
    x = torch.randn(8, 1, device="cuda")
    assert torch.isfinite(search.best_loss_.to("cuda")(x, x + 1))
