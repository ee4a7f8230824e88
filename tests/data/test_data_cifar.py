"""CIFAR-10 / CIFAR-100 binary files written here record by record: pixels and labels come
back exactly, the python (pickle) version is refused, damage is an error naming the file."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from data_writers import cifar_records, error_pattern

from sparsecnn.data import DataFileError, load_cifar, load_dataset


def _write_cifar10(directory: Path) -> dict[str, tuple[list[int], np.ndarray]]:
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for seed, (name, labels) in enumerate((("data_batch_1.bin", [3, 9]),
                                           ("data_batch_2.bin", [0, 3]),
                                           ("test_batch.bin", [7, 1]))):
        data, pixels = cifar_records([(label,) for label in labels], seed)
        (directory / name).write_bytes(data)
        written[name] = (labels, pixels)
    (directory / "batches.meta.txt").write_text("airplane\nautomobile\n")  # as unpacked
    return written


def _pixel(pixels: np.ndarray, record: int, channel: int, row: int, col: int) -> int:
    """Byte ``1024 c + 32 r + col`` of a record's 3072 pixel bytes (red, green, blue planes)."""
    return int(pixels[record, 1024 * channel + 32 * row + col])


def test_cifar10_binary_directory(tmp_path: Path) -> None:
    written = _write_cifar10(tmp_path / "cifar-10-batches-bin")
    for source in (tmp_path, tmp_path / "cifar-10-batches-bin",
                   [tmp_path / "cifar-10-batches-bin" / name for name in written]):
        split = load_cifar(source)
        assert split.name == "cifar-10" and split.n_classes == 10
        assert split.train_images.shape == (4, 3, 32, 32)
        assert split.test_images.shape == (2, 3, 32, 32)
        assert split.train_labels.tolist() == [3, 9, 0, 3]
        assert split.test_labels.tolist() == [7, 1]
        train_pixels = np.concatenate([written["data_batch_1.bin"][1],
                                       written["data_batch_2.bin"][1]])
        for record, channel, row, col in ((0, 0, 0, 0), (1, 2, 31, 31), (3, 1, 5, 17)):
            byte = _pixel(train_pixels, record, channel, row, col)
            assert split.train_images[record, channel, row, col].item() == float(
                np.float32(byte) / np.float32(255))
        expected = train_pixels.reshape(4, 3, 32, 32).astype(np.float32) / np.float32(255)
        np.testing.assert_array_equal(split.train_images.numpy(), expected)
    assert load_dataset(tmp_path / "cifar-10-batches-bin").train_labels.tolist() == [3, 9, 0, 3]


def test_cifar10_batches_in_numeric_order(tmp_path: Path) -> None:
    for seed, name in enumerate(("data_batch_10.bin", "data_batch_2.bin", "test_batch.bin")):
        (tmp_path / name).write_bytes(cifar_records([(seed,)], seed)[0])
    assert load_cifar(tmp_path).train_labels.tolist() == [1, 0]


def test_cifar100_fine_and_coarse_labels(tmp_path: Path) -> None:
    train, train_pixels = cifar_records([(19, 99), (0, 5)], seed=1)
    test, _ = cifar_records([(4, 42), (7, 0)], seed=2)
    (tmp_path / "train.bin").write_bytes(train)
    (tmp_path / "test.bin").write_bytes(test)
    fine = load_cifar(tmp_path)
    assert fine.name == "cifar-100" and fine.n_classes == 100
    assert fine.train_labels.tolist() == [99, 5] and fine.test_labels.tolist() == [42, 0]
    np.testing.assert_array_equal(
        fine.train_images.numpy(),
        train_pixels.reshape(2, 3, 32, 32).astype(np.float32) / np.float32(255))
    coarse = load_cifar(tmp_path, label="coarse")
    assert coarse.name == "cifar-100-coarse" and coarse.n_classes == 20
    assert coarse.train_labels.tolist() == [19, 0] and coarse.test_labels.tolist() == [4, 7]
    assert torch.equal(coarse.train_images, fine.train_images)
    assert load_dataset(str(tmp_path)).n_classes == 100


def test_damaged_cifar_files(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)
    batch = tmp_path / "data_batch_2.bin"
    good = batch.read_bytes()

    batch.write_bytes(good[:-100])
    with pytest.raises(DataFileError, match=error_pattern(
            batch, "truncated or not CIFAR binary: 6046 bytes is not a whole number of "
                   "3073-byte records (1 label byte + 3072 pixel bytes)")):
        load_cifar(tmp_path)

    batch.write_bytes(good[:3073] + bytes([10]) + good[3074:])
    with pytest.raises(DataFileError, match=error_pattern(
            batch, "label 10 in record 1 is out of range: 10 classes (0..9)")):
        load_cifar(tmp_path)

    batch.write_bytes(b"")
    with pytest.raises(DataFileError, match=error_pattern(batch, "empty file (no records)")):
        load_cifar(tmp_path)

    batch.write_bytes(good)
    (tmp_path / "test_batch.bin").unlink()
    with pytest.raises(DataFileError, match=error_pattern(
            tmp_path, "no test file: cifar-10 binary needs data_batch_1.bin ... "
                      "data_batch_5.bin and test_batch.bin")):
        load_cifar(tmp_path)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataFileError, match=error_pattern(
            empty, "no CIFAR binary files (data_batch_1.bin ... data_batch_5.bin and "
                   "test_batch.bin for CIFAR-10, train.bin and test.bin for CIFAR-100)")):
        load_cifar(empty)


def test_damaged_cifar100_labels(tmp_path: Path) -> None:
    (tmp_path / "train.bin").write_bytes(cifar_records([(0, 1), (20, 1)], seed=1)[0])
    (tmp_path / "test.bin").write_bytes(cifar_records([(0, 100)], seed=2)[0])
    with pytest.raises(DataFileError, match=error_pattern(
            tmp_path / "train.bin", "coarse label 20 in record 1 is out of range: 20 classes "
                                    "(0..19)")):
        load_cifar(tmp_path)
    (tmp_path / "train.bin").write_bytes(cifar_records([(0, 1)], seed=1)[0])
    with pytest.raises(DataFileError, match=error_pattern(
            tmp_path / "test.bin", "fine label 100 in record 0 is out of range: 100 classes "
                                   "(0..99)")):
        load_cifar(tmp_path)
    (tmp_path / "train.bin").write_bytes(cifar_records([(0, 1)], seed=1)[0][:-1])
    with pytest.raises(DataFileError, match=re.escape(
            "3073 bytes is not a whole number of 3074-byte records (2 label bytes + 3072 pixel "
            "bytes)")):
        load_cifar(tmp_path)


PICKLE_ADVICE = ("this is the CIFAR python (pickle) version, which sparsecnn never unpickles; "
                 "use the binary version (cifar-10-binary.tar.gz or cifar-100-binary.tar.gz "
                 "from https://www.cs.toronto.edu/~kriz/cifar.html)")


def test_the_pickle_version_is_refused(tmp_path: Path) -> None:
    payload = pickle.dumps({"labels": [1]}, protocol=2)
    python10 = tmp_path / "cifar-10-batches-py"
    python10.mkdir()
    for name in ("batches.meta", "data_batch_1", "test_batch"):
        (python10 / name).write_bytes(payload)
    meta = python10 / "batches.meta"
    with pytest.raises(DataFileError, match=error_pattern(meta, PICKLE_ADVICE)):
        load_cifar(python10)
    with pytest.raises(DataFileError, match=error_pattern(tmp_path, PICKLE_ADVICE)):
        load_cifar(tmp_path)  # the parent of the unpacked python version
    batch = python10 / "data_batch_1"
    with pytest.raises(DataFileError, match=error_pattern(batch, PICKLE_ADVICE)):
        load_cifar([python10 / "data_batch_1"])
    with pytest.raises(DataFileError, match=error_pattern(meta, PICKLE_ADVICE)):
        load_dataset(python10)
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    (renamed / "train.bin").write_bytes(payload)
    (renamed / "test.bin").write_bytes(payload)
    with pytest.raises(DataFileError, match=error_pattern(renamed / "train.bin", PICKLE_ADVICE)):
        load_cifar(renamed)  # recognised by its content too


def test_cifar_subsets_and_arguments(tmp_path: Path) -> None:
    train, _ = cifar_records([(label % 2,) for label in range(8)], seed=1)
    test, _ = cifar_records([(label % 2,) for label in range(4)], seed=2)
    (tmp_path / "data_batch_1.bin").write_bytes(train)
    (tmp_path / "test_batch.bin").write_bytes(test)
    split = load_cifar(tmp_path, n_train=4, n_test=2, seed=0, dtype=torch.float64)
    assert split.train_images.dtype == torch.float64
    assert torch.bincount(split.train_labels).tolist() == [2, 2]
    assert torch.bincount(split.test_labels).tolist() == [1, 1]
    with pytest.raises(ValueError, match=r"label must be one of"):
        load_cifar(tmp_path, label="medium")
    with pytest.raises(ValueError, match=r"source must be a directory or a non-empty list"):
        load_cifar([])
