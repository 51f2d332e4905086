"""The meta-loss network and LearnedLoss: evaluation, output transform, persistence."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import symloss
from symloss.expression import Expression
from symloss.lossfile import load
from symloss.metaloss import MetaLossNetwork, prepare_outputs, reduce_loss
from symloss.network import FORMAT_NAME, FORMAT_VERSION, PLAIN_FORMAT_VERSION, LearnedLoss
from symloss.primitives import EPS


def _plog(a):
    return torch.log(torch.clamp(a.abs(), min=EPS))


def _psqrt(a):
    return torch.sqrt(torch.clamp(a.abs(), min=EPS))


FORMULAS = {
    "square(f - y)": lambda f, y: (f - y) ** 2,
    "-(y * log(f))": lambda f, y: -(y * _plog(f)),
    "div(f, y) + tanh(f * y)": lambda f, y: f / torch.sqrt(1 + y * y) + torch.tanh(f * y),
    "max(0, 1 - y * f)": lambda f, y: torch.clamp(1 - y * f, min=0),
    "sqrt(abs(f - y)) + sign(y) * min(f, y)": lambda f, y: (
        _psqrt((f - y).abs()) + torch.sign(y) * torch.minimum(f, y)
    ),
    "log(1 + square(f - y)) - 0.5 * f": lambda f, y: _plog(1 + (f - y) ** 2) - 0.5 * f,
    "-(y * square(1 - f) * log(f))": lambda f, y: -(y * (1 - f) ** 2 * _plog(f)),
}


def _fy(shape=(16, 5), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=dtype),
            torch.randn(*shape, generator=g, dtype=dtype))


# -- MetaLossNetwork ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("text", list(FORMULAS))
def test_unit_weights_compute_the_expression(text, dtype):
    net = MetaLossNetwork(text)
    f, y = _fy(dtype=dtype)
    out = net(f, y)
    assert out.dtype == dtype and out.shape == f.shape
    torch.testing.assert_close(out, FORMULAS[text](f, y))


def test_accepts_expression_objects_and_text():
    e = Expression.parse("square(f - y)")
    assert MetaLossNetwork(e).expression is e
    assert MetaLossNetwork("square(f-y)").expression == e


@pytest.mark.parametrize("text", [*FORMULAS, "f", "1", "f - y", "-f"])
def test_weight_count_is_size_minus_one(text):
    e = Expression.parse(text)
    net = MetaLossNetwork(text)
    assert net.n_edges == e.size - 1
    assert net.weights.shape == (e.size - 1,)
    assert net.weights.dtype == torch.float64
    assert isinstance(net.weights, torch.nn.Parameter) and net.weights.requires_grad
    assert torch.equal(net.weights, torch.ones(e.size - 1, dtype=torch.float64))
    assert [n for n, _ in net.named_parameters()] == ["weights"]


@pytest.mark.parametrize("count", [0, 1, 2, 4, 5])
def test_wrong_weight_count_raises(count):
    with pytest.raises(ValueError, match=f"3 edges but {count} weights"):
        MetaLossNetwork("square(f - y)", [1.0] * count)


def test_weights_are_copied_and_accept_tensors():
    source = torch.tensor([2.0, 3.0])
    net = MetaLossNetwork("f - y", source)
    source[0] = 100.0
    assert net.weights.tolist() == [2.0, 3.0]
    assert MetaLossNetwork("f - y", torch.tensor([[2.0], [3.0]])).weights.tolist() == [2.0, 3.0]


def test_weights_scale_child_outputs_in_post_order():
    f, y = _fy(dtype=torch.float64)
    torch.testing.assert_close(MetaLossNetwork("f - y", [2.0, 3.0])(f, y), 2 * f - 3 * y)
    # post-order: f, y, sub, (square is the root and has no weight)
    net = MetaLossNetwork("square(f - y)", [1.5, 0.5, 2.0])
    torch.testing.assert_close(net(f, y), (2.0 * (1.5 * f - 0.5 * y)) ** 2)
    torch.testing.assert_close(MetaLossNetwork("f + 2", [0.5, 3.0])(f, y), 0.5 * f + 6.0)
    torch.testing.assert_close(
        MetaLossNetwork("-(y * log(f))", [1, 1, 1, 2, 3])(f, y),
        -(3 * (y * 2 * _plog(f))),
    )


def test_leaf_and_constant_trees_broadcast_to_prediction_shape():
    f, y = _fy(shape=(4, 3))
    torch.testing.assert_close(MetaLossNetwork("f")(f, y), f)
    assert torch.equal(MetaLossNetwork("2")(f, y), torch.full_like(f, 2.0))
    out = MetaLossNetwork("y")(f, y[:, :1])
    assert out.shape == f.shape
    torch.testing.assert_close(out, y[:, :1].expand_as(f))


def test_float32_values_stay_float32_with_float64_weights():
    f, y = _fy()
    out = MetaLossNetwork("square(f - y)", [1.1, 0.9, 1.0])(f, y)
    assert out.dtype == torch.float32


def test_gradients_with_respect_to_weights():
    f, y = _fy(dtype=torch.float64)
    net = MetaLossNetwork("f - y")
    net(f, y).sum().backward()
    torch.testing.assert_close(
        net.weights.grad, torch.stack([f.sum(), -y.sum()]).to(torch.float64)
    )
    for text in FORMULAS:
        net = MetaLossNetwork(text)
        f, y = _fy(seed=1)
        net(f.abs().clamp(0.05, 1.0), y).mean().backward()
        assert net.weights.grad is not None, text
        assert net.weights.grad.shape == net.weights.shape
        assert torch.isfinite(net.weights.grad).all(), text
        assert net.weights.grad.abs().sum() > 0, text


def test_functional_weight_override():
    net = MetaLossNetwork("f - y")
    f, y = _fy(dtype=torch.float64)
    w = torch.tensor([2.0, 0.5], dtype=torch.float64, requires_grad=True)
    out = net(f, y, weights=w)
    torch.testing.assert_close(out, 2 * f - 0.5 * y)
    out.sum().backward()
    assert w.grad is not None and net.weights.grad is None
    assert torch.equal(net.weights.detach(), torch.ones(2, dtype=torch.float64))


def test_gradients_with_respect_to_inputs_are_finite_at_protection_thresholds():
    f = torch.tensor([0.0, 1e-12, -1e-12, 1.0, -1.0], requires_grad=True)
    y = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0], requires_grad=True)
    out = MetaLossNetwork("-(y * log(f)) + sqrt(f - y) + div(f, y)")(f, y)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(f.grad).all() and torch.isfinite(y.grad).all()


# -- prepare_outputs / reduce_loss ------------------------------------------------------------


def test_prepare_outputs_classification():
    logits = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    f, y = prepare_outputs(logits, labels, "classification")
    torch.testing.assert_close(f, torch.softmax(logits, dim=1))
    assert torch.equal(y, F.one_hot(labels, 4).float())
    f1, y1 = prepare_outputs(logits[:, :1], labels.clamp(max=1), "classification")
    torch.testing.assert_close(f1, torch.sigmoid(logits[:, :1]))
    assert y1.shape == (6, 1) and y1.dtype == torch.float32


def test_reduce_loss_sums_over_outputs_then_averages_the_batch():
    e = torch.arange(12.0).reshape(3, 4)
    for task in ("classification", "regression"):
        torch.testing.assert_close(reduce_loss(e, task), e.sum(1).mean())
    # as the reference: k regression outputs weigh k times the mean over all values
    torch.testing.assert_close(reduce_loss(e, "regression"), 4 * e.mean())
    with pytest.raises(ValueError, match=r"\[batch, outputs\].*prepare_outputs"):
        reduce_loss(e.reshape(-1), "regression")


# -- LearnedLoss: classification --------------------------------------------------------------

SHAPES = [(1, 2), (8, 3), (32, 10), (5, 7)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_cross_entropy_expression_matches_torch(shape, dtype):
    g = torch.Generator().manual_seed(shape[0] * 100 + shape[1])
    logits = (2 * torch.randn(*shape, generator=g, dtype=dtype)).requires_grad_(True)
    labels = torch.randint(0, shape[1], (shape[0],), generator=g)
    loss = LearnedLoss("-(y * log(f))", task="classification")
    ours = loss(logits, labels)
    ref = F.cross_entropy(logits, labels)
    assert ours.shape == () and ours.dtype == dtype
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    (g_ours,) = torch.autograd.grad(ours, logits)
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-5, rtol=1e-4)
    # one-hot float targets
    one_hot = F.one_hot(labels, shape[1]).to(dtype)
    torch.testing.assert_close(loss(logits, one_hot), ref, atol=1e-5, rtol=1e-5)
    # probability targets
    probs = torch.softmax(torch.randn(*shape, generator=g, dtype=dtype), dim=1)
    torch.testing.assert_close(
        loss(logits, probs), F.cross_entropy(logits, probs), atol=1e-5, rtol=1e-5
    )


def test_default_task_is_classification():
    loss = LearnedLoss("-(y * log(f))")
    assert loss.task == "classification"
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    torch.testing.assert_close(loss(logits, labels), F.cross_entropy(logits, labels))


def test_single_output_uses_sigmoid():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(10, 1, generator=g)
    targets = torch.randint(0, 2, (10,), generator=g)
    p = torch.sigmoid(logits).squeeze(1)
    ce = LearnedLoss("-(y * log(f))", task="classification")
    expected = (-(targets.float() * torch.log(p))).mean()
    for t in (targets, targets.float(), targets.float().unsqueeze(1), targets.unsqueeze(1)):
        torch.testing.assert_close(ce(logits, t), expected)
    brier = LearnedLoss("square(f - y)", task="classification")
    torch.testing.assert_close(brier(logits, targets), ((p - targets.float()) ** 2).mean())
    # with softmax, a single column would be constant 1 and the loss would ignore the logits
    assert not torch.allclose(ce(logits, targets), ce(logits + 3, targets))


# -- LearnedLoss: regression ------------------------------------------------------------------


@pytest.mark.parametrize(
    "pred_shape, target_shape",
    [((8,), (8,)), ((8, 1), (8,)), ((8,), (8, 1)), ((8, 1), (8, 1)), ((8, 3), (8, 3)),
     ((8, 2, 3), (8, 6))],
)
def test_squared_error_is_summed_over_outputs(pred_shape, target_shape):
    """One output: F.mse_loss; k outputs: k times it (summed over outputs, as the reference)."""
    g = torch.Generator().manual_seed(7)
    pred = torch.randn(*pred_shape, generator=g, requires_grad=True)
    target = torch.randn(*target_shape, generator=g)
    loss = LearnedLoss("square(f - y)", task="regression")
    ours = loss(pred, target)
    k = pred.numel() // pred_shape[0]
    ref = k * F.mse_loss(pred.reshape(-1), target.reshape(-1))
    torch.testing.assert_close(ours, ref)
    (g_ours,) = torch.autograd.grad(ours, pred)
    (g_ref,) = torch.autograd.grad(ref, pred)
    torch.testing.assert_close(g_ours, g_ref)
    assert g_ours.shape == pred.shape


def test_regression_integer_targets_are_converted():
    pred = torch.tensor([1.0, 2.0, 3.0])
    loss = LearnedLoss("abs(f - y)", task="regression")
    torch.testing.assert_close(loss(pred, torch.tensor([1, 1, 1])), torch.tensor(1.0))


@pytest.mark.parametrize(
    "task, pred_shape, target_shape, target_dtype",
    [
        ("regression", (4, 2), (4, 3), torch.float32),
        ("regression", (4,), (5,), torch.float32),
        ("regression", (4, 1), (5, 1), torch.float32),
        ("regression", (), (), torch.float32),
        ("classification", (4,), (4,), torch.int64),
        ("classification", (4, 3, 2), (4,), torch.int64),
        ("classification", (4, 3), (4, 2), torch.float32),
        ("classification", (4, 3), (5,), torch.int64),
        ("classification", (4, 3), (4,), torch.float32),
        ("classification", (4, 1), (4, 2), torch.float32),
    ],
)
def test_shape_mismatch_errors_show_both_shapes(task, pred_shape, target_shape, target_dtype):
    loss = LearnedLoss("square(f - y)", task=task)
    pred = torch.zeros(pred_shape)
    target = torch.zeros(target_shape, dtype=target_dtype)
    with pytest.raises(ValueError) as info:
        loss(pred, target)
    message = str(info.value)
    assert str(tuple(pred_shape)) in message, message
    assert str(tuple(target_shape)) in message, message


def test_unknown_task_raises():
    with pytest.raises(ValueError, match="'ranking'"):
        LearnedLoss("square(f - y)", task="ranking")


# -- LearnedLoss: weights, latex, module behaviour ----------------------------------------------


def test_weights_are_not_trainable_by_default():
    loss = LearnedLoss("square(f - y)", task="regression", weights=[1.1, 0.9, 1.2])
    params = list(loss.parameters())
    assert params and not any(p.requires_grad for p in params)
    model = torch.nn.Linear(3, 1)
    optimiser = torch.optim.SGD(
        [p for m in (model, loss) for p in m.parameters() if p.requires_grad], lr=0.1
    )
    assert sum(len(group["params"]) for group in optimiser.param_groups) == 2
    x, t = torch.randn(5, 3), torch.randn(5)
    out = loss(model(x), t)
    out.backward()
    assert model.weight.grad is not None and loss.network.weights.grad is None
    assert loss.weights == [1.1, 0.9, 1.2]


def test_learned_loss_weight_override_for_local_search():
    loss = LearnedLoss("f - y", task="regression")
    w = torch.tensor([2.0, 1.0], dtype=torch.float64, requires_grad=True)
    pred, target = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 1.0])
    out = loss(pred, target, weights=w)
    torch.testing.assert_close(out, torch.tensor(3.5))
    out.backward()  # d/dw mean(w0 f - w1 y) = (mean f, -mean y)
    torch.testing.assert_close(w.grad, torch.tensor([2.0, -0.5], dtype=torch.float64))


def test_properties_and_repr():
    loss = LearnedLoss("square(f-y)", task="regression", metadata={"seed": 3})
    assert loss.expression == Expression.parse("square(f - y)")
    assert loss.weights == [1.0, 1.0, 1.0]
    assert all(type(w) is float for w in loss.weights)
    assert loss.metadata == {"seed": 3}
    assert "square(f - y)" in repr(loss) and "regression" in repr(loss)


def test_latex_at_unit_weights_equals_expression_latex():
    for text in ("-(y * log(f))", "square(f - y)", "div(f, y) + tanh(f * y)"):
        e = Expression.parse(text)
        assert LearnedLoss(text).latex() == e.latex(simplify=True)
        assert LearnedLoss(text).latex() == e.latex()
        near_one = [1.0 + 1e-5 * (-1) ** i for i in range(e.size - 1)]
        assert LearnedLoss(text, weights=near_one).latex() == e.latex(simplify=True)


def test_latex_folds_non_unit_weights():
    loss = LearnedLoss("f - y", task="regression", weights=[1.2, 1.0])
    text = loss.latex()
    assert "1.2" in text and "f" in text and "y" in text
    assert text != Expression.parse("f - y").latex()
    fs, ys = (s for s in sorted(loss.sympy().free_symbols, key=str))
    assert float(loss.sympy().subs({fs: 2.0, ys: 1.0})) == pytest.approx(1.4)
    rounded = LearnedLoss("square(f - y)", "regression", weights=[1.23456, 0.5, 1.0])
    assert "1.23" in rounded.latex() and "1.23456" not in rounded.latex()
    assert "1.235" in rounded.latex(digits=4)  # significant digits
    small = LearnedLoss("square(f - y) + abs(f - y)", "regression",
                        weights=[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0003859])
    assert "0.000386" in small.latex()  # not rounded away to a constant


def test_latex_omits_weights_that_round_to_one():
    assert "1.0" not in LearnedLoss("f - y", "regression", weights=[1.2, 1.0]).latex()


# -- persistence --------------------------------------------------------------------------------


def _trained_like(text="-(y * log(f))", task="classification", seed=0):
    e = Expression.parse(text)
    g = torch.Generator().manual_seed(seed)
    weights = 1 + 0.001 * torch.randn(e.size - 1, generator=g, dtype=torch.float64)
    return LearnedLoss(text, task, weights, metadata={"fitness": 0.125, "tags": ["a", "b"]})


@pytest.mark.parametrize(
    "text, task, shape",
    [("-(y * log(f))", "classification", (7, 4)),
     ("log(1 + square(f - y)) - 0.5 * f", "regression", (7, 2))],
)
def test_save_load_round_trip_is_exact(tmp_path, text, task, shape):
    loss = _trained_like(text, task)
    path = loss.save(tmp_path / "nested" / "dir" / "loss.json")
    assert path == tmp_path / "nested" / "dir" / "loss.json" and path.exists()
    assert [p.name for p in path.parent.iterdir()] == ["loss.json"]  # no .tmp left behind
    back = load(path)
    assert back.weights == loss.weights
    assert torch.equal(back.network.weights, loss.network.weights)
    assert back.expression == loss.expression and back.task == task
    assert back.metadata == loss.metadata
    assert not back.network.weights.requires_grad
    pred = torch.randn(*shape)
    target = torch.randint(0, shape[1], (shape[0],)) if task == "classification" else (
        torch.randn(*shape)
    )
    assert torch.equal(back(pred, target), loss(pred, target))
    assert back.latex() == loss.latex()
    # str paths work too
    assert load(str(loss.save(str(tmp_path / "again.json")))).weights == loss.weights


def test_saved_file_is_human_readable_json(tmp_path):
    loss = _trained_like()
    path = loss.save(tmp_path / "loss.json")
    text = path.read_text()
    assert text.endswith("\n") and text.count("\n") > 5  # indented, one key per line
    data = json.loads(text)
    assert data["format"] == FORMAT_NAME == "symloss.loss"
    assert data["version"] == PLAIN_FORMAT_VERSION == 2  # a loss without p: as it always was
    assert data["expression"] == "-(y * log(f))"
    assert data["task"] == "classification"
    assert data["weights"] == loss.weights
    assert data["metadata"] == {"fitness": 0.125, "tags": ["a", "b"]}
    assert set(data) == {"format", "version", "expression", "task", "weights", "scale",
                         "learned_with", "metadata"}
    assert '"expression": "-(y * log(f))"' in text
    assert data == loss.to_dict()


def test_to_dict_from_dict_round_trip():
    loss = _trained_like()
    back = LearnedLoss.from_dict(loss.to_dict())
    assert back.weights == loss.weights and back.expression == loss.expression
    no_metadata = {k: v for k, v in loss.to_dict().items() if k != "metadata"}
    assert LearnedLoss.from_dict(no_metadata).metadata == {}


def _write(tmp_path, content) -> str:
    path = tmp_path / "loss.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_newer_version_asks_to_upgrade(tmp_path):
    data = _trained_like().to_dict() | {"version": FORMAT_VERSION + 1}
    with pytest.raises(ValueError, match="upgrade") as info:
        load(_write(tmp_path, data))
    assert f"version {FORMAT_VERSION + 1}" in str(info.value) and "loss.json" in str(info.value)


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ('{"format": "symloss.loss", "version": 1, "expression": "f"', "not valid JSON"),
        ({"format": "something.else", "version": 1}, "not a symloss loss"),
        ({"version": 1, "expression": "f - y"}, "not a symloss loss"),
        ([1, 2, 3], "not a symloss loss"),
        ("null", "not a symloss loss"),
        ({"format": "symloss.loss", "version": "1"}, "invalid format version"),
        ({"format": "symloss.loss", "version": 0}, "invalid format version"),
        ({"format": "symloss.loss"}, "invalid format version"),
    ],
)
def test_corrupt_or_foreign_files_raise_clear_errors(tmp_path, content, match):
    path = _write(tmp_path, content)
    with pytest.raises(ValueError, match=match) as info:
        load(path)
    assert "loss.json" in str(info.value)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"weights": [1.0]}, "edges"),
        ({"weights": [1.0, float("nan"), 1.0, 1.0, 1.0]}, "non-finite"),
        ({"weights": None}, "not a valid symloss loss"),
        ({"expression": "f / y"}, "'/'"),
        ({"task": "ranking"}, "ranking"),
        ({"expression": None}, "not a valid symloss loss"),
    ],
)
def test_invalid_contents_raise_clear_errors(tmp_path, change, match):
    data = _trained_like().to_dict() | change
    with pytest.raises(ValueError, match=match) as info:
        load(_write(tmp_path, data))
    assert "not a valid symloss loss" in str(info.value)


@pytest.mark.parametrize("missing", ["expression", "task", "weights"])
def test_missing_keys_raise_value_error(tmp_path, missing):
    data = {k: v for k, v in _trained_like().to_dict().items() if k != missing}
    with pytest.raises(ValueError, match=f"not a valid symloss loss.*{missing}"):
        load(_write(tmp_path, data))


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent.json")


def test_module_exports():
    assert symloss.load is load
