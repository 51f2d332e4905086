"""Built-in small models for the built-in tasks.

:func:`build_model` checks a model name against an input shape and returns a zero-argument
factory; each call of the factory creates a fresh module (seed torch before calling it to
make the initialisation reproducible). Factories are :func:`functools.partial` objects of
module-level classes, so they pickle and can be shipped to worker processes.

Every parameter of every model lives in a standard torch layer (``Linear``, ``Conv2d``,
``Embedding``, ``GRU``) that defines ``reset_parameters()``: the library re-initialises a
model in place by calling ``reset_parameters()`` on each submodule.

Models
------
``linear``
    Flatten, then one ``Linear``.
``mlp``
    Flatten, two hidden layers of 40 ReLU units (the classic sine-regression network).
``lenet5``
    LeNet-5 (conv 6@5x5, max-pool, conv 16@5x5, max-pool, 120, 84, ReLU) for
    ``[C, H, W]`` images; inputs smaller than 32x32 (e.g. MNIST's 28x28) get 2 pixels of
    padding on the first convolution, as in the original network.
``alexnet``
    A small AlexNet-style CIFAR network: three 3x3 conv layers (32, 64, 64 channels) with
    ReLU and max-pooling, then two fully connected layers (256 hidden units).
``gru``
    Character-level sequence classifier: ``Embedding(vocab, 32, padding_idx=0)`` ->
    single-layer ``GRU`` with 64 hidden units -> ``Linear``. The output is read at each
    sequence's last non-padding position, so right-padding does not change the result.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = [
    "MODELS",
    "AlexNetSmall",
    "CharGRU",
    "LeNet5",
    "LinearModel",
    "MLP",
    "build_model",
    "model_names",
]

#: Built-in model names and a short description of each.
MODELS: dict[str, str] = {
    "linear": "flatten -> Linear (any input shape)",
    "mlp": "flatten -> 40 -> 40 -> out, ReLU (any input shape)",
    "lenet5": "LeNet-5 convnet for [C, H, W] images, e.g. [1, 28, 28] or [3, 32, 32]",
    "alexnet": "small AlexNet-style convnet (conv 32/64/64 + 2 FC) for [C, H, W] images",
    "gru": "Embedding(vocab, 32) -> GRU(64) -> Linear for int64 token sequences [T]",
}


def model_names() -> list[str]:
    """Names accepted by :func:`build_model`, in listing order."""
    return list(MODELS)


class LinearModel(nn.Module):
    """Flatten each example, then one linear layer."""

    def __init__(self, in_features: int, n_outputs: int) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(in_features, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.flatten(x))


class MLP(nn.Module):
    """Flatten each example, then fully connected ReLU layers."""

    def __init__(self, in_features: int, n_outputs: int, hidden: Sequence[int] = (40, 40)):
        super().__init__()
        widths = [in_features, *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], n_outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _lenet5_geometry(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(channels, first-conv padding, flattened feature size)`` for LeNet-5."""
    c, h, w = input_shape
    pad = 2 if min(h, w) < 32 else 0
    side = [((s + 2 * pad - 4) // 2 - 4) // 2 for s in (h, w)]
    if min(side) < 1:
        raise ValueError(f"lenet5 needs images of at least 12x12, got {h}x{w}")
    return c, pad, 16 * side[0] * side[1]


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max-pooling, sized for ``[C, H, W]`` input."""

    def __init__(self, input_shape: tuple[int, int, int], n_outputs: int) -> None:
        super().__init__()
        channels, pad, flat = _lenet5_geometry(input_shape)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=5, padding=pad),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, n_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _alexnet_flat(input_shape: tuple[int, ...]) -> int:
    _, h, w = input_shape
    if min(h, w) < 8:
        raise ValueError(f"alexnet needs images of at least 8x8, got {h}x{w}")
    return 64 * (h // 8) * (w // 8)


class AlexNetSmall(nn.Module):
    """AlexNet-style CIFAR network small enough to train on a CPU."""

    def __init__(self, input_shape: tuple[int, int, int], n_outputs: int) -> None:
        super().__init__()
        channels = input_shape[0]
        flat = _alexnet_flat(input_shape)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 256),
            nn.ReLU(),
            nn.Linear(256, n_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class CharGRU(nn.Module):
    """Character-level GRU classifier that ignores right-padding (token ``0``).

    The recurrence is written out with the weights of a standard single-layer
    ``nn.GRU`` (same equations, same parameters, same ``reset_parameters``), and each
    position updates the hidden state only where its token is not padding. Written out,
    it works under ``torch.func.vmap`` and can be differentiated twice on any device,
    which the fused (cuDNN) ``nn.GRU`` kernel cannot; unrolled local search needs both.
    """

    def __init__(
        self, vocab_size: int, n_outputs: int, embedding_dim: int = 32, hidden_size: int = 64
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.gru = nn.GRU(embedding_dim, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = self.embedding(x)  # [B, T, E]
        gru = self.gru
        # Input projections for every position at once: [B, T, 3H].
        gates_x = nn.functional.linear(emb, gru.weight_ih_l0, gru.bias_ih_l0)
        keep = (x != 0).unsqueeze(-1)  # [B, T, 1]
        h = emb.new_zeros(x.shape[0], gru.hidden_size)
        for t in range(x.shape[1]):
            x_r, x_z, x_n = gates_x[:, t].chunk(3, dim=-1)
            h_r, h_z, h_n = nn.functional.linear(h, gru.weight_hh_l0, gru.bias_hh_l0).chunk(
                3, dim=-1
            )
            r = torch.sigmoid(x_r + h_r)
            z = torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + r * h_n)
            h = torch.where(keep[:, t], (1 - z) * n + z * h, h)
        return self.head(h)


def _check_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in input_shape)
    except TypeError as err:
        raise ValueError(f"input_shape must be a tuple of ints, got {input_shape!r}") from err
    if not shape or any(d < 1 for d in shape):
        raise ValueError(f"input_shape must be non-empty positive sizes, got {shape}")
    return shape


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    n_outputs: int,
    *,
    vocab_size: int | None = None,
    hidden: Sequence[int] | None = None,
) -> Callable[[], nn.Module]:
    """Return a factory making fresh instances of a built-in model.

    Parameters
    ----------
    name : str
        One of :data:`MODELS`.
    input_shape : tuple of int
        Shape of one example (no batch dimension): ``(64,)`` for flat features,
        ``(1, 28, 28)`` or ``(3, 32, 32)`` for images, ``(T,)`` for token sequences.
    n_outputs : int
        Output width: number of classes, or of regression targets.
    vocab_size : int, optional
        Number of token indices, padding (``0``) included; required by ``gru``,
        ignored by the other models.
    hidden : sequence of int, optional
        Hidden layer widths for ``mlp`` (default ``(40, 40)``); other models reject it.

    Returns
    -------
    callable
        A zero-argument, picklable factory; each call returns a new ``nn.Module`` mapping
        a batch ``[B, *input_shape]`` to ``[B, n_outputs]``.

    Raises
    ------
    ValueError
        For an unknown name, an input shape the model cannot take, ``n_outputs < 1``,
        or ``gru`` without a valid ``vocab_size``.

    Examples
    --------
    >>> make = build_model("mlp", (1,), 1)
    >>> make()(torch.zeros(5, 1)).shape
    torch.Size([5, 1])
    """
    key = name.strip().lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(model_names())}")
    shape = _check_shape(input_shape)
    if isinstance(n_outputs, bool) or int(n_outputs) != n_outputs or n_outputs < 1:
        raise ValueError(f"n_outputs must be a positive integer, got {n_outputs!r}")
    n_outputs = int(n_outputs)
    if hidden is not None and key != "mlp":
        raise ValueError(f"hidden= only applies to 'mlp', not {key!r}")
    in_features = math.prod(shape)

    if key == "linear":
        return functools.partial(LinearModel, in_features, n_outputs)
    if key == "mlp":
        widths = (40, 40) if hidden is None else tuple(int(h) for h in hidden)
        if any(h < 1 for h in widths):
            raise ValueError(f"hidden widths must be positive, got {widths}")
        return functools.partial(MLP, in_features, n_outputs, widths)
    if key in ("lenet5", "alexnet"):
        if len(shape) != 3:
            raise ValueError(
                f"{key} needs image input shaped (channels, height, width), got {shape}; "
                "use 'mlp' or 'linear' for flat features"
            )
        if key == "lenet5":
            _lenet5_geometry(shape)
            return functools.partial(LeNet5, shape, n_outputs)
        _alexnet_flat(shape)
        return functools.partial(AlexNetSmall, shape, n_outputs)
    # gru
    if len(shape) != 1:
        raise ValueError(f"gru needs token sequences shaped (length,), got {shape}")
    if vocab_size is None or isinstance(vocab_size, bool) or int(vocab_size) < 2:
        raise ValueError(
            f"gru needs vocab_size >= 2 (padding index 0 included), got {vocab_size!r}"
        )
    return functools.partial(CharGRU, int(vocab_size), n_outputs)


def layer_chain(model: nn.Module) -> list[nn.Module]:
    """The layers a built-in :class:`LinearModel`, :class:`MLP` or :class:`LeNet5` applies
    in its ``forward``, in order."""
    if isinstance(model, LinearModel):
        return [model.flatten, model.linear]
    if isinstance(model, MLP):
        return list(model.layers)
    if isinstance(model, LeNet5):
        return [*model.features, *model.classifier]
    raise TypeError(f"no layer chain known for {type(model).__name__}")


ParameterForward = Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]


def parameter_forward(model: nn.Module) -> ParameterForward | None:
    """``model``'s forward pass as a function of parameters given by name (the names of
    ``model.named_parameters()``) and the input, for exactly a built-in
    :class:`LinearModel` or :class:`MLP` without forward hooks; None for any other
    model.

    It runs the operations ``model(x)`` runs (``F.linear``, ``torch.relu``, flattening),
    so it gives the same numbers as ``torch.func.functional_call(model, params, (x,))``
    without swapping the tensors into the module at every call, which costs more than
    a small MLP's arithmetic in the local search's unrolled steps.
    """
    if type(model) not in (LinearModel, MLP) or any(True for _ in model.buffers()) or any(
            m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        return None
    names = {id(p): name for name, p in model.named_parameters()}
    steps: list[Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]] = []
    for layer in layer_chain(model):
        if type(layer) is nn.Linear:
            weight = names[id(layer.weight)]
            bias = None if layer.bias is None else names[id(layer.bias)]
            steps.append(lambda p, h, w=weight, b=bias: nn.functional.linear(
                h, p[w], None if b is None else p[b]))
        elif type(layer) is nn.ReLU and not layer.inplace:
            steps.append(lambda p, h: torch.relu(h))
        elif type(layer) is nn.Flatten:
            steps.append(lambda p, h, a=layer.start_dim, z=layer.end_dim: h.flatten(a, z))
        else:
            return None

    def forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        h = x
        for step in steps:
            h = step(params, h)
        return h

    return forward
