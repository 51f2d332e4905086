"""ML3: a neural meta-loss trained by unrolled differentiation (Bechtle et al., 2021).

The loss is a small MLP ``2 -> 50 -> 50 -> 1`` (ReLU hidden layers, softplus output, no
biases) applied to every ``(f, y)`` pair, where ``f`` and ``y`` are the same transformed
outputs and targets a :class:`~symloss.network.LearnedLoss` sees: the values are summed
over classes (or regression outputs) and averaged over the batch. Its
parameters are learned only by the local-search procedure of EvoMAL: fresh model, a few
differentiable SGD steps with the meta-loss, baseline objective on a validation batch,
gradient into the MLP's weights.

Reference: S. Bechtle, A. Molchanov, Y. Chebotar, E. Grefenstette, L. Righetti,
G. Sukhatme, F. Meier, "Meta Learning via Learned Loss", ICPR 2021 (arXiv:1906.05374).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from symloss.config import Settings
from symloss.kinds import check_task_kind
from symloss.local_search import meta_train
from symloss.lossfile import register_loss_format
from symloss.metaloss import prepare_outputs, reduce_loss
from symloss.serialization import check_header, real_numbers, write_json
from symloss.task import Task

ML3_FORMAT_NAME = "symloss.ml3"
ML3_FORMAT_VERSION = 1
ML3_HIDDEN = (50, 50)


class ML3Loss(nn.Module):
    """A neural (not symbolic) meta-loss: a bias-free MLP on each ``(f, y)`` pair.

    Parameters
    ----------
    task : {"classification", "regression"}
        As for :class:`~symloss.network.LearnedLoss`: classification takes logits
        ``[B, C]`` and labels ``[B]`` (the MLP sees softmax outputs and one-hot targets,
        one class at a time, with shared weights); regression takes ``[B]``/``[B, k]``.
    weights : sequence of 2-d arrays, optional
        The layer weight matrices, ``[out, in]`` each; by default a fresh random
        initialisation drawn from ``seed``: ``kaiming_normal_`` (normal, standard deviation
        ``sqrt(2 / fan_in)``), as EvoMAL's ML3.
    hidden : sequence of int
        Widths of the hidden layers; ``(50, 50)`` as in ML3.
    seed : int
        Seed of the random initialisation (ignored when ``weights`` are given).
    metadata : mapping, optional
        Free-form JSON-serialisable information saved with the loss.

    Attributes
    ----------
    layers : torch.nn.ModuleList
        The bias-free linear layers (frozen: ``requires_grad`` is False).
    metadata : dict

    Examples
    --------
    >>> import torch
    >>> loss = ML3Loss("classification", seed=0)
    >>> value = loss(torch.randn(8, 3), torch.randint(0, 3, (8,)))
    >>> value.shape, bool(value > 0)
    (torch.Size([]), True)

    See Also
    --------
    fit_ml3 : learn the weights on a task.
    symloss.network.LearnedLoss : the symbolic losses of the main search.
    """

    def __init__(
        self,
        task: str = "classification",
        weights: Sequence[Any] | None = None,
        *,
        hidden: Sequence[int] = ML3_HIDDEN,
        seed: int = 0,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.task = check_task_kind(task)
        widths = [2, *(int(h) for h in hidden), 1]
        if any(w < 1 for w in widths):
            raise ValueError(f"hidden widths must be positive, got {tuple(hidden)}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.layers = nn.ModuleList(
                nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:], strict=True)
            )
            # As EvoMAL's ML3: PyTorch's default init (uniform, bound 1/sqrt(fan_in)) starts
            # with a meta-loss gradient an order of magnitude weaker.
            for layer in self.layers:
                nn.init.kaiming_normal_(layer.weight)
        if weights is not None:
            if len(weights) != len(self.layers):
                raise ValueError(
                    f"expected {len(self.layers)} weight matrices, got {len(weights)}"
                )
            with torch.no_grad():
                for layer, values in zip(self.layers, weights, strict=True):
                    tensor = torch.as_tensor(values, dtype=torch.float32)
                    if tensor.shape != layer.weight.shape:
                        raise ValueError(
                            f"weight matrix of shape {tuple(tensor.shape)} where "
                            f"{tuple(layer.weight.shape)} was expected"
                        )
                    layer.weight.copy_(tensor)
        self.requires_grad_(False)
        self.metadata = dict(metadata or {})

    @property
    def hidden(self) -> tuple[int, ...]:
        """Widths of the hidden layers."""
        return tuple(layer.out_features for layer in self.layers[:-1])

    def elementwise(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The MLP on every pair ``(f[i], y[i])``: softplus output of ``f``'s shape."""
        h = torch.stack([f, y], dim=-1)
        for i, layer in enumerate(self.layers):
            h = F.linear(h, layer.weight.to(h.dtype))
            h = torch.relu(h) if i < len(self.layers) - 1 else F.softplus(h)
        return h.squeeze(-1)

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        """The scalar loss of a batch."""
        f, y = prepare_outputs(y_pred, y_true, self.task)
        return reduce_loss(self.elementwise(f, y), self.task)

    def description(self) -> str:
        """One line saying what the loss is."""
        sizes = "\u2192".join(str(w) for w in (2, *self.hidden, 1))
        return (
            f"ML3 neural loss (not symbolic): bias-free MLP {sizes}, ReLU, softplus output, "
            f"on each (f, y) pair; {self.task}"
        )

    def __str__(self) -> str:
        return self.description()

    def extra_repr(self) -> str:
        return f"task={self.task!r}, not symbolic"

    def latex(self, digits: int = 3) -> str:
        """A LaTeX note: ML3 has no closed form, so this only says what it is."""
        sizes = r" \to ".join(str(w) for w in (2, *self.hidden, 1))
        return (
            rf"\text{{ML3 neural loss (not symbolic): MLP }} {sizes} "
            rf"\text{{ (ReLU, softplus, no biases) on each }} (f, y)"
        )

    def sympy(self, digits: int = 3) -> Any:
        """ML3 losses have no symbolic form; always raises.

        Raises
        ------
        TypeError
            Always.
        """
        raise TypeError(
            "ML3Loss is a neural network loss, not a symbolic one: it has no SymPy form. "
            "Use str(loss) or loss.latex() for a description, or a symbolic loss "
            "(LearnedLoss, TaylorGLOLoss) when a formula is needed."
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-serialisable form written by :meth:`save`."""
        return {
            "format": ML3_FORMAT_NAME,
            "version": ML3_FORMAT_VERSION,
            "task": self.task,
            "hidden": list(self.hidden),
            "weights": [layer.weight.detach().cpu().tolist() for layer in self.layers],
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "data") -> ML3Loss:
        """Rebuild a loss from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            If ``data`` is not a valid ML3 loss or was written by a newer symloss.
        """
        check_header(data, source, ML3_FORMAT_NAME, ML3_FORMAT_VERSION, "symloss ML3 loss")
        try:
            hidden, weights = _checked_layers(data.get("hidden", list(ML3_HIDDEN)),
                                              data.get("weights"))
            return cls(data["task"], weights, hidden=hidden,
                       metadata=data.get("metadata") or {})
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{source} is not a valid symloss ML3 loss: {error}") from error

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the loss as a JSON file (atomically); :func:`symloss.lossfile.load` reads it."""
        return write_json(path, self.to_dict())


def _checked_layers(hidden: Any, weights: Any) -> tuple[list[int], list[list[list[float]]]]:
    """Hidden widths and weight matrices read from a file, checked against each other
    before any layer is allocated: the widths alone could ask for gigabytes."""
    if not isinstance(hidden, list) or not all(
        isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden
    ):
        raise ValueError(f"'hidden' must be a list of positive integers, got {hidden!r}")
    widths = [2, *hidden, 1]
    if not isinstance(weights, list) or len(weights) != len(widths) - 1:
        raise ValueError(
            f"'weights' must be a list of {len(widths) - 1} matrices for hidden widths {hidden}"
        )
    matrices = []
    for i, (rows, n_in, n_out) in enumerate(zip(weights, widths[:-1], widths[1:], strict=True)):
        if not isinstance(rows, list) or len(rows) != n_out:
            raise ValueError(f"weight matrix {i} must have {n_out} rows of {n_in} numbers")
        matrices.append([real_numbers(row, f"row {j} of weight matrix {i}", n_in)
                         for j, row in enumerate(rows)])
    return hidden, matrices


def fit_ml3(task: Task, settings: Settings, seed: int = 0) -> ML3Loss:
    """Learn an ML3 loss on ``task`` by unrolled differentiation only.

    Each of ``settings.meta_steps`` meta-steps initialises the task's model afresh, takes
    ``settings.unroll_steps`` differentiable SGD steps (learning rate ``settings.lr``) with
    the ML3 loss on random training batches of ``settings.meta_batch_size``, scores the
    stepped model with the baseline objective (``task.base_loss``) on a random validation
    batch, and updates the MLP's weights with Adam (``settings.meta_lr``). A meta-step whose
    objective or gradient is not finite stops the search; the last finite weights are kept.

    Parameters
    ----------
    task : Task
        The problem (see :func:`symloss.task.make_task`).
    settings : Settings
        The inner-loop fields above are used.
    seed : int
        Seed of the MLP's initialisation, the models and the batches: the result is
        deterministic for a seed.

    Returns
    -------
    ML3Loss
        The learned loss; ``metadata`` records the method, seed and meta-objective history.

    Examples
    --------
    >>> from symloss.config import Settings
    >>> from symloss.datasets import load_dataset
    >>> from symloss.task import make_task
    >>> task = make_task(load_dataset("sine").train, "mlp", task="regression")
    >>> loss = fit_ml3(task, Settings(meta_steps=3, meta_batch_size=16), seed=1)
    >>> loss.metadata["method"]
    'ml3'
    """
    loss = ML3Loss(task.kind, seed=seed).to(task.device)
    leaves = {
        name: p.detach().clone().requires_grad_(True) for name, p in loss.named_parameters()
    }
    history, stopped_early = meta_train(
        task, settings, seed, leaves,
        lambda weights: lambda outputs, targets: functional_call(
            loss, weights, (outputs, targets)),
    )
    with torch.no_grad():
        for name, p in loss.named_parameters():
            p.copy_(leaves[name])
    loss.metadata = {
        "method": "ml3",
        "seed": seed,
        "meta_steps": len(history),
        "stopped_early": stopped_early,
        "meta_objective": history,
    }
    return loss


register_loss_format(ML3_FORMAT_NAME, ML3Loss)
