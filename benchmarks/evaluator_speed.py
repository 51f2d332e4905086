"""Where the evaluator spends its time, and what symloss's training loop costs over plain torch.

Prints
  1. seconds per candidate, split by stage (key, structural, fingerprint, poor_training,
     local_search, fitness), for a handful of real candidates (the task's baseline, its
     library of known losses, and a few that the cheap checks reject);
  2. the ratio of symloss's fitness training (``symloss.training.train`` with a
     ``LearnedLoss`` of the baseline expression) to a plain PyTorch loop doing the same
     steps with ``F.cross_entropy`` / ``F.mse_loss`` (same model, initialisation, batch
     size and batch sampling); best of ``--repeats`` runs each, interleaved.

Usage: python benchmarks/evaluator_speed.py --task digits --steps 300 --repeats 5
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from symloss.config import preset
from symloss.evaluator import Evaluator
from symloss.library import known_losses
from symloss.network import LearnedLoss
from symloss.task import Task, make_task, resolve_data
from symloss.training import SGDSettings, sgd_settings, train

STAGES = ("key", "structural", "fingerprint", "poor_training", "local_search", "fitness")
REJECTED_EXAMPLES = ("y * y", "f - f + y", "sign(f - y)", "f * y")


def stage_table(task: Task, steps: int, seed: int) -> str:
    """Evaluate real candidates one by one and tabulate their stage timings."""
    settings = preset("quick").replace(fitness_steps=steps)
    # warm-up (SymPy, Adam, autograd first calls) on an expression not in the table
    Evaluator(task, settings.replace(meta_steps=2, fitness_steps=2), seed=seed).evaluate(
        "abs(f - y) * 3")
    evaluator = Evaluator(task, settings, seed=seed)
    candidates = [str(e) for e in known_losses(task.kind)] + list(REJECTED_EXAMPLES)
    width = max(len(c) for c in candidates) + 2
    header = "candidate".ljust(width) + "status".ljust(10)
    header += "".join(s.rjust(14) for s in STAGES) + "total".rjust(10)
    lines = [
        f"evaluator stage seconds per candidate ({task.describe()}; preset 'quick', "
        f"meta_steps={settings.meta_steps} x unroll {settings.unroll_steps}, "
        f"fitness_steps={steps})",
        header,
    ]
    sums = dict.fromkeys(STAGES, 0.0)
    counts = dict.fromkeys(STAGES, 0)
    for text in candidates:
        result = evaluator.evaluate(text)
        cells = ""
        for stage in STAGES:
            value = result.timings.get(stage)
            cells += ("-" if value is None else f"{value:.4f}").rjust(14)
            if value is not None:
                sums[stage] += value
                counts[stage] += 1
        lines.append(text.ljust(width) + result.status.ljust(10) + cells
                     + f"{sum(result.timings.values()):.3f}".rjust(10))
        if result.reason:
            lines.append(" " * width + f"  ({result.reason})")
    mean = "".join(
        (f"{sums[s] / counts[s]:.4f}" if counts[s] else "-").rjust(14) for s in STAGES
    )
    lines.append("mean where run".ljust(width + 10) + mean)
    lines.append(f"candidates trained: {evaluator.n_trained} of {len(candidates)}")
    return "\n".join(lines)


def plain_loop(task: Task, steps: int, sgd: SGDSettings, seed: int) -> torch.nn.Module:
    """The reference: a plain torch loop with the built-in baseline loss."""
    model = task.new_model(seed)
    optimizer = sgd.optimizer(model)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = task.train.batch(sgd.batch_size, generator)
        outputs = model(x)
        if task.kind == "classification":
            loss = F.cross_entropy(outputs, y)
        else:
            loss = F.mse_loss(outputs.reshape(y.shape), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model


def overhead(task: Task, steps: int, repeats: int, seed: int) -> str:
    """Best-of-``repeats`` seconds of symloss's train() vs the plain loop, interleaved."""
    sgd = sgd_settings(preset("quick"))
    loss = LearnedLoss(task.baseline, task.kind)
    train(task, loss, 10, sgd, seed)  # warm-up both paths
    plain_loop(task, 10, sgd, seed)
    best_symloss, best_plain = math.inf, math.inf
    metric_symloss = metric_plain = math.nan
    for _ in range(repeats):
        started = time.perf_counter()
        result = train(task, loss, steps, sgd, seed)
        best_symloss = min(best_symloss, time.perf_counter() - started)
        started = time.perf_counter()
        model = plain_loop(task, steps, sgd, seed)
        best_plain = min(best_plain, time.perf_counter() - started)
        metric_symloss = task.metric(result.model, task.val)
        metric_plain = task.metric(model, task.val)
    name = "F.cross_entropy" if task.kind == "classification" else "F.mse_loss"
    return "\n".join([
        f"fitness training, {steps} SGD steps, batch {sgd.batch_size}, best of {repeats} "
        "(interleaved)",
        f"  symloss train() + LearnedLoss({task.baseline}): {best_symloss:.4f} s "
        f"({1e3 * best_symloss / steps:.3f} ms/step), validation metric {metric_symloss:.4f}",
        f"  plain torch loop + {name}: {best_plain:.4f} s "
        f"({1e3 * best_plain / steps:.3f} ms/step), validation metric {metric_plain:.4f}",
        f"  ratio symloss / plain: {best_symloss / best_plain:.2f}",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("sine", "digits", "diabetes", "mnist"), default="digits")
    parser.add_argument("--model", choices=("mlp", "linear", "lenet5"), default="mlp")
    parser.add_argument("--steps", type=int, default=300, help="fitness-training SGD steps")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (best of)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1, as in process-pool workers)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data, kind = resolve_data(args.task)
    task = make_task(data, args.model, task=kind)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), model {args.model}")
    print(stage_table(task, args.steps, args.seed))
    print()
    print(overhead(task, args.steps, args.repeats, args.seed))


if __name__ == "__main__":
    main()
