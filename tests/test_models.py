"""Tests for symloss.models: shapes, gradients, fresh factories, re-initialisation."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn
from torch.func import functional_call, vmap

from symloss.models import MODELS, CharGRU, build_model, model_names, parameter_forward

VOCAB = 34
T = 20

# (name, input_shape, n_outputs, extra kwargs)
CASES = [
    ("linear", (1,), 1, {}),
    ("linear", (1, 28, 28), 10, {}),
    ("mlp", (1,), 1, {}),
    ("mlp", (64,), 10, {}),
    ("mlp", (10,), 3, {"hidden": (8, 8, 8)}),
    ("lenet5", (1, 28, 28), 10, {}),
    ("lenet5", (3, 32, 32), 10, {}),
    ("alexnet", (3, 32, 32), 10, {}),
    ("alexnet", (1, 28, 28), 10, {}),
    ("gru", (T,), 18, {"vocab_size": VOCAB}),
]
IDS = [f"{c[0]}-{'x'.join(map(str, c[1]))}-{c[2]}" for c in CASES]


def _batch(shape: tuple[int, ...], name: str, b: int = 5) -> torch.Tensor:
    if name == "gru":
        x = torch.randint(1, VOCAB, (b, *shape))
        x[:, 7:] = 0  # right-padded
        x[0, 3:] = 0
        return x
    return torch.rand(b, *shape)


def test_registry():
    assert model_names() == list(MODELS)
    assert set(MODELS) == {"linear", "mlp", "lenet5", "alexnet", "gru"}


@pytest.mark.parametrize(("name", "shape", "n_out", "kwargs"), CASES, ids=IDS)
def test_forward_shape_and_gradients(name, shape, n_out, kwargs):
    torch.manual_seed(0)
    model = build_model(name, shape, n_out, **kwargs)()
    out = model(_batch(shape, name))
    assert out.shape == (5, n_out) and out.dtype == torch.float32
    out.square().sum().backward()
    for pname, p in model.named_parameters():
        if name == "gru" and pname == "embedding.weight":
            assert torch.all(p.grad[0] == 0)  # the padding row never trains
            assert p.grad[1:].abs().sum() > 0
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize(("name", "shape", "n_out", "kwargs"), CASES, ids=IDS)
def test_factory_gives_fresh_independent_modules(name, shape, n_out, kwargs):
    make = build_model(name, shape, n_out, **kwargs)
    torch.manual_seed(0)
    a = make()
    b = make()
    assert a is not b
    pairs = list(zip(a.parameters(), b.parameters(), strict=True))
    assert all(pa is not pb for pa, pb in pairs)
    assert any(not torch.equal(pa, pb) for pa, pb in pairs)
    torch.manual_seed(1)
    c = make()
    torch.manual_seed(1)
    d = make()
    assert all(torch.equal(pc, pd) for pc, pd in zip(c.parameters(), d.parameters(), strict=True))
    with torch.no_grad():
        next(a.parameters()).add_(1.0)
    assert not torch.equal(next(a.parameters()), next(b.parameters()))
    assert isinstance(pickle.loads(pickle.dumps(make))(), nn.Module)  # factories pickle


@pytest.mark.parametrize(("name", "shape", "n_out", "kwargs"), CASES, ids=IDS)
def test_every_parameter_is_reset_by_its_own_layer(name, shape, n_out, kwargs):
    model = build_model(name, shape, n_out, **kwargs)()
    covered = set()
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if own:
            assert callable(getattr(module, "reset_parameters", None)), type(module)
            covered |= {id(p) for p in own}
    assert covered == {id(p) for p in model.parameters()}
    # Resetting every submodule re-draws every parameter.
    before = [p.detach().clone() for p in model.parameters()]
    torch.manual_seed(123)
    for module in model.modules():
        if list(module.parameters(recurse=False)):
            module.reset_parameters()
    after = list(model.parameters())
    for p0, p1 in zip(before, after, strict=True):
        assert not torch.equal(p0, p1)


def test_functional_call_and_vmap_over_models():
    for name, shape, n_out, kwargs in (CASES[3], CASES[5], CASES[-1]):
        model = build_model(name, shape, n_out, **kwargs)()
        x = _batch(shape, name)
        params = {k: v.detach() for k, v in model.named_parameters()}
        stacked = {k: torch.stack([v, v + 0.01]) for k, v in params.items()}
        out = vmap(lambda p, m=model, x=x: functional_call(m, p, (x,)))(stacked)
        assert out.shape == (2, 5, n_out)
        torch.testing.assert_close(out[0], model(x), rtol=1e-5, atol=1e-5)


def test_gru_second_order_gradients():
    """An unrolled SGD step differentiates through the model's backward pass."""
    torch.manual_seed(0)
    model = build_model("gru", (T,), 4, vocab_size=VOCAB)()
    x, y = _batch((T,), "gru"), torch.tensor([0, 1, 2, 3, 0])
    params = dict(model.named_parameters())
    w = torch.tensor(1.0, requires_grad=True)
    inner = w * nn.functional.cross_entropy(functional_call(model, params, (x,)), y)
    grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
    stepped = {k: v - 0.1 * g for (k, v), g in zip(params.items(), grads, strict=True)}
    nn.functional.cross_entropy(functional_call(model, stepped, (x,)), y).backward()
    assert w.grad is not None and torch.isfinite(w.grad)


# --------------------------------------------------------------------------- GRU padding


def test_gru_ignores_padding():
    torch.manual_seed(0)
    names = [torch.randint(1, VOCAB, (n,)) for n in (3, 7, 1, 10)]

    def padded(length: int) -> torch.Tensor:
        x = torch.zeros(len(names), length, dtype=torch.long)
        for i, n in enumerate(names):
            x[i, : len(n)] = n
        return x

    model = build_model("gru", (15,), 6, vocab_size=VOCAB)()
    short, long = model(padded(10)), model(padded(15))
    torch.testing.assert_close(short, long, rtol=0, atol=1e-6)
    # Each name alone gives the same output as inside a batch of mixed lengths.
    alone = torch.cat([model(padded(15)[i : i + 1]) for i in range(len(names))])
    torch.testing.assert_close(alone, long, rtol=1e-5, atol=1e-6)


def test_gru_matches_torch_gru_at_last_real_token():
    torch.manual_seed(0)
    model = CharGRU(VOCAB, 3)
    x = _batch((12,), "gru")
    lengths = (x != 0).sum(1)
    packed = nn.utils.rnn.pack_padded_sequence(
        model.embedding(x), lengths, batch_first=True, enforce_sorted=False
    )
    _, h = model.gru(packed)
    torch.testing.assert_close(model(x), model.head(h[0]), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("resnet", (1,), 1), {}, "unknown model 'resnet'.*linear.*gru"),
        (("mlp", (1,), 0), {}, "n_outputs"),
        (("mlp", (1,), 2.5), {}, "n_outputs"),
        (("mlp", (), 1), {}, "input_shape"),
        (("mlp", (0, 3), 1), {}, "input_shape"),
        (("mlp", (4,), 1), {"hidden": (8, 0)}, "hidden"),
        (("lenet5", (64,), 10), {}, "image input"),
        (("lenet5", (1, 8, 8), 10), {}, "at least 12x12"),
        (("alexnet", (64,), 10), {}, "image input"),
        (("alexnet", (3, 4, 4), 10), {}, "at least 8x8"),
        (("gru", (20,), 18), {}, "vocab_size"),
        (("gru", (20,), 18), {"vocab_size": 1}, "vocab_size"),
        (("gru", (1, 28, 28), 10), {"vocab_size": VOCAB}, "token sequences"),
        (("linear", (4,), 1), {"hidden": (8,)}, "only applies to 'mlp'"),
    ],
)
def test_build_model_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(*args, **kwargs)


def test_vocab_size_is_ignored_by_non_sequence_models():
    model = build_model("mlp", (64,), 10, vocab_size=VOCAB)()
    assert model(torch.rand(2, 64)).shape == (2, 10)


@pytest.mark.parametrize(("name", "shape", "hidden"), [("linear", (2, 3), None),
                                                       ("mlp", (5,), None), ("mlp", (4,), (7,))])
def test_parameter_forward_is_the_models_forward_bit_for_bit(name, shape, hidden):
    torch.manual_seed(0)
    model = build_model(name, shape, 3, hidden=hidden)()
    params = {k: torch.randn_like(v) for k, v in model.named_parameters()}
    x = torch.randn(16, *shape)
    forward = parameter_forward(model)
    assert forward is not None
    assert torch.equal(forward(params, x), functional_call(model, params, (x,)))


def test_parameter_forward_leaves_other_models_to_functional_call():
    assert parameter_forward(build_model("lenet5", (1, 28, 28), 10)()) is None
    assert parameter_forward(nn.Sequential(nn.Linear(2, 1))) is None
    hooked = build_model("mlp", (3,), 2)()
    hooked.layers[1].register_forward_hook(lambda module, inputs, output: output * 2)
    assert parameter_forward(hooked) is None  # functional_call runs the hook
