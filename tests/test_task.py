"""make_task / resolve_data: input forms, clean splits, models, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from symloss.library import BINARY_BASELINE, known_losses
from symloss.network import LearnedLoss
from symloss.task import Split, Task, make_task, resolve_data


def _rows(split: Split) -> set[int]:
    """Row identities (column 0 holds the original row index)."""
    return {int(v) for v in split.x[:, 0].tolist()}


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


class PairDataset(torch.utils.data.Dataset):
    """A map-style dataset yielding (x, y) pairs."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = torch.as_tensor(x), torch.as_tensor(y)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


class ScaledLinear(nn.Module):
    """A linear layer times a free parameter no ``reset_parameters`` covers."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.scale = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.scale


# ----------------------------------------------------------------------------- input forms


@pytest.mark.parametrize("as_tensor", [False, True])
def test_pair_of_arrays_or_tensors(blobs, as_tensor):
    x, y = blobs
    data = (torch.as_tensor(x), torch.as_tensor(y)) if as_tensor else (x, y)
    task = make_task(data, "mlp")
    assert isinstance(task, Task)
    assert task.kind == "classification" and task.n_classes == 3
    assert task.train.x.dtype == torch.float32 and task.train.y.dtype == torch.int64
    assert len(task.train) + len(task.val) + len(task.test) == 120


def test_tensor_and_array_inputs_give_the_same_splits(blobs):
    x, y = blobs
    a = make_task((x, y), "linear", seed=3)
    b = make_task((torch.as_tensor(x), torch.as_tensor(y)), "linear", seed=3)
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(a, name).x, getattr(b, name).x)
        assert torch.equal(getattr(a, name).y, getattr(b, name).y)


def test_torch_dataset_yielding_pairs(blobs):
    x, y = blobs
    task = make_task(PairDataset(x, y), "mlp")
    assert task.kind == "classification" and task.n_classes == 3
    assert _rows(task.train) | _rows(task.val) | _rows(task.test) == set(range(120))


def test_dict_with_all_splits_is_used_as_given(blobs):
    x, y = blobs
    part = np.arange(120) % 6  # every class in every split
    rows = {name: np.flatnonzero(np.isin(part, p)) for name, p in
            (("train", [0, 1, 2, 3]), ("val", [4]), ("test", [5]))}
    task = make_task({name: (x[r], y[r]) for name, r in rows.items()}, "mlp")
    assert _rows(task.train) == set(rows["train"])
    assert _rows(task.val) == set(rows["val"])
    assert _rows(task.test) == set(rows["test"])


def test_dict_without_val_splits_it_off_train(blobs):
    x, y = blobs
    task = make_task({"train": (x[:100], y[:100]), "test": (x[100:], y[100:])}, "mlp",
                     val_fraction=0.25)
    assert _rows(task.test) == set(range(100, 120))
    assert _rows(task.train) | _rows(task.val) == set(range(100))
    assert not _rows(task.train) & _rows(task.val)
    assert len(task.val) == 25


def test_dict_entry_none_is_split_off(blobs):
    x, y = blobs
    task = make_task({"train": (x, y), "val": None}, "mlp")
    assert len(task.train) + len(task.val) + len(task.test) == 120


@pytest.mark.parametrize("name, kind", [("sine", "regression"), ("diabetes", "regression"),
                                        ("digits", "classification")])
def test_builtin_names_via_resolve_data(name, kind):
    data, resolved = resolve_data(name)
    assert resolved == kind
    assert set(data) == {"train", "test"}
    task = make_task(data, "linear", task=resolved)
    assert task.kind == kind
    n_test = len(data["test"][0])
    assert len(task.test) == n_test
    assert len(task.train) + len(task.val) == len(data["train"][0])
    if kind == "classification":
        assert task.n_classes == 10


def test_resolve_data_passes_user_data_through(blobs):
    data, kind = resolve_data(blobs)
    assert data is blobs and kind is None


# ----------------------------------------------------------------------------- splits


@pytest.mark.parametrize("seed", [0, 1])
def test_splits_never_overlap_and_add_up(blobs, seed):
    x, y = blobs
    task = make_task((x, y), "linear", val_fraction=0.2, test_fraction=0.25, seed=seed)
    train, val, test = _rows(task.train), _rows(task.val), _rows(task.test)
    assert len(train) == len(task.train) and len(val) == len(task.val)
    assert len(test) == len(task.test)
    assert not train & val and not train & test and not val & test
    assert train | val | test == set(range(120))
    assert len(task.test) == 30 and len(task.val) == 18 and len(task.train) == 72
    # every row keeps its own label
    for split in (task.train, task.val, task.test):
        rows = split.x[:, 0].long().numpy()
        assert np.array_equal(split.y.numpy(), y[rows])


def test_splits_depend_on_seed_only(blobs):
    a = make_task(blobs, "linear", seed=5)
    b = make_task(blobs, "linear", seed=5)
    c = make_task(blobs, "linear", seed=6)
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.val.x, b.val.x)
    assert _rows(a.test) != _rows(c.test)


def test_classification_splits_are_stratified(blobs):
    task = make_task(blobs, "linear", val_fraction=0.25, test_fraction=0.25)
    for split, expected in ((task.test, 10), (task.val, 7.5), (task.train, 22.5)):
        counts = torch.bincount(split.y, minlength=3)
        assert all(abs(int(c) - expected) <= 1 for c in counts), counts


def test_regression_split_sizes(blobs):
    x, _ = blobs
    target = (x[:, 1] * 2.0).astype(np.float32)
    task = make_task((x, target), "linear")
    assert task.kind == "regression" and task.n_classes is None
    assert task.train.y.dtype == torch.float32
    assert len(task.train) + len(task.val) + len(task.test) == 120


def test_split_batch_is_seeded_and_head_is_first_rows(blobs):
    task = make_task(blobs, "linear")
    a = task.train.batch(16, torch.Generator().manual_seed(1))
    b = task.train.batch(16, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    hx, hy = task.train.head(5)
    assert torch.equal(hx, task.train.x[:5]) and torch.equal(hy, task.train.y[:5])


# ----------------------------------------------------------------------------- kind


def test_kind_inference_and_override(blobs):
    x, y = blobs
    assert make_task((x, y), "linear").kind == "classification"
    assert make_task((x, y.astype(np.float32)), "linear").kind == "regression"
    as_regression = make_task((x, y), "linear", task="regression")
    assert as_regression.kind == "regression" and as_regression.train.y.is_floating_point()
    as_classes = make_task((x, y.astype(np.float64)), "linear", task="classification")
    assert as_classes.kind == "classification" and as_classes.n_classes == 3
    assert as_classes.train.y.dtype == torch.int64


def test_boolean_labels_are_binary_classification(blobs):
    x, y = blobs
    task = make_task((x, y == 1), "linear")
    assert task.kind == "classification" and task.n_classes == 2


def test_binary_classification_accepts_one_logit(blobs):
    x, y = blobs
    task = make_task((x, y % 2), nn.Linear(4, 1))
    assert task.n_classes == 2


def test_unknown_task_kind(blobs):
    with pytest.raises(ValueError, match="task must be one of"):
        make_task(blobs, "linear", task="ranking")


def test_baseline_follows_kind(blobs):
    x, y = blobs
    assert str(make_task((x, y), "linear").baseline) == "-(y * log(f))"
    assert str(make_task((x, y.astype(np.float32)), "linear").baseline) == "square(f - y)"


# ----------------------------------------------------------------------------- models


def test_model_instance_reinitialised_per_seed(blobs):
    template = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    before = _params(template)
    task = make_task(blobs, template)
    a, a_again, b = task.new_model(1), task.new_model(1), task.new_model(2)
    assert _same(_params(a), _params(a_again))
    assert not any(torch.equal(u, v) for u, v in zip(_params(a), _params(b), strict=True))
    assert _same(_params(template), before)  # the template is never modified
    assert a is not template and all(
        p is not q for p, q in zip(a.parameters(), template.parameters(), strict=True)
    )


def test_model_factory_seeded(blobs):
    task = make_task(blobs, lambda: nn.Linear(4, 3))
    assert _same(_params(task.new_model(7)), _params(task.new_model(7)))
    assert not _same(_params(task.new_model(7)), _params(task.new_model(8)))


def test_new_model_leaves_global_rng_alone(blobs):
    task = make_task(blobs, "mlp")
    state = torch.get_rng_state()
    task.new_model(3)
    assert torch.equal(state, torch.get_rng_state())


def test_new_model_is_in_training_mode(blobs):
    template = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.1)).eval()
    task = make_task(blobs, template)
    assert task.new_model(0).training


@pytest.mark.parametrize("name, layers", [("linear", 1), ("mlp", 3)])
def test_builtin_model_names_are_sized(blobs, name, layers):
    x, y = blobs
    task = make_task((x, y), name)
    model = task.new_model(0)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == layers
    assert linears[0].in_features == 4 and linears[-1].out_features == 3
    regression = make_task((x, x[:, 1].copy()), name)
    assert regression.outputs(regression.new_model(0), regression.val.x).shape == (
        len(regression.val), 1)


def test_builtin_model_on_image_shaped_input():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 1, 4, 4)).astype(np.float32)
    y = np.tile(np.arange(3), 20)
    task = make_task((x, y), "mlp")
    assert task.outputs(task.new_model(0), task.val.x).shape == (len(task.val), 3)


# ----------------------------------------------------------------------------- metric


def test_metric_error_rate_and_mse(blobs):
    x, y = blobs
    task = make_task((x, y), "linear")
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
    assert task.metric_from_outputs(logits, torch.tensor([0, 1, 0, 1])) == pytest.approx(0.5)
    reg = make_task((x, x[:, 1].copy()), "linear")
    assert reg.metric_from_outputs(torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 1.0])) == (
        pytest.approx(2.5))
    assert "3 classes" in task.describe() and "train" in task.describe()


def test_multi_output_regression_objective_is_the_baseline_loss(blobs):
    """Two outputs: the baseline loss and base_loss sum over outputs (the reference's
    reduction); the metric stays the mean squared error over all values."""
    x, _ = blobs
    task = make_task((x, x[:, 1:3].copy()), "linear")
    outputs = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    targets = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    baseline_loss = LearnedLoss(task.baseline, task.kind)
    # squared errors [[1, 0], [4, 4]]: per example 1 and 8, batch mean 4.5; all-value mean 2.25
    assert float(baseline_loss(outputs, targets)) == pytest.approx(4.5)
    assert float(task.base_loss(outputs, targets)) == pytest.approx(4.5)
    assert task.metric_from_outputs(outputs, targets) == pytest.approx(2.25)


# ----------------------------------------------------------------------------- errors


def test_error_model_width_vs_classes(blobs):
    with pytest.raises(ValueError, match=r"2 columns but the dataset has 3 classes.*3 logits"):
        make_task(blobs, nn.Linear(4, 2))


def test_error_regression_model_width(blobs):
    x, _ = blobs
    with pytest.raises(ValueError, match=r"model output has shape \(2, 2\).*\[batch, 1\]"):
        make_task((x, x[:, 1].copy()), nn.Linear(4, 2))


class Untrainable(nn.Module):
    """A classifier of the blobs (4 features, 3 classes) that no loss can train:
    ``how`` is "constant" (no parameters), "detached" (output cut from the graph),
    "frozen" (no parameter requires a gradient) or "training" (raises in training mode)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        if how != "constant":
            self.linear = nn.Linear(4, 3)
            self.linear.requires_grad_(how != "frozen")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "constant":
            return torch.zeros(len(x), 3)
        if self.how == "training" and self.training:
            raise RuntimeError("this layer is broken in training mode")
        out = self.linear(x)
        return out.detach() if self.how == "detached" else out


@pytest.mark.parametrize("how, message", [
    ("constant", "the model has no trainable parameters"),
    ("frozen", "the model has no trainable parameters"),
    ("detached", "does not depend on its parameters through autograd"),
    ("training", r"failed in training mode \(model.train\(\)\).*RuntimeError: this layer is "
                 "broken in training mode"),
])
def test_error_model_that_no_loss_can_train(blobs, how, message):
    with pytest.raises(ValueError, match=message):
        make_task(blobs, lambda: Untrainable(how))


def test_model_check_leaves_global_rng_alone(blobs):
    state = torch.get_rng_state()
    make_task(blobs, lambda: nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3)))
    assert torch.equal(state, torch.get_rng_state())


def test_error_model_fails_on_inputs(blobs):
    with pytest.raises(ValueError, match="model failed on a batch of inputs of shape"):
        make_task(blobs, nn.Linear(5, 3))


@pytest.mark.parametrize("where", ["inputs", "targets"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_error_non_finite(blobs, where, bad):
    x, y = blobs
    x, y = x.copy(), y.astype(np.float32)
    if where == "inputs":
        x[7, 2] = bad
    else:
        y[7] = bad
    with pytest.raises(ValueError, match=rf"train {where} contain 1 NaN/inf"):
        make_task((x, y), "linear", task="regression")


def test_error_non_finite_in_given_val_split(blobs):
    x, y = blobs
    xv = x[:20].copy()
    xv[3, 2] = np.nan
    with pytest.raises(ValueError, match="val inputs contain 1 NaN/inf"):
        make_task({"train": (x, y), "val": (xv, y[:20])}, "linear")


@pytest.mark.parametrize("label", [0, 2])
def test_error_fewer_than_two_classes(blobs, label):
    x, _ = blobs
    with pytest.raises(ValueError, match="fewer than 2 classes"):
        make_task((x, np.full(120, label)), "linear")


def test_error_empty_split(blobs):
    x, y = blobs
    with pytest.raises(ValueError, match="val split is empty"):
        make_task({"train": (x, y), "val": (x[:0], y[:0])}, "linear")
    with pytest.raises(ValueError, match="split is empty"):
        make_task((torch.zeros(0, 4), torch.zeros(0)), "linear")
    with pytest.raises(ValueError, match="split is empty"):
        make_task(PairDataset(x[:0], y[:0]), "linear")


def test_error_mismatched_lengths(blobs):
    x, y = blobs
    with pytest.raises(ValueError, match="120 inputs but 100 targets"):
        make_task((x, y[:100]), "linear")


def test_error_float_non_integer_labels_as_classification(blobs):
    x, y = blobs
    with pytest.raises(ValueError, match="not integer class labels.*task='regression'"):
        make_task((x, y + 0.5), "linear", task="classification")


def test_error_bad_labels(blobs):
    x, y = blobs
    with pytest.raises(ValueError, match="one-dimensional"):
        make_task((x, y.reshape(-1, 1)), "linear")
    with pytest.raises(ValueError, match=r"0\.\.C-1, found -1"):
        make_task((x, y - 1), "linear")


def test_error_custom_parameter_suggests_factory(blobs):
    with pytest.raises(ValueError, match=r"\['scale'\].*reset_parameters.*zero-argument callable"):
        make_task(blobs, ScaledLinear())
    # the same model through a factory is fine
    task = make_task(blobs, ScaledLinear)
    assert isinstance(task.new_model(0), ScaledLinear)


@pytest.mark.parametrize("kwargs, name", [
    ({"val_fraction": 0.0}, "val_fraction"),
    ({"val_fraction": 1.0}, "val_fraction"),
    ({"test_fraction": -0.1}, "test_fraction"),
    ({"test_fraction": 1.5}, "test_fraction"),
])
def test_error_bad_fractions(blobs, kwargs, name):
    with pytest.raises(ValueError, match=rf"{name} must be in \(0, 1\)"):
        make_task(blobs, "linear", **kwargs)


@pytest.mark.parametrize("data_keys", [("training",), ("val",), ("train", "valid")])
def test_error_bad_dict_keys(blobs, data_keys):
    data = dict.fromkeys(data_keys, blobs)
    with pytest.raises(ValueError, match=r"needs a 'train' entry.*got keys"):
        make_task(data, "linear")


@pytest.mark.parametrize("data", [42, "not data", (np.zeros((3, 2)),)])
def test_error_unusable_data(data):
    with pytest.raises(ValueError, match="expected an \\(X, y\\) pair"):
        make_task(data, "linear")


def test_error_not_a_model(blobs):
    with pytest.raises(ValueError, match="nn.Module or a zero-argument callable"):
        make_task(blobs, 42)
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        make_task(blobs, "resnet")


def test_error_factory_returning_non_module(blobs):
    with pytest.raises(ValueError, match="not an nn.Module"):
        make_task(blobs, lambda: 42)


def test_single_logit_classifier_gets_binary_cross_entropy(blobs):
    x, y = blobs
    binary = (y > 0).astype(np.int64)
    task = make_task((x, binary), lambda: torch.nn.Linear(4, 1))
    assert task.single_output and str(task.baseline) == BINARY_BASELINE
    two = make_task((x, binary), lambda: torch.nn.Linear(4, 2))
    assert not two.single_output and str(two.baseline) == "-(y * log(f))"
    logits, labels = torch.randn(32, 1), torch.randint(0, 2, (32,))
    value = LearnedLoss(task.baseline, "classification")(logits, labels)
    expected = F.binary_cross_entropy_with_logits(logits.squeeze(1), labels.float())
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert known_losses("classification", single_output=True)[0] == task.baseline


def test_labels_numbered_from_one_get_a_hint(blobs):
    x, y = blobs
    with pytest.raises(ValueError, match="smallest label is 1: labels must be 0..C-1"):
        make_task((x, y + 1), lambda: torch.nn.Linear(4, 3))


def test_error_integer_features_say_to_cast_to_float(blobs):
    x, y = blobs
    with pytest.raises(ValueError, match=r"cast X to float, e.g. X.astype\('float32'\)"):
        make_task((np.rint(x).astype(np.int64), y), "linear")
