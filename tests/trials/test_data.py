"""Tests for trials.data: tiny CIFAR archives in the real formats, digits, gaussian, text."""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
import random
import struct
import tarfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from trials.data import (
    DATA_DIR_ENV,
    DATASETS,
    UNKNOWN_CHAR,
    DataError,
    Dataset,
    digits_arrays,
    load_dataset,
)

PIXELS = 3 * 32 * 32
PER_BATCH = 4  # training records in each CIFAR-10 data batch
TEST_RECORDS = 6


# ---------------------------------------------------------------------------
# Writers of tiny CIFAR distributions in the real on-disk formats
# ---------------------------------------------------------------------------


class Py2StylePickler(pickle._Pickler):
    """Writes pickles the way CIFAR's Python 2 pickles look: bytes and str as BINSTRING,
    arrays rebuilt through numpy.core.multiarray._reconstruct (the pre-numpy-2 name)."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self.save_bytes(obj.encode("latin1"))

    def save_global(self, obj, name=None) -> None:
        if getattr(obj, "__name__", None) == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def py2_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    Py2StylePickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def random_split(n: int, classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(0, 256, (n, PIXELS), dtype=np.uint8), rng.integers(0, classes, n)


def write_cifar(root: Path, name: str, binary: bool, archive: bool = False, seed: int = 0) -> dict:
    """Write a tiny cifar10/cifar100 distribution; return the arrays it should load as."""
    rng = np.random.default_rng(seed)
    classes = 10 if name == "cifar10" else 100
    if name == "cifar10":
        folder = "cifar-10-batches-bin" if binary else "cifar-10-batches-py"
        suffix = ".bin" if binary else ""
        train_files = [f"data_batch_{i}{suffix}" for i in range(1, 6)]
        test_files = [f"test_batch{suffix}"]
        batches = [random_split(PER_BATCH, classes, rng) for _ in train_files]
    else:
        folder = "cifar-100-binary" if binary else "cifar-100-python"
        train_files, test_files = (["train.bin"], ["test.bin"]) if binary else (["train"], ["test"])
        batches = [random_split(5 * PER_BATCH, classes, rng)]
    batches.append(random_split(TEST_RECORDS, classes, rng))

    directory = root / folder
    directory.mkdir(parents=True)
    for file, (x, y) in zip(train_files + test_files, batches, strict=True):
        coarse = y // 5  # CIFAR-100 coarse labels: written, but must not be what loads
        if binary and name == "cifar10":
            payload = np.concatenate([y[:, None].astype(np.uint8), x], axis=1).tobytes()
        elif binary:
            labels = np.stack([coarse, y], axis=1).astype(np.uint8)
            payload = np.concatenate([labels, x], axis=1).tobytes()
        elif name == "cifar10":
            batch = {b"batch_label": b"tiny", b"labels": y.tolist(), b"data": x}
            payload = py2_pickle(batch | {b"filenames": [b"a.png"] * len(y)})
        else:
            # Python 3's own protocol-2 pickle: bytes go through _codecs.encode.
            batch = {b"fine_labels": y.tolist(), b"coarse_labels": coarse.tolist(), b"data": x}
            payload = pickle.dumps(batch, protocol=2)
        (directory / file).write_bytes(payload)
    (directory / "readme.html").write_text("not a batch")

    if archive:
        archive_name = {
            ("cifar10", True): "cifar-10-binary.tar.gz",
            ("cifar10", False): "cifar-10-python.tar.gz",
            ("cifar100", True): "cifar-100-binary.tar.gz",
            ("cifar100", False): "cifar-100-python.tar.gz",
        }[(name, binary)]
        with tarfile.open(root / archive_name, "w:gz") as tar:
            tar.add(directory, arcname=folder)
        for file in directory.iterdir():
            file.unlink()
        directory.rmdir()
    return {
        "x_train": np.concatenate([x for x, _ in batches[:-1]]),
        "y_train": np.concatenate([y for _, y in batches[:-1]]),
        "x_test": batches[-1][0],
        "y_test": batches[-1][1],
    }


def as_raw_pixels(x: torch.Tensor) -> np.ndarray:
    """Undo the [0, 1] scaling of unstandardized images: back to (N, 3072) uint8."""
    return np.rint(x.numpy() * 255).astype(np.uint8).reshape(len(x), -1)


# ---------------------------------------------------------------------------
# CIFAR: every format round-trips exactly
# ---------------------------------------------------------------------------

FORMATS = [
    pytest.param(name, binary, archive, id=f"{name}-{'bin' if binary else 'py'}-{kind}")
    for name in ("cifar10", "cifar100")
    for binary in (True, False)
    for archive, kind in ((False, "folder"), (True, "targz"))
]


@pytest.mark.parametrize(("name", "binary", "archive"), FORMATS)
def test_cifar_formats_round_trip_pixels_and_labels(tmp_path, name, binary, archive):
    expected = write_cifar(tmp_path, name, binary, archive)
    data = load_dataset(name, data_dir=str(tmp_path), standardize=False)

    assert data.kind == "image"
    assert data.num_classes == (10 if name == "cifar10" else 100)
    assert data.x_train.shape == (5 * PER_BATCH, 3, 32, 32)
    assert data.x_test.shape == (TEST_RECORDS, 3, 32, 32)
    assert data.input_shape == (3, 32, 32)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert float(data.x_train.min()) >= 0.0 and float(data.x_train.max()) <= 1.0
    np.testing.assert_array_equal(as_raw_pixels(data.x_train), expected["x_train"])
    np.testing.assert_array_equal(as_raw_pixels(data.x_test), expected["x_test"])
    np.testing.assert_array_equal(data.y_train.numpy(), expected["y_train"])
    np.testing.assert_array_equal(data.y_test.numpy(), expected["y_test"])


def test_cifar_channels_are_planes_of_the_record(tmp_path):
    # The first 1024 bytes of a record are the red plane, row-major.
    expected = write_cifar(tmp_path, "cifar10", binary=True)
    data = load_dataset("cifar10", data_dir=str(tmp_path), standardize=False)
    red = expected["x_train"][0, :1024].reshape(32, 32)
    np.testing.assert_array_equal(np.rint(data.x_train[0, 0].numpy() * 255), red)


def test_cifar_standardizes_per_channel_with_train_statistics(tmp_path):
    expected = write_cifar(tmp_path, "cifar10", binary=True)
    data = load_dataset("cifar10", data_dir=str(tmp_path))

    train = data.x_train.double()
    torch.testing.assert_close(
        train.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        train.std(dim=(0, 2, 3), unbiased=False),
        torch.ones(3, dtype=torch.float64),
        atol=1e-4,
        rtol=0,
    )

    raw_train = expected["x_train"].reshape(-1, 3, 32, 32) / 255.0
    mean = raw_train.mean(axis=(0, 2, 3), keepdims=True)
    std = raw_train.std(axis=(0, 2, 3), keepdims=True)
    raw_test = expected["x_test"].reshape(-1, 3, 32, 32) / 255.0
    np.testing.assert_allclose(data.x_test.numpy(), (raw_test - mean) / std, atol=1e-5)


def test_cifar_subsets_are_seeded_and_keep_labels_with_images(tmp_path):
    write_cifar(tmp_path, "cifar10", binary=True)
    full = load_dataset("cifar10", data_dir=str(tmp_path), standardize=False)
    a = load_dataset(
        "cifar10", data_dir=str(tmp_path), standardize=False, train_size=7, test_size=3, seed=1
    )
    b = load_dataset(
        "cifar10", data_dir=str(tmp_path), standardize=False, train_size=7, test_size=3, seed=1
    )
    c = load_dataset(
        "cifar10", data_dir=str(tmp_path), standardize=False, train_size=7, test_size=3, seed=2
    )

    assert a.x_train.shape == (7, 3, 32, 32) and a.x_test.shape == (3, 3, 32, 32)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    # Each subset row is a row of the full split, with its own label.
    full_rows = {
        row.tobytes(): label
        for row, label in zip(as_raw_pixels(full.x_train), full.y_train.tolist(), strict=True)
    }
    picked = as_raw_pixels(a.x_train)
    assert len({row.tobytes() for row in picked}) == 7
    for row, label in zip(picked, a.y_train.tolist(), strict=True):
        assert full_rows[row.tobytes()] == label


def test_cifar_subset_larger_than_split_names_the_field(tmp_path):
    write_cifar(tmp_path, "cifar10", binary=True)
    with pytest.raises(ValueError, match=r"dataset\.train_size.*21.*20"):
        load_dataset("cifar10", data_dir=str(tmp_path), train_size=21)


def test_cifar_reads_data_dir_from_environment(tmp_path, monkeypatch):
    write_cifar(tmp_path, "cifar100", binary=True)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    data = load_dataset("cifar100", test_size=2)
    assert data.x_test.shape == (2, 3, 32, 32)
    assert str(tmp_path) in data.source


def test_cifar_without_data_dir_names_argument_and_environment_variable(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(DataError, match=rf"dataset\.data_dir.*{DATA_DIR_ENV}"):
        load_dataset("cifar10")


def test_cifar_missing_directory_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=r"nowhere.*does not exist"):
        load_dataset("cifar10", data_dir=str(missing))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "cifar10",
            [
                "cifar-10-batches-py/",
                "cifar-10-batches-bin/",
                "cifar-10-python.tar.gz",
                "cifar-10-binary.tar.gz",
            ],
        ),
        (
            "cifar100",
            [
                "cifar-100-python/",
                "cifar-100-binary/",
                "cifar-100-python.tar.gz",
                "cifar-100-binary.tar.gz",
            ],
        ),
    ],
)
def test_cifar_empty_directory_lists_what_was_looked_for(tmp_path, name, expected):
    (tmp_path / "something-else.tar.gz").write_bytes(b"")
    with pytest.raises(DataError) as error:
        load_dataset(name, data_dir=str(tmp_path))
    message = str(error.value)
    assert str(tmp_path) in message
    for item in expected:
        assert item in message


def test_cifar_missing_batch_in_folder_is_named(tmp_path):
    write_cifar(tmp_path, "cifar10", binary=True)
    (tmp_path / "cifar-10-batches-bin" / "data_batch_4.bin").unlink()
    with pytest.raises(DataError, match=r"data_batch_4\.bin.*missing"):
        load_dataset("cifar10", data_dir=str(tmp_path))


def test_cifar_truncated_binary_batch_is_named(tmp_path):
    write_cifar(tmp_path, "cifar10", binary=True)
    batch = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    batch.write_bytes(batch.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"data_batch_3\.bin.*corrupt"):
        load_dataset("cifar10", data_dir=str(tmp_path))


def test_cifar_truncated_archive_is_named(tmp_path):
    write_cifar(tmp_path, "cifar10", binary=True, archive=True)
    archive = tmp_path / "cifar-10-binary.tar.gz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cifar-10-binary\.tar\.gz.*corrupt"):
        load_dataset("cifar10", data_dir=str(tmp_path))


def test_cifar_truncated_pickle_batch_is_named(tmp_path):
    write_cifar(tmp_path, "cifar100", binary=False)
    batch = tmp_path / "cifar-100-python" / "test"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(DataError, match=r"cifar-100-python/test.*corrupt"):
        load_dataset("cifar100", data_dir=str(tmp_path))


def test_cifar_pickle_with_wrong_contents_is_named(tmp_path):
    write_cifar(tmp_path, "cifar10", binary=False)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(
        pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, protocol=2)
    )
    with pytest.raises(DataError, match=r"test_batch.*corrupt.*shape"):
        load_dataset("cifar10", data_dir=str(tmp_path))


class RunsAShellCommand:
    """What a tampered batch could contain: unpickling it would call os.system."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("archive", [False, True], ids=["folder", "targz"])
def test_cifar_malicious_pickle_is_refused_without_running_it(tmp_path, archive):
    write_cifar(tmp_path / "data", "cifar10", binary=False)
    marker = tmp_path / "pwned"
    batch = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_2"
    payload = {b"data": RunsAShellCommand(f"touch {marker}"), b"labels": [0]}
    batch.write_bytes(pickle.dumps(payload, protocol=2))
    if archive:
        folder = tmp_path / "data" / "cifar-10-batches-py"
        with tarfile.open(tmp_path / "data" / "cifar-10-python.tar.gz", "w:gz") as tar:
            tar.add(folder, arcname=folder.name)
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()

    with pytest.raises(DataError) as error:
        load_dataset("cifar10", data_dir=str(tmp_path / "data"))
    message = str(error.value)
    assert "data_batch_2" in message
    assert f"{os.system.__module__}.system" in message  # posix.system on Linux
    assert not marker.exists()


class CallsEval:
    def __reduce__(self):
        return (eval, ("40 + 2",))


def test_cifar_pickle_refuses_builtin_functions_in_any_protocol(tmp_path):
    write_cifar(tmp_path, "cifar10", binary=False)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps({b"data": CallsEval(), b"labels": [0]}, protocol=4))
    with pytest.raises(DataError, match=r"test_batch.*builtins\.eval"):
        load_dataset("cifar10", data_dir=str(tmp_path))


# ---------------------------------------------------------------------------
# Digits
# ---------------------------------------------------------------------------


def test_digits_are_scikit_learns_arrays_read_without_importing_it():
    from sklearn.datasets import load_digits

    pixels, labels = digits_arrays()
    reference = load_digits()
    np.testing.assert_array_equal(pixels, reference.data)
    np.testing.assert_array_equal(labels, reference.target)
    assert labels.dtype == np.int64


def test_digits_come_from_scikit_learns_loader_when_its_file_is_not_found(monkeypatch):
    from sklearn.datasets import load_digits

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    pixels, labels = digits_arrays()
    np.testing.assert_array_equal(pixels, load_digits().data)
    np.testing.assert_array_equal(labels, load_digits().target)


def test_digits_default_split_is_1500_train_297_test_vectors():
    data = load_dataset("digits")
    assert data.kind == "vector" and data.num_classes == 10
    assert data.x_train.shape == (1500, 64) and data.x_test.shape == (297, 64)
    assert data.x_train.dtype == torch.float32 and data.y_test.dtype == torch.int64
    assert set(data.y_train.tolist()) == set(range(10))


def test_digits_standardizes_features_with_train_stats_and_keeps_constant_pixels_finite():
    data = load_dataset("digits")
    mean, std = data.x_train.mean(0), data.x_train.std(0, unbiased=False)
    assert float(mean.abs().max()) < 1e-5
    varying = std > 0
    # The top-left pixel is 0 in every image: it stays 0, not NaN.
    assert not bool(varying.all()) and torch.isfinite(data.x_train).all()
    torch.testing.assert_close(std[varying], torch.ones(int(varying.sum())), atol=1e-4, rtol=0)


def test_digits_unstandardized_pixels_are_in_unit_interval():
    data = load_dataset("digits", standardize=False)
    assert float(data.x_train.min()) == 0.0 and float(data.x_train.max()) == 1.0


def test_digits_as_image_reshapes_to_one_channel_8x8():
    data = load_dataset("digits", as_image=True, train_size=100)
    assert data.kind == "image" and data.input_shape == (1, 8, 8)
    flat = load_dataset("digits", train_size=100)
    torch.testing.assert_close(data.x_train.reshape(100, 64), flat.x_train)


def test_digits_split_is_seeded_and_sizes_are_honoured():
    a = load_dataset("digits", train_size=200, test_size=100, seed=3)
    b = load_dataset("digits", train_size=200, test_size=100, seed=3)
    c = load_dataset("digits", train_size=200, test_size=100, seed=4)
    assert a.x_train.shape == (200, 64) and a.x_test.shape == (100, 64)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_train, c.y_train)


def test_digits_train_and_test_partition_all_images():
    data = load_dataset("digits", standardize=False)
    rows = torch.cat([data.x_train, data.x_test])
    from sklearn.datasets import load_digits

    original = torch.from_numpy(load_digits().data.astype(np.float32) / 16.0)

    # Sorting rows lexicographically makes the comparison independent of the shuffle.
    def sort_rows(x: torch.Tensor) -> np.ndarray:
        array = x.numpy()
        return array[np.lexsort(array.T[::-1])]

    np.testing.assert_array_equal(sort_rows(rows), sort_rows(original))


# ---------------------------------------------------------------------------
# Gaussian clusters
# ---------------------------------------------------------------------------


def test_gaussian_shape_classes_and_balance_follow_options():
    data = load_dataset("gaussian", train_size=300, test_size=60, dim=5, num_classes=3)
    assert data.kind == "vector" and data.num_classes == 3
    assert data.x_train.shape == (300, 5) and data.x_test.shape == (60, 5)
    assert torch.bincount(data.y_train).tolist() == [100, 100, 100]


def test_gaussian_is_seeded():
    a = load_dataset("gaussian", train_size=50, seed=7)
    b = load_dataset("gaussian", train_size=50, seed=7)
    c = load_dataset("gaussian", train_size=50, seed=8)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    assert not torch.equal(a.x_train, c.x_train)


def nearest_centroid_accuracy(data: Dataset) -> float:
    centroids = torch.stack(
        [data.x_train[data.y_train == k].mean(0) for k in range(data.num_classes)]
    )
    predicted = torch.cdist(data.x_test, centroids).argmin(1)
    return float((predicted == data.y_test).float().mean())


def test_gaussian_separation_controls_how_learnable_it_is():
    easy = load_dataset("gaussian", train_size=1000, test_size=500, separation=8.0)
    hard = load_dataset("gaussian", train_size=1000, test_size=500, separation=0.0)
    assert nearest_centroid_accuracy(easy) > 0.95
    assert nearest_centroid_accuracy(hard) < 0.2  # chance is 0.1


def test_gaussian_rejects_bad_options_by_name():
    with pytest.raises(ValueError, match=r"dataset\.dim"):
        load_dataset("gaussian", dim=0)
    with pytest.raises(ValueError, match=r"dataset\.noise"):
        load_dataset("gaussian", noise=-1.0)


# ---------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------


def decode(data: Dataset, tokens: torch.Tensor) -> str:
    return "".join(data.vocab[i] for i in tokens.tolist())


def test_text_windows_are_next_character_pairs_from_the_file(tmp_path):
    text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(40))
    path = tmp_path / "corpus.txt"
    path.write_text(text)
    data = load_dataset("text", path=str(path), context=16)

    assert data.kind == "text"
    assert data.x_train.dtype == torch.int64 and data.y_train.dtype == torch.int64
    assert data.x_train.shape[1] == 16 and data.y_train.shape == data.x_train.shape
    assert data.num_classes == len(data.vocab) == len(set(text[: int(len(text) * 0.9)]))
    cut = int(len(text) * 0.9)
    for x, y in zip(data.x_train, data.y_train, strict=True):
        window = decode(data, x)
        assert decode(data, y)[:-1] == window[1:]
        assert window + decode(data, y)[-1] in text[:cut]
    assert all(decode(data, x) in text[cut:] for x in data.x_test)
    # Default windows tile the train split without overlap.
    assert data.x_train.shape[0] == (cut - 16 - 1) // 16 + 1


def test_text_sizes_pick_seeded_random_windows(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("abcdefghijklmnopqrstuvwxyz" * 40)
    a = load_dataset("text", path=str(path), context=8, train_size=30, test_size=5, seed=0)
    b = load_dataset("text", path=str(path), context=8, train_size=30, test_size=5, seed=0)
    c = load_dataset("text", path=str(path), context=8, train_size=30, test_size=5, seed=1)
    assert a.x_train.shape == (30, 8) and a.x_test.shape == (5, 8)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)


def test_text_characters_unseen_in_training_map_to_unknown(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("ab" * 90 + "Z" * 20)  # "Z" only in the last 10%
    data = load_dataset("text", path=str(path), context=4)
    assert data.vocab == ("a", "b", UNKNOWN_CHAR)
    assert set(data.x_test.flatten().tolist()) == {2}


def test_text_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"no-such-corpus\.txt"):
        load_dataset("text", path=str(tmp_path / "no-such-corpus.txt"))


def test_text_too_short_for_context_is_named(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("tiny corpus")
    with pytest.raises(DataError, match=r"short\.txt.*context 64"):
        load_dataset("text", path=str(path))


def test_text_default_corpus_ships_with_python_and_is_deterministic():
    a = load_dataset("text", train_size=64, test_size=16)
    b = load_dataset("text", train_size=64, test_size=16)
    assert a.x_train.shape == (64, 64) and a.num_classes > 60
    assert torch.equal(a.x_train, b.x_train)
    full = load_dataset("text")
    assert decode(full, full.x_train[0]).startswith("The Zen of Python, by Tim Peters\n\nBeautiful")


# ---------------------------------------------------------------------------
# Errors at the entry point
# ---------------------------------------------------------------------------


def test_unknown_dataset_names_the_field_and_allowed_values():
    with pytest.raises(ValueError, match=r"dataset\.name.*imagenet") as error:
        load_dataset("imagenet")
    for name in DATASETS:
        assert name in str(error.value)


@pytest.mark.parametrize("field", ["train_size", "test_size"])
@pytest.mark.parametrize("value", [0, -3, 2.5])
def test_non_positive_sizes_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"dataset\.{field}"):
        load_dataset("gaussian", **{field: value})


def test_unknown_option_names_it_and_the_allowed_ones():
    with pytest.raises(ValueError, match=r"dataset\.contxt.*path, context"):
        load_dataset("text", contxt=8)


# ---------------------------------------------------------------------------
# MNIST-1D (generated offline) and per-example standardization
# ---------------------------------------------------------------------------


def test_mnist1d_is_generated_offline_as_40_feature_vectors_of_ten_classes():
    np.random.seed(123)
    random.seed(123)
    before = (np.random.get_state()[1].copy(), random.getstate())
    data = load_dataset("mnist1d", standardize=False)
    # the package's defaults: 5000 examples, 4000 / 1000 split, 40 points, 500 per class
    assert data.kind == "vector" and data.image_shape is None
    assert tuple(data.x_train.shape) == (4000, 40) and tuple(data.x_test.shape) == (1000, 40)
    assert data.num_classes == 10
    counts = torch.bincount(torch.cat([data.y_train, data.y_test]), minlength=10)
    assert counts.tolist() == [500] * 10
    assert "make_dataset" in data.source
    # the generator's seeding of NumPy's and random's global state is undone
    assert np.array_equal(np.random.get_state()[1], before[0]) and random.getstate() == before[1]
    again = load_dataset("mnist1d", standardize=False)
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.y_test, data.y_test)


def test_mnist1d_subsets_follow_the_seed_and_standardize_per_feature():
    a = load_dataset("mnist1d", train_size=256, test_size=64, seed=1)
    b = load_dataset("mnist1d", train_size=256, test_size=64, seed=2)
    assert len(a.x_train) == 256 and len(a.x_test) == 64
    assert not torch.equal(a.x_train, b.x_train)
    full = load_dataset("mnist1d")
    assert full.x_train.mean(0).abs().max() < 1e-5
    assert (full.x_train.std(0, correction=0) - 1).abs().max() < 1e-4


def test_per_example_standardization_is_the_official_one():
    data = load_dataset("digits", as_image=True, standardize_over="example")
    for x in (data.x_train, data.x_test):
        flat = x.double().flatten(1)
        assert flat.mean(1).abs().max() < 1e-6
        assert (flat.std(1, correction=0) - 1).abs().max() < 1e-5  # population std
    raw = load_dataset("digits", as_image=True, standardize=False)
    i = 5  # by hand for one image: over all its pixels (and channels) together
    x = raw.x_train[i].double()
    want = (x - x.mean()) / x.std(correction=0)
    assert torch.allclose(data.x_train[i].double(), want, atol=1e-6)
    per_channel = load_dataset("digits", as_image=True)
    assert not torch.allclose(per_channel.x_train, data.x_train)


def test_per_example_standardization_refuses_text_and_unknown_modes():
    with pytest.raises(DataError, match="standardize_over"):
        load_dataset("text", standardize_over="example")
    with pytest.raises(ValueError, match="standardize_over"):
        load_dataset("digits", standardize_over="pixel")
