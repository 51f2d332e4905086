"""symloss's lean optimisers take exactly torch.optim's steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from symloss.optim import SGD, Adam, ArrayAdam


def _problem(seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(7, 3, generator=generator), torch.randn(5, generator=generator,
                                                                    dtype=torch.float64)]
    return tensors, torch.randn(7, 3, generator=generator)


def _value(tensors: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    a, b = tensors
    return (a - target).abs().pow(1.5).sum() + (b.tanh() * 3).square().sum()


def _trajectories(make_ours, make_torch, steps: int = 25) -> tuple[list, list]:
    start, target = _problem(0)
    ours = [t.clone().requires_grad_(True) for t in start]
    theirs = [t.clone().requires_grad_(True) for t in start]
    mine, reference = make_ours(ours), make_torch(theirs)
    for _ in range(steps):
        mine.step(torch.autograd.grad(_value(ours, target), ours))
        reference.zero_grad()
        _value(theirs, target).backward()
        reference.step()
    return ours, theirs


@pytest.mark.parametrize("lr", [1e-3, 0.1])
def test_adam_is_torch_adam_bit_for_bit(lr):
    ours, theirs = _trajectories(lambda t: Adam(t, lr=lr), lambda t: torch.optim.Adam(t, lr=lr))
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert not torch.equal(ours[0], _problem(0)[0][0])  # it moved


@pytest.mark.parametrize(("momentum", "nesterov", "weight_decay"),
                         [(0.0, False, 0.0), (0.9, False, 0.0), (0.9, True, 5e-4),
                          (0.5, False, 1e-2)])
def test_sgd_is_torch_sgd_bit_for_bit(momentum, nesterov, weight_decay):
    options = dict(lr=0.01, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    ours, theirs = _trajectories(lambda t: SGD(t, **options),
                                 lambda t: torch.optim.SGD(t, **options))
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_sgd_skips_tensors_without_a_gradient():
    a, b = torch.ones(3), torch.ones(2)
    SGD([a, b], lr=0.5, momentum=0.9).step([torch.ones(3), None])
    assert torch.equal(a, torch.full((3,), 0.5)) and torch.equal(b, torch.ones(2))



@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_with_a_rate_per_slice_steps_each_slice_as_alone(momentum):
    """Stacked models at their own rates: each slice's steps are bit for bit those of a
    tensor of its own at its rate (what lets runs of different rates train together)."""
    generator = torch.Generator().manual_seed(1)
    rates = [0.3, 0.01, 0.1]
    stacked = [torch.randn(3, 33, 7, generator=generator), torch.randn(3, 5, generator=generator,
                                                                        dtype=torch.float64)]
    alone = [[t[k].clone() for t in stacked] for k in range(3)]
    together = SGD(stacked, lr=rates, momentum=momentum, weight_decay=1e-3)
    singles = [SGD(tensors, lr=rate, momentum=momentum, weight_decay=1e-3)
               for tensors, rate in zip(alone, rates, strict=True)]
    for _ in range(5):
        grads = [torch.randn(t.shape, generator=generator, dtype=t.dtype) for t in stacked]
        together.step(grads)
        for k, optimizer in enumerate(singles):
            optimizer.step([g[k] for g in grads])
    for k in range(3):
        assert all(torch.equal(t[k], a) for t, a in zip(stacked, alone[k], strict=True))
    with pytest.raises(ValueError, match="one rate per slice"):
        SGD(stacked, lr=[0.1, 0.2])

@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_array_adam_takes_adams_steps_to_rounding(dtype, rtol):
    """The same gradients (of every size, some zero) move both alike. Not bit for bit:
    torch's kernels fuse multiply-adds and round their square roots differently."""
    generator = torch.Generator().manual_seed(0)
    tensor = torch.randn(3, 50, generator=generator, dtype=dtype)
    array = tensor.numpy().copy()
    reference, ours = Adam([tensor], lr=0.01), ArrayAdam(array, lr=0.01)
    for step in range(300):
        grad = torch.randn(3, 50, generator=generator, dtype=dtype) * 10.0 ** (step % 9 - 4)
        grad[0, step % 50] = 0.0
        reference.step([grad])
        ours.step(grad.numpy())
    assert array.dtype == tensor.numpy().dtype and ours.steps == 300
    np.testing.assert_allclose(array, tensor.numpy(), rtol=rtol, atol=rtol)
    assert not np.allclose(array, torch.randn(3, 50, generator=torch.Generator().manual_seed(0),
                                              dtype=dtype).numpy(), rtol=1e-3)  # it moved
