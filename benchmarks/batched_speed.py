"""The batched trainer against training one model at a time, and against plain PyTorch.

For each model (MLP on digits, LeNet-5 on MNIST-5k) and each K in ``--sizes``, times
three ways of doing the same K training runs of ``--steps`` SGD steps (batch 128):

- ``one at a time``: ``symloss.training.train`` per run, the loop a search runs today;
- ``stacked``: ``symloss.batched.train_many(..., batched=True)``, all K runs as one
  ``vmap``-ed computation (on the CPU the default rule trains LeNet-5 one at a time;
  this column shows why);
- ``plain torch``: K plain PyTorch loops (``torch.optim.SGD``, ``F.cross_entropy``,
  same model, initialisation and batch sampling), the floor a hand-written loop reaches.

Two workloads: K different candidate losses (known losses of the library, each with its
own edge weights, so each is a separate tree evaluation), and K seeds of one loss
(cross-entropy as a symbolic tree). Each cell is the median of ``--repeats`` runs,
interleaved; the first (warm-up) call of each method is not timed. One torch thread by
default, as each worker of a search trains.

Usage: python benchmarks/batched_speed.py [--device cuda] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from symloss.batched import Run, train_many
from symloss.library import known_losses
from symloss.network import LearnedLoss
from symloss.task import Task, make_task, resolve_data
from symloss.training import SGDSettings, train

SGD = SGDSettings(lr=0.01, batch_size=128)


def candidate_runs(k: int, kind: str) -> list[Run]:
    """K different candidate losses, seed 0: the library's known losses, each with its own
    edge weights (1 + j/100), so no two share a tree evaluation."""
    texts = [str(e) for e in known_losses(kind)]
    runs = []
    for j in range(k):
        loss = LearnedLoss(texts[j % len(texts)], kind)
        weights = [1.0 + j / 100] * loss.network.n_edges
        runs.append(Run(LearnedLoss(loss.expression, kind, weights), 0, SGD))
    return runs


def seed_runs(k: int, kind: str) -> list[Run]:
    """K seeds of cross-entropy (as a symbolic loss)."""
    return [Run(LearnedLoss("-(y * log(f))", kind), seed, SGD) for seed in range(k)]


def one_at_a_time(task: Task, runs: list[Run], steps: int) -> None:
    for run in runs:
        train(task, run.loss, steps, run.sgd, run.seed)


def stacked(task: Task, runs: list[Run], steps: int) -> None:
    train_many(task, runs, steps)


def plain_torch(task: Task, runs: list[Run], steps: int) -> None:
    for run in runs:
        model = task.new_model(run.seed)
        optimizer = torch.optim.SGD(model.parameters(), lr=run.sgd.lr)
        generator = torch.Generator().manual_seed(run.seed)
        for _ in range(steps):
            x, y = task.train.batch(run.sgd.batch_size, generator)
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()


METHODS: dict[str, Callable[[Task, list[Run], int], None]] = {
    "one at a time": one_at_a_time, "stacked": stacked, "plain torch": plain_torch}


def _sync(task: Task) -> None:
    if task.device.type == "cuda":
        torch.cuda.synchronize(task.device)


def measure(task: Task, runs: list[Run], steps: int, repeats: int) -> dict[str, float]:
    """Median seconds of each method over ``repeats`` interleaved runs (after a warm-up)."""
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    for method in METHODS.values():
        method(task, runs[:2], 2)
    for _ in range(repeats):
        for name, method in METHODS.items():
            _sync(task)
            started = time.perf_counter()
            method(task, runs, steps)
            _sync(task)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--models", nargs="+", default=["mlp", "lenet5"])
    parser.add_argument("--mlp-steps", type=int, default=300)
    parser.add_argument("--lenet-steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, as each of a search's workers)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    datasets = {"mlp": "digits", "lenet5": "mnist"}
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} "
          f"threads; seconds are medians of {args.repeats} interleaved runs")
    header = (f"{'model':8}{'workload':12}{'K':>4}{'steps':>7}{'one at a time':>15}"
              f"{'stacked':>10}{'speed-up':>10}{'plain torch':>13}{'stacked/plain':>15}")
    print(header)
    for model in args.models:
        data, kind = resolve_data(datasets[model])
        task = make_task(data, model, task=kind, device=args.device)
        steps = args.mlp_steps if model == "mlp" else args.lenet_steps
        for workload, make in (("losses", candidate_runs), ("seeds", seed_runs)):
            for k in args.sizes:
                t = measure(task, make(k, task.kind), steps, args.repeats)
                print(f"{model:8}{workload:12}{k:>4}{steps:>7}{t['one at a time']:>15.3f}"
                      f"{t['stacked']:>10.3f}{t['one at a time'] / t['stacked']:>9.2f}x"
                      f"{t['plain torch']:>13.3f}{t['stacked'] / t['plain torch']:>14.2f}x",
                      flush=True)


if __name__ == "__main__":
    main()
