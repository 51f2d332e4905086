"""Optimisers for the inner loops that update small tensors hundreds of times.

Fitness training, the poor-training check and the local search take one optimiser step
per iteration on small models or a few hundred values, where ``torch.optim``'s
bookkeeping (hooks, profiler records, state look-ups, and importing the compiler stack on
first use, about a second per worker process) costs more than the arithmetic.
:class:`SGD` and :class:`Adam` do the same arithmetic, in the same order, as
``torch.optim``'s default single-tensor updates on the CPU, so results are bit-identical.
:class:`ArrayAdam` is Adam on a numpy array, for the poor-training check's numpy loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class Adam:
    """Adam over a fixed list of tensors, updated in place by :meth:`step`.

    Parameters
    ----------
    tensors : sequence of torch.Tensor
        The tensors to optimise (leaves; they may require grad).
    lr : float
        Step size.
    betas : tuple of float
        Decay rates of the first and second moment estimates.
    eps : float
        Added to the denominator for numerical stability.
    """

    def __init__(
        self,
        tensors: Sequence[torch.Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.tensors = list(tensors)
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self._exp_avg = [torch.zeros_like(t, memory_format=torch.preserve_format)
                         for t in self.tensors]
        self._exp_avg_sq = [torch.zeros_like(t, memory_format=torch.preserve_format)
                            for t in self.tensors]
        self.steps = 0

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor]) -> None:
        """Update every tensor with its gradient (same order as ``tensors``)."""
        self.steps += 1
        step = float(self.steps)
        step_size = self.lr / (1 - self.beta1**step)
        bias_correction2_sqrt = (1 - self.beta2**step) ** 0.5
        for tensor, grad, exp_avg, exp_avg_sq in zip(
            self.tensors, grads, self._exp_avg, self._exp_avg_sq, strict=True
        ):
            exp_avg.lerp_(grad, 1 - self.beta1)
            exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
            tensor.addcdiv_(exp_avg, denom, value=-step_size)


class SGD:
    """SGD with momentum, Nesterov momentum and (L2) weight decay, like ``torch.optim.SGD``.

    Parameters
    ----------
    tensors : sequence of torch.Tensor
        The tensors to optimise.
    lr : float or sequence of float
        As for ``torch.optim.SGD``; or one rate per slice along the first dimension of
        every tensor (stacked models, :mod:`symloss.batched`), each slice updated
        bit-identically to a tensor of its own at that rate.
    momentum, weight_decay : float
        As for ``torch.optim.SGD`` (no dampening).
    nesterov : bool
        Use Nesterov momentum.
    """

    def __init__(
        self,
        tensors: Sequence[torch.Tensor],
        lr: float | Sequence[float],
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        self.tensors = list(tensors)
        self.lr, self.momentum, self.nesterov = lr, momentum, nesterov
        self.weight_decay = weight_decay
        self._buffers: list[torch.Tensor | None] = [None] * len(self.tensors)
        # -lr per tensor, or per slice shaped to broadcast over it: addcmul_ with that
        # rounds as add_(alpha=-lr) does (one fused multiply-add per element)
        self._negative_rates: list[float | torch.Tensor]
        if isinstance(lr, int | float):
            self._negative_rates = [-float(lr)] * len(self.tensors)
        else:
            rates = [-float(rate) for rate in lr]
            shapes = [tuple(t.shape) for t in self.tensors]
            if any(shape[:1] != (len(rates),) for shape in shapes):
                raise ValueError(f"{len(rates)} learning rates for tensors of shapes {shapes}; "
                                 "give one rate per slice along the first dimension")
            self._negative_rates = [
                torch.tensor(rates, dtype=t.dtype, device=t.device).view(-1, *(1,) * (t.dim() - 1))
                for t in self.tensors]

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor | None]) -> None:
        """Update every tensor with its gradient; a ``None`` gradient skips the tensor."""
        for i, (tensor, grad) in enumerate(zip(self.tensors, grads, strict=True)):
            if grad is None:
                continue
            if self.weight_decay != 0:
                grad = grad.add(tensor, alpha=self.weight_decay)
            if self.momentum != 0:
                buffer = self._buffers[i]
                if buffer is None:
                    buffer = self._buffers[i] = grad.detach().clone()
                else:
                    buffer.mul_(self.momentum).add_(grad)
                grad = grad.add(buffer, alpha=self.momentum) if self.nesterov else buffer
            rate = self._negative_rates[i]
            if isinstance(rate, float):
                tensor.add_(grad, alpha=rate)
            else:
                tensor.addcmul_(grad, rate)


class ArrayAdam:
    """:class:`Adam` on one numpy array, updated in place by :meth:`step`.

    :class:`Adam`'s formula (so ``torch.optim.Adam``'s), operation by operation, for
    loops that compute their gradients in numpy (see :mod:`symloss.dual`). The results
    agree to rounding, not bit for bit: torch's CPU kernels fuse multiply-adds (``lerp``,
    ``addcmul``) and its vectorised square root is not correctly rounded.

    Parameters
    ----------
    array : numpy.ndarray
        The array to optimise (float, C-contiguous).
    lr, betas, eps
        As for :class:`Adam`.
    """

    def __init__(
        self,
        array: np.ndarray,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.array = array
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self._exp_avg = np.zeros_like(array)
        self._exp_avg_sq = np.zeros_like(array)
        self._scratch = np.empty_like(array)
        self.steps = 0

    def step(self, grad: np.ndarray) -> None:
        """Update the array with its gradient."""
        self.steps += 1
        step = float(self.steps)
        step_size = self.lr / (1 - self.beta1**step)
        bias_correction2_sqrt = (1 - self.beta2**step) ** 0.5
        exp_avg, exp_avg_sq, scratch = self._exp_avg, self._exp_avg_sq, self._scratch
        # exp_avg.lerp_(grad, 1 - beta1): torch's lerp is a + w (b - a) for w < 0.5
        np.subtract(grad, exp_avg, out=scratch)
        scratch *= 1 - self.beta1
        exp_avg += scratch
        # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        exp_avg_sq *= self.beta2
        np.multiply(grad, 1 - self.beta2, out=scratch)
        scratch *= grad
        exp_avg_sq += scratch
        # denom = sqrt(exp_avg_sq) / bias_correction2_sqrt + eps
        denom = np.sqrt(exp_avg_sq)
        denom /= bias_correction2_sqrt
        denom += self.eps
        # array.addcdiv_(exp_avg, denom, value=-step_size)
        np.multiply(exp_avg, -step_size, out=scratch)
        scratch /= denom
        self.array += scratch
