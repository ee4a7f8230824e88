"""IDX files (MNIST, Fashion-MNIST, KMNIST): bytes written here from known arrays come back
exactly, and every kind of damage is an error naming the file and the problem."""

from __future__ import annotations

import gzip
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from data_writers import idx_bytes, small_idx_arrays, write_bytes, write_idx_dataset

from sparsecnn.data import DataFileError, load_idx_dataset, read_idx


@pytest.mark.parametrize("gz", [False, True])
def test_idx_dataset_round_trip(tmp_path: Path, gz: bool) -> None:
    train = small_idx_arrays(seed=1, n=4)
    test = small_idx_arrays(seed=2, n=3)
    write_idx_dataset(tmp_path / "fashion", train, test, gz=gz)
    split = load_idx_dataset(tmp_path / "fashion")
    assert split.name == "fashion" and split.n_classes == 4  # 1 + the largest training label
    assert split.train_images.shape == (4, 1, 28, 28) and split.train_images.dtype == torch.float32
    assert split.test_images.shape == (3, 1, 28, 28)
    # x = pixels / 255, computed independently in numpy
    np.testing.assert_array_equal(split.train_images[:, 0].numpy(),
                                  train[0].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(split.test_images[:, 0].numpy(),
                                  test[0].astype(np.float32) / np.float32(255))
    assert split.train_labels.dtype == torch.int64
    assert split.train_labels.tolist() == train[1].tolist()
    assert split.test_labels.tolist() == test[1].tolist()


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32,
                                   np.float64])
def test_read_idx_every_dtype(tmp_path: Path, dtype: type) -> None:
    values = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype is np.uint8:
        values = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_bytes(tmp_path / "values.idx", idx_bytes(values))
    read = read_idx(path)
    assert read.dtype == np.dtype(dtype) and read.dtype.isnative
    np.testing.assert_array_equal(read, values)


def test_raw_file_preferred_and_dotted_names(tmp_path: Path) -> None:
    images, labels = small_idx_arrays(seed=3, n=2)
    write_idx_dataset(tmp_path / "d", (images, labels), (images, labels), gz=True)
    write_bytes(tmp_path / "d" / "train-images-idx3-ubyte", idx_bytes(255 - images))
    split = load_idx_dataset(tmp_path / "d", n_classes=10)
    assert torch.equal((split.train_images * 255).round().to(torch.uint8)[:, 0],
                       torch.from_numpy(255 - images))
    dotted = tmp_path / "dotted"
    for split_name, kind, array in (("train", "images", images), ("train", "labels", labels),
                                    ("t10k", "images", images), ("t10k", "labels", labels)):
        ndim = 3 if kind == "images" else 1
        write_bytes(dotted / f"{split_name}-{kind}.idx{ndim}-ubyte", idx_bytes(array))
    assert load_idx_dataset(dotted).train_images.shape == (2, 1, 28, 28)


def _images_path(directory: Path) -> Path:
    return directory / "train-images-idx3-ubyte"


def _damaged(tmp_path: Path, images: bytes, *, gz: bool = False) -> Path:
    """A dataset whose training images file holds ``images``; the other files are sound."""
    good = small_idx_arrays(seed=0, n=3)
    directory = write_idx_dataset(tmp_path / "d", good, good)
    _images_path(directory).unlink()
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    write_bytes(directory / name, images, gz=gz)
    return directory / name


GOOD = idx_bytes(small_idx_arrays(seed=0, n=3)[0])
ABSURD = bytes([0, 0, 8, 3]) + (4_000_000_000).to_bytes(4, "big") + bytes([0, 0, 0, 28] * 2)


@pytest.mark.parametrize(("data", "gz", "problem"), [
    (b"\x01\x02\x08\x03" + GOOD[4:], False,
     "bad magic number 0x01020803: an IDX file starts with two zero bytes, a dtype code and "
     "the number of dimensions"),
    (b"\x00\x00\x07\x03" + GOOD[4:], False,
     "unknown IDX dtype code 0x07 (known: 0x08, 0x09, 0x0b, 0x0c, 0x0d, 0x0e)"),
    (idx_bytes(np.zeros((3, 28, 28), dtype=np.float32)), False,
     "dtype code 0x0d (float), expected 0x08 (unsigned byte)"),
    (idx_bytes(np.zeros((3, 784), dtype=np.uint8)), False,
     "2 dimensions, expected 3 (an idx3 file)"),
    (GOOD[:2], False, "truncated: the 4-byte magic number needs 4 bytes but only 2 are there"),
    (GOOD[:10], False, "truncated: the 3 sizes needs 12 bytes but only 6 are there"),
    (GOOD[:-10], False,
     "truncated: the header says 3 x 28 x 28 (2352 bytes of data) but the file holds 2342"),
    (GOOD + b"\x00" * 10, False,
     "sizes do not match the header: it says 3 x 28 x 28 (2352 bytes of data) but the file "
     "holds 2362"),
    (GOOD[:-10], True, "truncated: the data (3 x 28 x 28) needs 2352 bytes but only 2342 are "
                       "there"),
    (GOOD + b"\x00" * 10, True,
     "sizes do not match the header: it says 3 x 28 x 28 (2352 bytes of data) but more data "
     "follows"),
    (ABSURD + GOOD[16:], False,
     "truncated: the header says 4000000000 x 28 x 28 (3136000000000 bytes of data) but the "
     "file holds 2352"),
])
def test_damaged_idx_file(tmp_path: Path, data: bytes, gz: bool, problem: str) -> None:
    path = _damaged(tmp_path, data, gz=gz)
    tracemalloc.start()
    try:
        with pytest.raises(DataFileError, match=f"^{re.escape(f'{path}: {problem}')}$") as info:
            load_idx_dataset(path.parent)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.path == path and info.value.problem == problem
    assert peak < 20 * 2 ** 20  # no allocation sized by the header


def test_absurd_header_in_a_gzip_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = _damaged(tmp_path, ABSURD + GOOD[16:], gz=True)
    size = path.stat().st_size
    problem = (f"sizes do not match the header: 4000000000 x 28 x 28 (3136000000000 bytes) "
               f"cannot be in a {size}-byte gzip file")
    with pytest.raises(DataFileError, match=f"^{re.escape(f'{path}: {problem}')}$"):
        read_idx(path)


def test_cut_gzip_stream(tmp_path: Path) -> None:
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(GOOD, mtime=0)[:-30])
    with pytest.raises(DataFileError, match=re.escape(
            f"{path}: truncated or damaged compressed data while reading the data (3 x 28 x 28) "
            "(Compressed file ended before the end-of-stream marker was reached)")):
        read_idx(path)


def test_dataset_level_damage(tmp_path: Path) -> None:
    images, labels = small_idx_arrays(seed=0, n=3)
    directory = write_idx_dataset(tmp_path / "d", (images, labels), (images, labels))
    labels_path = directory / "t10k-labels-idx1-ubyte"

    write_bytes(labels_path, idx_bytes(np.array([0, 12, 3], dtype=np.uint8)))
    with pytest.raises(DataFileError, match=f"^{re.escape(str(labels_path))}: label 12 at index "
                                            r"1 is out of range: mnist has 10 classes \(0\.\.9\)$"):
        load_idx_dataset(directory, n_classes=10, name="mnist")
    with pytest.raises(DataFileError, match=r"label 12 at index 1 is out of range: d has 3 "
                                            r"classes \(0\.\.2\)$"):
        load_idx_dataset(directory)  # n_classes from the training labels

    write_bytes(labels_path, idx_bytes(np.array([0, 1], dtype=np.uint8)))
    with pytest.raises(DataFileError, match=f"^{re.escape(str(labels_path))}: 2 labels but "
                                            r"t10k-images-idx3-ubyte holds 3 images$"):
        load_idx_dataset(directory)

    write_bytes(labels_path, idx_bytes(labels))
    small = small_idx_arrays(seed=0, n=3, size=14)[0]
    write_bytes(directory / "t10k-images-idx3-ubyte", idx_bytes(small))
    with pytest.raises(DataFileError, match=r"t10k-images-idx3-ubyte: images are 14x14 but the "
                                            r"training images are 28x28$"):
        load_idx_dataset(directory)

    labels_path.unlink()
    with pytest.raises(DataFileError, match=f"^{re.escape(str(directory))}: not an IDX dataset "
                                            r"directory: it needs train-images-idx3-ubyte, "
                                            r"train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                                            r"t10k-labels-idx1-ubyte \(each raw or \.gz\)$"):
        load_idx_dataset(directory)
    with pytest.raises(DataFileError, match=r"nowhere: not a directory"):
        load_idx_dataset(tmp_path / "nowhere")


def test_subsets_are_stratified_and_seeded(tmp_path: Path) -> None:
    train = small_idx_arrays(seed=4, n=40, n_classes=4)
    test = small_idx_arrays(seed=5, n=20, n_classes=4)
    directory = write_idx_dataset(tmp_path / "d", train, test, gz=True)
    split = load_idx_dataset(directory, n_train=8, n_test=4, seed=1)
    assert split.train_images.shape == (8, 1, 28, 28) and split.test_images.shape == (4, 1, 28, 28)
    assert torch.bincount(split.train_labels).tolist() == [2, 2, 2, 2]
    assert torch.bincount(split.test_labels).tolist() == [1, 1, 1, 1]
    # each kept image is the written image of its index, with its label
    full = load_idx_dataset(directory)
    rows = [int(np.flatnonzero((full.train_images == image).flatten(1).all(1))[0])
            for image in split.train_images]
    assert rows == sorted(rows)
    assert full.train_labels[rows].tolist() == split.train_labels.tolist()
    again = load_idx_dataset(directory, n_train=8, n_test=4, seed=1)
    assert torch.equal(again.train_images, split.train_images)
    with pytest.raises(ValueError, match=r"n_train=41 is more than the 40 train examples"):
        load_idx_dataset(directory, n_train=41)
    with pytest.raises(ValueError, match=r"n_test must be an integer >= 1; got 0"):
        load_idx_dataset(directory, n_test=0)
