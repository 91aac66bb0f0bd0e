"""Datasets for trials: CIFAR-10/100 from local archives, digits, MNIST-1D, Gaussian
clusters, text.

Nothing here downloads. CIFAR is read from a local data directory (argument, else the
WARMUP_SWEEPS_DATA environment variable) holding the standard archives or their
extracted folders; the other datasets ship with installed packages or are synthetic,
so tests and the quickstart run on any machine.

Every loader returns a `Dataset` of tensors already on the CPU: float32 inputs and
int64 labels for classification, int64 token windows and next-token targets for text.
Datasets are built by name through `DATASET_REGISTRY`, whose entries hold every
option's default; installed plugins add entries through the
`warmup_sweeps.datasets` entry-point group.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import importlib
import importlib.util
import inspect
import io
import os
import pickle
import random
import tarfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from warmup_core.registry import Entry, Option, Registry

DATA_DIR_ENV = "WARMUP_SWEEPS_DATA"


class DataError(ValueError):
    """A data file, directory or option is missing or malformed; the message names it."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split held as tensors.

    kind "image": x (N, C, H, W) float32; "vector": x (N, D) float32; labels y (N,) int64.
    kind "text": x (N, T) int64 token ids, y (N, T) int64 next-token ids; `num_classes`
    is the vocabulary size and `vocab[i]` the character of token i.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    kind: str
    vocab: tuple[str, ...] | None = None
    source: str = ""  # where the data came from (file, archive or generator), for provenance
    image_shape: tuple[int, ...] | None = None  # (C, H, W) of vector data that are images

    def as_images(self) -> Dataset:
        """This dataset with inputs shaped (N, C, H, W) (itself if they already are)."""
        if self.kind == "image":
            return self
        if self.image_shape is None:
            raise DataError(f"dataset.name: {self.name!r} has no image shape")
        shape = (-1, *self.image_shape)
        return replace(
            self,
            x_train=self.x_train.reshape(shape),
            x_test=self.x_test.reshape(shape),
            kind="image",
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input example, without the batch dimension."""
        return tuple(self.x_train.shape[1:])

    @property
    def train_size(self) -> int:
        """Number of training examples (windows for text)."""
        return int(self.x_train.shape[0])

    @property
    def test_size(self) -> int:
        """Number of test examples (windows for text)."""
        return int(self.x_test.shape[0])


def load_dataset(
    name: str,
    *,
    train_size: int | None = None,
    test_size: int | None = None,
    data_dir: str | None = None,
    standardize: bool = True,
    standardize_over: str = "dataset",
    seed: int = 0,
    **options: Any,
) -> Dataset:
    """Load dataset `name`; sizes pick a seeded random subset (None: all of the split).

    `standardize_over` (with `standardize`): `dataset` standardizes each channel or
    feature by the training set's statistics (each builder's own); `example` each
    example by its own (`standardize_examples`, for any builder). `options` are
    dataset specific: digits `as_image`; gaussian `dim`, `num_classes`, `separation`,
    `noise`; text `path`, `context`. Only CIFAR reads `data_dir` (else the
    WARMUP_SWEEPS_DATA variable); the other datasets ignore it, so callers can pass it always.
    """
    entry = DATASET_REGISTRY.get(name)
    for field, size in (("train_size", train_size), ("test_size", test_size)):
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
            raise ValueError(f"dataset.{field}: must be a positive integer or None, got {size!r}")
    if standardize_over not in STANDARDIZE_OVER:
        raise ValueError(
            f"dataset.standardize_over: unknown value {standardize_over!r}; "
            f"allowed: {', '.join(STANDARDIZE_OVER)}"
        )
    per_example = standardize and standardize_over == "example"
    resolved = DATASET_REGISTRY.resolve(name, options)
    out = entry.builder(
        train_size=train_size,
        test_size=test_size,
        data_dir=data_dir,
        standardize=standardize and not per_example,
        seed=seed,
        **resolved,
    )
    dataset = out if isinstance(out, Dataset) else _from_tensors(entry, out)
    return standardize_examples(dataset) if per_example else dataset


def _from_tensors(entry: DatasetEntry, out: Any) -> Dataset:
    """A plugin's (x_train, y_train, x_test, y_test) as a `Dataset`, checked."""
    where = f"dataset {entry.name!r} ({entry.source})"
    if not (isinstance(out, tuple | list) and len(out) == 4):
        raise DataError(f"{where}: the builder must return (x_train, y_train, x_test, y_test)")
    x_tr, y_tr, x_te, y_te = (torch.as_tensor(t) for t in out)
    for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        if x.ndim not in (2, 4) or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
            raise DataError(
                f"{where}: {split} inputs must be (N, D) or (N, C, H, W) with labels (N,); "
                f"got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if not x.is_floating_point() or y.dtype not in (torch.int64, torch.int32):
            raise DataError(f"{where}: {split} inputs must be float and labels integer")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"{where}: train and test inputs differ in shape")
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    if min(int(y_tr.min()), int(y_te.min())) < 0 or num_classes < 2:
        raise DataError(f"{where}: labels must be 0..C-1 with C >= 2 classes")
    return Dataset(
        name=entry.name,
        x_train=x_tr.float().contiguous(),
        y_train=y_tr.long().contiguous(),
        x_test=x_te.float().contiguous(),
        y_test=y_te.long().contiguous(),
        num_classes=num_classes,
        kind="image" if x_tr.ndim == 4 else "vector",
        source=entry.source,
    )


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------


def _subset_indices(n: int, size: int | None, rng: np.random.Generator, field: str) -> np.ndarray:
    """Indices of a random subset of `size` out of `n` (all of them, in order, if None)."""
    if size is None:
        return np.arange(n)
    if size > n:
        raise ValueError(f"dataset.{field}: asked for {size} examples but only {n} are available")
    return np.sort(rng.choice(n, size=size, replace=False))


def _split_rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the train and test subsets, so one size never shifts the other."""
    train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(train_seq), np.random.default_rng(test_seq)


def _standardize(
    x_train: np.ndarray, x_test: np.ndarray, axes: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Shift and scale both splits by the train mean/std over `axes` (per channel or feature)."""
    mean = x_train.mean(axis=axes, keepdims=True, dtype=np.float64)
    std = x_train.std(axis=axes, keepdims=True, dtype=np.float64)
    # A constant feature (e.g. a digits corner pixel) would divide by zero; leave it centred.
    std[std < 1e-8] = 1.0
    mean, std = mean.astype(np.float32), std.astype(np.float32)
    return (x_train - mean) / std, (x_test - mean) / std


def _classification(
    name: str,
    kind: str,
    num_classes: int,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    source: str,
) -> Dataset:
    return Dataset(
        name=name,
        x_train=torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)),
        y_train=torch.from_numpy(np.ascontiguousarray(y_train, dtype=np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)),
        y_test=torch.from_numpy(np.ascontiguousarray(y_test, dtype=np.int64)),
        num_classes=num_classes,
        kind=kind,
        source=source,
    )


# ---------------------------------------------------------------------------
# Per-example standardization (the official pipeline's)
# ---------------------------------------------------------------------------

STANDARDIZE_OVER = ("dataset", "example")


def _standardize_each(x: torch.Tensor) -> torch.Tensor:
    """Each example of `x` (N, ...) minus its mean, over its population std (float64 sums)."""
    flat = x.double().flatten(1)
    mean = flat.mean(1, keepdim=True)
    std = flat.std(1, correction=0, keepdim=True)
    std = torch.where(std < 1e-8, torch.ones_like(std), std)  # a constant example: centred
    return ((flat - mean) / std).to(x.dtype).view_as(x)


def standardize_examples(dataset: Dataset) -> Dataset:
    """`dataset` with every example, train and test, shifted and scaled by the mean and
    population standard deviation of all its own values (pixels and channels together;
    features for vectors): the official pipeline's `_standardize` of Kalra & Barkeshli,
    which uses no statistics of the training set."""
    if dataset.kind == "text":
        raise DataError(f"dataset.standardize_over: {dataset.name!r} is text, not numbers")
    return replace(
        dataset,
        x_train=_standardize_each(dataset.x_train),
        x_test=_standardize_each(dataset.x_test),
    )


# ---------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 from the standard archives
# ---------------------------------------------------------------------------

_PIXELS = 3 * 32 * 32  # one CIFAR image, channel-major (all R, then G, then B), row-major


@dataclass(frozen=True)
class _CifarFormat:
    """Where one distribution of CIFAR keeps its batches and how they are encoded."""

    archive: str  # the .tar.gz as distributed
    folder: str  # the folder the archive extracts to
    train: tuple[str, ...]  # batch files inside the folder
    test: tuple[str, ...]
    binary: bool
    label_bytes: int = 1  # binary format: label bytes before the pixels; the last is used
    label_key: bytes = b"labels"  # pickle format: key of the labels list


_CIFAR_FORMATS: dict[str, tuple[_CifarFormat, ...]] = {
    "cifar10": (
        _CifarFormat(
            "cifar-10-python.tar.gz",
            "cifar-10-batches-py",
            tuple(f"data_batch_{i}" for i in range(1, 6)),
            ("test_batch",),
            binary=False,
        ),
        _CifarFormat(
            "cifar-10-binary.tar.gz",
            "cifar-10-batches-bin",
            tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
            ("test_batch.bin",),
            binary=True,
        ),
    ),
    "cifar100": (
        _CifarFormat(
            "cifar-100-python.tar.gz",
            "cifar-100-python",
            ("train",),
            ("test",),
            binary=False,
            label_key=b"fine_labels",
        ),
        _CifarFormat(
            "cifar-100-binary.tar.gz",
            "cifar-100-binary",
            ("train.bin",),
            ("test.bin",),
            binary=True,
            label_bytes=2,  # coarse label, then fine label
        ),
    ),
}
_CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and plain containers, and nothing else.

    CIFAR's python batches are pickles; a pickle can call any importable function, so a
    tampered file in a shared data directory would otherwise run code on every worker.
    """

    def __init__(self, file: io.BufferedIOBase, *, path: str) -> None:
        super().__init__(file, encoding="bytes")  # CIFAR pickles come from Python 2
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise DataError(
                f"{self._path}: refused to load global {module}.{name} from the pickle; "
                "only numpy arrays and plain containers are allowed"
            )
        return allowed


def _allowed_globals() -> dict[tuple[str, str], Any]:
    # numpy 2 moved numpy.core to numpy._core; pickles name either, so map both names to
    # the objects of the installed numpy without importing the deprecated alias.
    core = getattr(np, "_core", None) or np.core
    reconstruct, scalar = core.multiarray._reconstruct, core.multiarray.scalar
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for package in ("numpy.core", "numpy._core"):
        table[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{package}.multiarray", "scalar")] = scalar
    # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(text, "latin1").
    table[("_codecs", "encode")] = codecs.encode
    return table


_ALLOWED_GLOBALS = _allowed_globals()


def _parse_pickle_batch(raw: bytes, path: str, fmt: _CifarFormat) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) from one python-format batch."""
    try:
        batch = _NumpyOnlyUnpickler(io.BytesIO(raw), path=path).load()
    except DataError:
        raise
    except Exception as exc:  # a truncated pickle can fail in many ways
        raise DataError(f"{path}: corrupt CIFAR batch, cannot unpickle it ({exc})") from exc
    if not isinstance(batch, dict) or b"data" not in batch or fmt.label_key not in batch:
        raise DataError(
            f"{path}: corrupt CIFAR batch, expected a dict with keys "
            f"{b'data'!r} and {fmt.label_key!r}"
        )
    data, labels = batch[b"data"], np.asarray(batch[fmt.label_key])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{path}: corrupt CIFAR batch, 'data' is not a 2-d uint8 array")
    if data.shape[1] != _PIXELS or labels.shape != (data.shape[0],):
        raise DataError(
            f"{path}: corrupt CIFAR batch, data has shape {data.shape} and labels "
            f"{labels.shape}; expected (N, {_PIXELS}) and (N,)"
        )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _parse_binary_batch(raw: bytes, path: str, fmt: _CifarFormat) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) from one binary-format batch."""
    record = fmt.label_bytes + _PIXELS
    if len(raw) == 0 or len(raw) % record:
        raise DataError(
            f"{path}: corrupt CIFAR batch, {len(raw)} bytes is not a whole number of "
            f"{record}-byte records (truncated file?)"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    labels = records[:, fmt.label_bytes - 1].astype(np.int64)  # CIFAR-100: fine label
    return records[:, fmt.label_bytes :].reshape(-1, 3, 32, 32), labels


def _read_cifar_split(
    files: Iterable[str], read: Callable[[str], tuple[bytes, str]], fmt: _CifarFormat
) -> tuple[np.ndarray, np.ndarray]:
    parse = _parse_binary_batch if fmt.binary else _parse_pickle_batch
    images, labels = [], []
    for name in files:
        raw, where = read(name)
        x, y = parse(raw, where, fmt)
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def _read_cifar_folder(
    folder: Path, fmt: _CifarFormat
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    def read(name: str) -> tuple[bytes, str]:
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path}: missing CIFAR batch file in {folder}")
        return path.read_bytes(), str(path)

    return (*_read_cifar_split(fmt.train, read, fmt), *_read_cifar_split(fmt.test, read, fmt))


def _read_cifar_archive(
    archive: Path, fmt: _CifarFormat
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Read members straight from the tarball: nothing is extracted to disk.
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}

            def read(name: str) -> tuple[bytes, str]:
                where = f"{archive}:{fmt.folder}/{name}"
                member = members.get(f"{fmt.folder}/{name}")
                if member is None:
                    raise DataError(f"{where}: missing CIFAR batch file in the archive")
                handle = tar.extractfile(member)
                assert handle is not None  # members are regular files
                return handle.read(), where

            train = _read_cifar_split(fmt.train, read, fmt)
            test = _read_cifar_split(fmt.test, read, fmt)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{archive}: corrupt or truncated CIFAR archive ({exc})") from exc
    return (*train, *test)


def _resolve_data_dir(data_dir: str | None, name: str) -> Path:
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or None
    if data_dir is None:
        raise DataError(
            f"dataset.data_dir: {name} is read from a local directory, but neither "
            f"dataset.data_dir nor the {DATA_DIR_ENV} environment variable is set"
        )
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: data directory for {name} does not exist")
    return path


def _load_cifar(
    name: str,
    *,
    train_size: int | None,
    test_size: int | None,
    data_dir: str | None,
    standardize: bool,
    seed: int,
) -> Dataset:
    root = _resolve_data_dir(data_dir, name)
    # An extracted folder is preferred over an archive: it is what a user unpacked on purpose.
    candidates = [(root / f.folder, f) for f in _CIFAR_FORMATS[name]]
    candidates += [(root / f.archive, f) for f in _CIFAR_FORMATS[name]]
    for path, fmt in candidates:
        if path.is_dir():
            x_tr, y_tr, x_te, y_te = _read_cifar_folder(path, fmt)
            break
        if path.is_file() and path.name == fmt.archive:
            x_tr, y_tr, x_te, y_te = _read_cifar_archive(path, fmt)
            break
    else:
        looked_for = ", ".join(p.name + ("/" if p.name == f.folder else "") for p, f in candidates)
        raise DataError(f"{root}: no {name} data found; looked for {looked_for}")

    classes = _CIFAR_CLASSES[name]
    for split, labels in (("train", y_tr), ("test", y_te)):
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            raise DataError(
                f"{path}: corrupt CIFAR {split} labels, values outside 0..{classes - 1}"
            )

    train_rng, test_rng = _split_rngs(seed)
    # Subset the uint8 images first: converting 50k images to float is the expensive part.
    i_tr = _subset_indices(len(y_tr), train_size, train_rng, "train_size")
    i_te = _subset_indices(len(y_te), test_size, test_rng, "test_size")
    x_train = x_tr[i_tr].astype(np.float32) / 255.0
    x_test = x_te[i_te].astype(np.float32) / 255.0
    if standardize:
        x_train, x_test = _standardize(x_train, x_test, axes=(0, 2, 3))
    return _classification(
        name, "image", classes, x_train, y_tr[i_tr], x_test, y_te[i_te], source=str(path)
    )


def _load_cifar10(**kwargs: Any) -> Dataset:
    return _load_cifar("cifar10", **kwargs)


def _load_cifar100(**kwargs: Any) -> Dataset:
    return _load_cifar("cifar100", **kwargs)


# ---------------------------------------------------------------------------
# Digits (ships with scikit-learn)
# ---------------------------------------------------------------------------

DIGITS_EXAMPLES = 1797  # images in scikit-learn's digits
DIGITS_TEST_SIZE = 297  # of them, leaving 1500 for training


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as (pixels (1797, 64), labels (1797,)), the arrays of
    `sklearn.datasets.load_digits`.

    Read from the CSV file scikit-learn ships, found without importing scikit-learn
    (0.9 s, once per process: a sweep's driver and every worker would pay it before
    their first digits trial); through `load_digits` when a release moves the file.
    """
    spec = importlib.util.find_spec("sklearn")
    roots = spec.submodule_search_locations if spec is not None else None
    path = Path(next(iter(roots or []), "")) / "datasets" / "data" / "digits.csv.gz"
    if roots and path.is_file():
        table = np.loadtxt(path, delimiter=",")
        return table[:, :-1], table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data, bunch.target


def _load_digits(
    *,
    train_size: int | None,
    test_size: int | None,
    data_dir: str | None,
    standardize: bool,
    seed: int,
    as_image: bool,
) -> Dataset:
    pixels, labels = digits_arrays()
    x_all = pixels.astype(np.float32) / 16.0  # pixel intensities are 0..16
    y_all = labels.astype(np.int64)
    n = len(y_all)
    n_test = DIGITS_TEST_SIZE if test_size is None else test_size
    if n_test >= n:
        raise ValueError(f"dataset.test_size: {n_test} leaves no training images out of {n}")
    # The seed fixes the split; the test set is the tail of one seeded shuffle.
    order = np.random.default_rng(seed).permutation(n)
    train_pool, test_idx = order[: n - n_test], order[n - n_test :]
    train_rng, _ = _split_rngs(seed)
    train_idx = train_pool[_subset_indices(len(train_pool), train_size, train_rng, "train_size")]

    x_train, x_test = x_all[train_idx], x_all[test_idx]
    if standardize:
        x_train, x_test = _standardize(x_train, x_test, axes=(0,))
    kind = "vector"
    if as_image:
        x_train, x_test, kind = x_train.reshape(-1, 1, 8, 8), x_test.reshape(-1, 1, 8, 8), "image"
    dataset = _classification(
        "digits",
        kind,
        10,
        x_train,
        y_all[train_idx],
        x_test,
        y_all[test_idx],
        source="sklearn.datasets.load_digits",
    )
    return replace(dataset, image_shape=(1, 8, 8))


# ---------------------------------------------------------------------------
# MNIST-1D (generated offline by the `mnist1d` package)
# ---------------------------------------------------------------------------

MNIST1D_LENGTH = 40  # features per example (the package's final_seq_length)


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) of MNIST-1D with the package's default arguments
    (4000 / 1000 examples), generated from its templates; read-only, cached per process.

    `make_dataset` is used, never `get_dataset` (which downloads, and writes a pickle
    when that fails). Generation seeds NumPy's and `random`'s global generators; their
    states are put back, so loading the data changes no caller's random stream.
    """
    from mnist1d.data import get_dataset_args, make_dataset  # imports matplotlib: on use only

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    arrays = (data["x"], data["y"], data["x_test"], data["y_test"])
    for array in arrays:
        array.setflags(write=False)
    return arrays


def _load_mnist1d(
    *,
    train_size: int | None,
    test_size: int | None,
    data_dir: str | None,
    standardize: bool,
    seed: int,
) -> Dataset:
    """MNIST-1D (Greydanus & Kobak 2024): ten 1-D digit templates of 12 points, padded,
    sheared, scaled, translated and noised into 40-point signals. The split is the
    package's own (generation seed 42); `seed` only picks subsets. Vectors only: the
    convolutional models here are 2-D with 2x2 pools, which a 1 x 40 signal cannot take.
    """
    x_tr, y_tr, x_te, y_te = _mnist1d_arrays()
    train_rng, test_rng = _split_rngs(seed)
    i_tr = _subset_indices(len(y_tr), train_size, train_rng, "train_size")
    i_te = _subset_indices(len(y_te), test_size, test_rng, "test_size")
    x_train, x_test = x_tr[i_tr].astype(np.float32), x_te[i_te].astype(np.float32)
    if standardize:
        x_train, x_test = _standardize(x_train, x_test, axes=(0,))
    version = metadata.version("mnist1d")
    source = f"mnist1d {version}: make_dataset(get_dataset_args())"
    return _classification("mnist1d", "vector", 10, x_train, y_tr[i_tr], x_test, y_te[i_te], source)


# ---------------------------------------------------------------------------
# Gaussian clusters (synthetic)
# ---------------------------------------------------------------------------

GAUSSIAN_TRAIN_SIZE = 4096
GAUSSIAN_TEST_SIZE = 1024


def _load_gaussian(
    *,
    train_size: int | None,
    test_size: int | None,
    data_dir: str | None,
    standardize: bool,
    seed: int,
    dim: int,
    num_classes: int,
    separation: float,
    noise: float,
    image_shape: list[int] | None,
) -> Dataset:
    """One isotropic Gaussian per class: x = mu_y + noise * N(0, I).

    Class means are random directions of norm `separation`, so two means lie about
    `separation * sqrt(2)` apart while the noise along that line has std `noise`.
    `image_shape` (C, H, W with C*H*W = dim) lets convolutional models read them.
    """

    means_rng, train_rng, test_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    directions = means_rng.standard_normal((num_classes, dim))
    means = separation * directions / np.linalg.norm(directions, axis=1, keepdims=True)

    def sample(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.arange(n) % num_classes)  # balanced classes
        x = means[labels] + noise * rng.standard_normal((n, dim))
        return x.astype(np.float32), labels

    x_train, y_train = sample(train_size or GAUSSIAN_TRAIN_SIZE, train_rng)
    x_test, y_test = sample(test_size or GAUSSIAN_TEST_SIZE, test_rng)
    if standardize:
        x_train, x_test = _standardize(x_train, x_test, axes=(0,))
    source = (
        f"gaussian(dim={dim}, num_classes={num_classes}, separation={separation}, noise={noise})"
    )
    dataset = _classification(
        "gaussian", "vector", num_classes, x_train, y_train, x_test, y_test, source
    )
    return replace(dataset, image_shape=tuple(image_shape) if image_shape else None)


# ---------------------------------------------------------------------------
# Character-level text
# ---------------------------------------------------------------------------

# The default corpus must exist offline on every machine, so it is text that ships with
# CPython: the Zen of Python followed by the source of three large pure-Python stdlib
# modules (about 200k characters of English comments, docstrings and code). It is fixed
# for a given Python version; pass `path` for a corpus that never changes.
DEFAULT_TEXT_MODULES: tuple[str, ...] = ("textwrap", "difflib", "argparse")
TEXT_TRAIN_FRACTION = 0.9
UNKNOWN_CHAR = "\ufffd"  # test characters never seen in training map to this token


def default_text() -> str:
    """The default text corpus: the Zen of Python plus stdlib module sources."""
    with contextlib.redirect_stdout(io.StringIO()):  # `import this` prints the Zen
        this = importlib.import_module("this")
    parts = [codecs.decode(this.s, "rot13")]
    for name in DEFAULT_TEXT_MODULES:
        try:
            parts.append(inspect.getsource(importlib.import_module(name)))
        except (OSError, TypeError) as exc:  # a stripped install may ship only .pyc files
            raise DataError(
                f"dataset.path: the default text needs the source of the stdlib module "
                f"{name!r}, which this Python does not ship; pass dataset.path"
            ) from exc
    return "\n\n".join(parts)


def _text_windows(
    tokens: np.ndarray, context: int, size: int | None, rng: np.random.Generator, field: str
) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) windows (N, context): y is x shifted by one character."""
    num_offsets = len(tokens) - context  # each window needs context + 1 characters
    if size is None:
        offsets = np.arange(0, num_offsets, context)  # non-overlapping, covers the split
    else:
        offsets = _subset_indices(num_offsets, size, rng, field)
    index = offsets[:, None] + np.arange(context + 1)[None, :]
    windows = tokens[index]
    return windows[:, :-1], windows[:, 1:]


def _load_text(
    *,
    train_size: int | None,
    test_size: int | None,
    data_dir: str | None,
    standardize: bool,
    seed: int,
    path: str | None,
    context: int,
) -> Dataset:
    if path is None:
        text, source = default_text(), "default: Zen of Python + " + ", ".join(DEFAULT_TEXT_MODULES)
    else:
        file = Path(path).expanduser()
        if not file.is_file():
            raise DataError(f"{file}: text file for dataset.path does not exist")
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{file}: not UTF-8 text ({exc})") from exc
        source = str(file)

    cut = int(len(text) * TEXT_TRAIN_FRACTION)
    train_text, test_text = text[:cut], text[cut:]
    if min(len(train_text), len(test_text)) <= context:
        raise DataError(
            f"{source}: {len(text)} characters is too short for context {context}; each "
            f"split (90%/10%) needs more than {context} characters"
        )
    vocab = sorted(set(train_text))
    if set(test_text) - set(vocab) and UNKNOWN_CHAR not in vocab:
        vocab.append(UNKNOWN_CHAR)
    index = {ch: i for i, ch in enumerate(vocab)}
    unknown = index.get(UNKNOWN_CHAR, -1)  # only looked up when the test text needs it
    train_tokens = np.fromiter((index[c] for c in train_text), np.int64, len(train_text))
    test_tokens = np.fromiter((index.get(c, unknown) for c in test_text), np.int64, len(test_text))

    train_rng, test_rng = _split_rngs(seed)
    x_train, y_train = _text_windows(train_tokens, context, train_size, train_rng, "train_size")
    x_test, y_test = _text_windows(test_tokens, context, test_size, test_rng, "test_size")
    return Dataset(
        name="text",
        x_train=torch.from_numpy(np.ascontiguousarray(x_train)),
        y_train=torch.from_numpy(np.ascontiguousarray(y_train)),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test)),
        y_test=torch.from_numpy(np.ascontiguousarray(y_test)),
        num_classes=len(vocab),
        kind="text",
        vocab=tuple(vocab),
        source=source,
    )


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSizes:
    """How many examples a dataset holds, so that sizes are checked before it loads.

    Fixed splits (CIFAR): `train` training and `test` test examples. One pool
    (`pooled`, digits): `train` examples in all, of which the test split takes
    `test_size` (default `test`) and training draws from the rest.
    """

    train: int
    test: int
    pooled: bool = False

    def check(self, name: str, train_size: int | None, test_size: int | None) -> None:
        """Raise ValueError naming the field of the first size beyond the data."""
        if not self.pooled:
            for field, size, limit, split in (
                ("train_size", train_size, self.train, "training"),
                ("test_size", test_size, self.test, "test"),
            ):
                if size is not None and size > limit:
                    raise ValueError(
                        f"dataset.{field}: {size} is more than the {limit} {split} examples "
                        f"of {name}"
                    )
            return
        n_test = self.test if test_size is None else test_size
        if n_test >= self.train:
            raise ValueError(
                f"dataset.test_size: {n_test} leaves no training examples out of the "
                f"{self.train} of {name}"
            )
        if train_size is not None and train_size > self.train - n_test:
            held = (
                f"test_size {test_size}"
                if test_size is not None
                else f"the default test_size {self.test}"
            )
            raise ValueError(
                f"dataset.train_size: {train_size} is more than the {self.train - n_test} training "
                f"examples of {name} ({self.train} in all, {held} held out)"
            )


@dataclass(frozen=True)
class DatasetEntry(Entry):
    """A dataset: `builder(*, train_size, test_size, data_dir, standardize, seed, **options)`.

    The builder returns a `Dataset`, or (x_train, y_train, x_test, y_test) tensors:
    float inputs (N, D) or (N, C, H, W) and int64 labels 0..C-1. It must be a pure
    function of its arguments (`seed` is the trial's `data_seed`); sizes of None
    mean the builder's own default. `kind` is what its inputs are ('vector',
    'image' or 'text'); `image_shape(options)` gives (C, H, W) when vector inputs
    can also be read as images (None when they cannot). `examples` (a `DataSizes`)
    lets a config's `train_size` and `test_size` be checked before anything loads.
    """

    kind: str = "vector"
    image_shape: Callable[[dict[str, Any]], tuple[int, ...] | None] | None = None
    examples: DataSizes | None = None  # None: unbounded or unknown before loading

    def check_sizes(self, train_size: int | None, test_size: int | None) -> None:
        """Raise ValueError naming the field when `train_size` or `test_size` asks for
        more examples than the dataset holds (nothing to check without `examples`)."""
        if self.examples is not None:
            self.examples.check(self.name, train_size, test_size)

    def kinds(self, options: dict[str, Any]) -> frozenset[str]:
        """Input kinds this dataset can serve with these (resolved) options."""
        shape = self.image_shape(options) if self.image_shape is not None else None
        return frozenset({self.kind, "image"} if shape else {self.kind})


def _check_gaussian(options: dict[str, Any]) -> None:
    shape = options["image_shape"]
    if shape is not None and int(np.prod(shape)) != options["dim"]:
        raise ValueError(
            f"dataset.image_shape: {shape} has {int(np.prod(shape))} entries, "
            f"dataset.dim is {options['dim']}"
        )


DATASET_REGISTRY: Registry[DatasetEntry] = Registry(
    "dataset", "warmup_sweeps.datasets", DatasetEntry
)
for _name in ("cifar10", "cifar100"):
    DATASET_REGISTRY.register(
        DatasetEntry(
            _name,
            _load_cifar10 if _name == "cifar10" else _load_cifar100,
            description=f"{_name.upper()} from local archives (data_dir)",
            kind="image",
            examples=DataSizes(50_000, 10_000),
        )
    )
DATASET_REGISTRY.register(
    DatasetEntry(
        "digits",
        _load_digits,
        {"as_image": Option(bool, False, help="shape inputs (1, 8, 8) for every model")},
        description=f"scikit-learn's 8x8 digits ({DIGITS_EXAMPLES} images)",
        image_shape=lambda options: (1, 8, 8),
        examples=DataSizes(DIGITS_EXAMPLES, DIGITS_TEST_SIZE, pooled=True),
    )
)
DATASET_REGISTRY.register(
    DatasetEntry(
        "mnist1d",
        _load_mnist1d,
        description="MNIST-1D: 40-point 1-D digits, 4000 train / 1000 test, generated offline",
    )
)
DATASET_REGISTRY.register(
    DatasetEntry(
        "gaussian",
        _load_gaussian,
        {
            "dim": Option(int, 32, minimum=1),
            "num_classes": Option(int, 10, minimum=2),
            "separation": Option(float, 3.0, minimum=0),
            "noise": Option(float, 1.0, minimum=0),
            "image_shape": Option(list, None, length=3, help="(C, H, W), C*H*W = dim"),
        },
        check=_check_gaussian,
        description="synthetic Gaussian clusters",
        image_shape=lambda options: options["image_shape"],
    )
)
DATASET_REGISTRY.register(
    DatasetEntry(
        "text",
        _load_text,
        {"path": Option(str, None), "context": Option(int, 64, minimum=1)},
        description="character-level text (default: Python's own sources)",
        kind="text",
    )
)
DATASETS: tuple[str, ...] = DATASET_REGISTRY.names(plugins=False)
