"""Checks of the user's data, before a :class:`~symloss.task.Task` is built from it:
arrays from pairs and Datasets, finite numbers, consistent shapes across the splits,
class labels (text labels encoded, every class learnable), target scale, the task kind,
and the seeded splits of what the user did not split.

Each check raises a ValueError that names the split and says what to do.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from symloss.kinds import REGRESSION, check_task_kind


def to_arrays(data: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) arrays from a pair of arrays/tensors or a Dataset yielding (x, y)."""
    if isinstance(data, tuple | list) and len(data) == 2:
        x, y = data
        return _as_array(x, f"{name} inputs"), _as_array(y, f"{name} targets")
    if isinstance(data, torch.utils.data.Dataset):
        try:
            n = len(data)  # type: ignore[arg-type]
        except TypeError as error:
            raise ValueError(f"{name}: datasets must have a length (map-style)") from error
        if n == 0:
            raise ValueError(f"{name} split is empty")
        xs, ys = [], []
        for i in range(n):
            item = data[i]
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise ValueError(f"{name}: dataset items must be (x, y) pairs, got {type(item)}")
            xs.append(_as_array(item[0], f"{name} inputs"))
            ys.append(_as_array(item[1], f"{name} targets"))
        return np.stack(xs), np.stack(ys)
    raise ValueError(
        f"{name}: expected an (X, y) pair of arrays/tensors or a torch Dataset yielding (x, y), "
        f"got {type(data).__name__}"
    )


def _as_array(value: Any, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as error:
        raise ValueError(f"{name}: cannot convert {type(value).__name__} to an array") from error


def check_finite(array: np.ndarray, name: str) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ValueError(f"{name} contain {bad} NaN/inf values; clean or impute them first")


_LARGE, _TOO_LARGE = 1e6, 1e15


def numeric(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` as numbers: object arrays of numbers are converted, anything else that
    is not numeric (strings, mixed objects, complex numbers) is refused, naming it."""
    if array.dtype.kind in "biuf":
        return array
    if array.dtype.kind == "O":
        try:
            return array.astype(np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"{name} are an object array that does not convert to numbers ({error}); "
                "encode non-numeric columns as numbers first"
            ) from error
    raise ValueError(
        f"{name} have dtype {array.dtype}, not numbers; encode them as numbers first"
    )


def check_consistent(parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Every split has the training split's input and target shapes, and no split given
    twice: training, validating and testing on the same examples would make the search
    reward memorising and the meta-test measure it."""
    x, y = parts["train"]
    for name, (other_x, other_y) in parts.items():
        if other_x.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"{name} inputs have shape {other_x.shape[1:]} per example but train inputs "
                f"have {x.shape[1:]}; every split needs the same features"
            )
        if other_y.shape[1:] != y.shape[1:]:
            raise ValueError(
                f"{name} targets have shape {other_y.shape[1:]} per example but train "
                f"targets have {y.shape[1:]}"
            )
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if all(np.array_equal(p, q) for p, q in zip(parts[a], parts[b], strict=True)):
                raise ValueError(
                    f"the {a} and {b} splits are the same data; give separate examples, or "
                    f"leave {b!r} out to have it split off from train"
                )


def is_text(labels: np.ndarray) -> bool:
    return labels.dtype.kind in "US" or (
        labels.dtype.kind == "O" and any(isinstance(v, str) for v in labels.reshape(-1))
    )


def encode_labels(
    parts: dict[str, tuple[np.ndarray, np.ndarray]],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Class labels given as strings -> 0..C-1 in sorted order of the training labels."""
    texts = {}
    for name, (_, y) in parts.items():
        if not (y.dtype.kind in "US" or all(isinstance(v, str) for v in y.reshape(-1))):
            raise ValueError(
                f"{name} class labels mix strings with other types; give the labels of "
                "every split as strings, or all as integers 0..C-1"
            )
        texts[name] = y.astype(str)
    classes = np.unique(texts["train"])
    encoded = {}
    for name, (x, _) in parts.items():
        unseen = sorted(set(np.unique(texts[name])) - set(classes))
        if unseen:
            raise ValueError(
                f"class(es) {unseen[:5]} appear in the {name} split but not in train; the "
                "model could never learn them: give train examples of every class"
            )
        encoded[name] = (x, np.searchsorted(classes, texts[name]).astype(np.int64))
    return encoded


def check_scale(parts: dict[str, tuple[np.ndarray, np.ndarray]], kind: str) -> None:
    """Refuse float inputs (and regression targets) so large that float32 training
    overflows; warn when they are large enough that plain SGD usually diverges."""
    for name, (x, y) in parts.items():
        arrays = [(x, "inputs")] + ([(y, "targets")] if kind == REGRESSION else [])
        for array, what in arrays:
            if array.dtype.kind != "f" or array.size == 0:
                continue
            largest = float(np.abs(array).max())
            if largest > _TOO_LARGE:
                raise ValueError(
                    f"{name} {what} reach {largest:.3g}: training in float32 overflows at "
                    f"this scale; standardise them (e.g. sklearn's StandardScaler)"
                )
            if largest > _LARGE:
                warnings.warn(
                    f"{name} {what} reach {largest:.3g}; SGD usually diverges on values "
                    "this large: standardise them (e.g. sklearn's StandardScaler)",
                    stacklevel=4,
                )


def check_classes(parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> int:
    """The number of classes, after checking the labels can be learned: every class of
    the other splits is in train, train has two or more, and the labels are 0..C-1
    without most numbers skipped (the model gets one output per number)."""
    present = np.unique(parts["train"][1])
    if len(present) < 2:
        raise ValueError(
            "the training split has fewer than 2 classes; classification needs at least 2"
        )
    for name, (_, y) in parts.items():
        unseen = np.setdiff1d(np.unique(y), present)
        if len(unseen):
            raise ValueError(
                f"class(es) {unseen[:5].tolist()} appear in the {name} split but not in "
                "train; the model could never learn them: give train examples of every class"
            )
    n_classes = int(present.max()) + 1
    if n_classes > 2 * len(present):
        raise ValueError(
            f"the labels are {len(present)} classes numbered up to {n_classes - 1}, and the "
            f"model would get one output for each of the {n_classes} numbers; encode the "
            "classes as 0..C-1 (e.g. np.unique(y, return_inverse=True))"
        )
    return n_classes


def infer_kind(y: np.ndarray, task: str | None) -> str:
    if task is not None:
        return check_task_kind(task)
    if y.dtype.kind in "iub":
        return "classification"
    if y.dtype.kind == "f":
        return "regression"
    raise ValueError(
        f"cannot infer the task from targets of dtype {y.dtype}; pass task='classification' "
        "or task='regression'"
    )


def split_off(
    x: np.ndarray, y: np.ndarray, fraction: float, stratify: bool, seed: int, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split off ``fraction`` of (x, y); stratified when asked and possible."""
    labels = y if stratify else None
    try:
        a_x, b_x, a_y, b_y = train_test_split(
            x, y, test_size=fraction, random_state=seed, stratify=labels
        )
    except ValueError as error:
        if labels is None:
            raise ValueError(f"cannot split off a {name} split: {error}") from error
        warnings.warn(
            f"stratified {name} split impossible ({error}); splitting without stratification",
            stacklevel=3,
        )
        a_x, b_x, a_y, b_y = train_test_split(x, y, test_size=fraction, random_state=seed)
    return a_x, a_y, b_x, b_y
