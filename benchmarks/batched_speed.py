"""The batched trainer against training one model at a time, and against plain PyTorch.

For each model (MLP on digits, LeNet-5 on MNIST-5k) and each K in ``--sizes``, times
three ways of doing the same K training runs of ``--steps`` SGD steps (batch 128):

- ``one at a time``: ``symloss.training.train`` per run, the loop a search runs today;
- ``stacked``: ``symloss.batched.train_many(..., batched=True)``, all K runs as one
  stacked computation, LeNet-5 included (on the CPU, ``train_many``'s default rule trains
  LeNet-5 one at a time; its rows show why);
- ``plain torch``: K plain PyTorch loops (``torch.optim.SGD``, ``F.cross_entropy``,
  same model, initialisation and batch sampling), the floor a hand-written loop reaches.

Two workloads: K different candidate losses (known losses of the library, each with its
own edge weights, so each is a separate tree evaluation), and K seeds of one loss
(cross-entropy as a symbolic tree). Each cell is the median of ``--repeats`` runs,
interleaved; the first (warm-up) call of each method is not timed. One torch thread by
default, as each worker of a search trains.

With ``--formulations``, prints instead the milliseconds of one forward and backward
pass of K models in the ways the stacked trainer could run them: MLP as K module calls,
as ``torch.func.vmap`` of ``functional_call``, and as a chain of ``baddbmm``; LeNet-5's
two convolutions as K plain convolutions and as one grouped convolution.

Usage: python benchmarks/batched_speed.py [--device cuda] [--repeats 3] [--threads 1]
       python benchmarks/batched_speed.py --formulations
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from symloss.batched import Run, train_many
from symloss.library import known_losses
from symloss.models import MLP
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
    train_many(task, runs, steps, batched=True)


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


def _median_ms(fn: Callable[[], object], device: str, calls: int = 20, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - started) / calls * 1e3)
    return statistics.median(times)


def formulations(sizes: list[int], device: str) -> None:
    """Forward + backward milliseconds of K models in each formulation."""
    batch = 128
    print(f"forward + backward of K models on a batch of {batch}, ms (median of 5 x 20 calls)")
    print(f"{'K':>4}{'MLP: K calls':>14}{'vmap':>10}{'baddbmm':>10}"
          f"{'LeNet-5 convs: K calls':>24}{'grouped':>10}")
    for k in sizes:
        models = [MLP(64, 10).to(device) for _ in range(k)]
        names = [name for name, _ in models[0].named_parameters()]
        stacked = [torch.stack([dict(m.named_parameters())[n].detach() for m in models])
                   .requires_grad_(True) for n in names]
        x = torch.randn(k, batch, 64, device=device)

        def calls(models=models, x=x) -> None:
            for j, model in enumerate(models):
                torch.autograd.grad(model(x[j]).sum(), list(model.parameters()))

        def call(params, inputs, names=names, model=models[0]):
            return functional_call(model, dict(zip(names, params, strict=True)), (inputs,))

        batched_call = vmap(call)

        def vmapped(stacked=stacked, x=x, batched_call=batched_call) -> None:
            torch.autograd.grad(batched_call(tuple(stacked), x).sum(), stacked)

        def bmm_chain(stacked=stacked, x=x) -> None:
            h = x
            for i in range(0, len(stacked), 2):
                h = torch.baddbmm(stacked[i + 1].unsqueeze(1), h, stacked[i].transpose(1, 2))
                h = torch.relu(h) if i + 2 < len(stacked) else h
            torch.autograd.grad(h.sum(), stacked)

        images = torch.randn(k, batch, 1, 28, 28, device=device)
        conv1 = torch.randn(k, 6, 1, 5, 5, device=device, requires_grad=True)
        conv2 = torch.randn(k, 16, 6, 5, 5, device=device, requires_grad=True)

        def conv_calls(images=images, conv1=conv1, conv2=conv2) -> None:
            total = sum(F.conv2d(F.max_pool2d(F.conv2d(images[j], conv1[j], padding=2), 2),
                                 conv2[j]).sum() for j in range(len(images)))
            torch.autograd.grad(total, (conv1, conv2))

        def grouped(images=images, conv1=conv1, conv2=conv2, k=k) -> None:
            h = F.conv2d(images.transpose(0, 1).flatten(1, 2), conv1.flatten(0, 1),
                         padding=2, groups=k)
            h = F.conv2d(F.max_pool2d(h, 2), conv2.flatten(0, 1), groups=k)
            torch.autograd.grad(h.sum(), (conv1, conv2))

        cells = [_median_ms(fn, device) for fn in (calls, vmapped, bmm_chain)]
        conv_cells = [_median_ms(fn, device, calls=3) for fn in (conv_calls, grouped)]
        print(f"{k:>4}{cells[0]:>14.2f}{cells[1]:>10.2f}{cells[2]:>10.2f}"
              f"{conv_cells[0]:>24.2f}{conv_cells[1]:>10.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--models", nargs="+", default=["mlp", "lenet5"])
    parser.add_argument("--mlp-steps", type=int, default=300)
    parser.add_argument("--lenet-steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--formulations", action="store_true",
                        help="time the formulations of one stacked step instead")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, as each of a search's workers)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.formulations:
        formulations(args.sizes, args.device)
        return
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
