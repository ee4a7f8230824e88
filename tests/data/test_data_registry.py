"""``load_dataset(NAME | PATH)``: named IDX datasets under ``$SPARSECNN_DATA`` or at the Debian
package's location (moved to a temporary directory here), paths recognised by content, and the
real Fashion-MNIST files of Debian's ``dataset-fashion-mnist`` when they are installed."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from data_writers import cifar_records, small_idx_arrays, write_idx_dataset, write_png

from sparsecnn.data import (
    DatasetNotFoundError,
    dataset_search_path,
    find_named_dataset,
    load_dataset,
    registry,
)

FOUR = ("train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
        "and t10k-labels-idx1-ubyte.gz")


@pytest.fixture
def no_data_anywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """``$SPARSECNN_DATA`` unset and the Debian location moved to an empty directory."""
    monkeypatch.delenv("SPARSECNN_DATA", raising=False)
    debian = tmp_path / "debian" / "fashion-mnist"
    monkeypatch.setattr(registry, "DEBIAN_DATASET_DIRS", {"fashion-mnist": debian})
    return debian


def test_named_dataset_under_sparsecnn_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            no_data_anywhere: Path) -> None:
    train, test = small_idx_arrays(seed=1, n=20), small_idx_arrays(seed=2, n=10)
    write_idx_dataset(tmp_path / "store" / "kmnist", train, test, gz=True)
    monkeypatch.setenv("SPARSECNN_DATA", str(tmp_path / "store"))
    assert find_named_dataset("kmnist") == tmp_path / "store" / "kmnist"
    split = load_dataset("kmnist")
    assert split.name == "kmnist" and split.n_classes == 10
    np.testing.assert_array_equal(split.train_images[:, 0].numpy(),
                                  train[0].astype(np.float32) / np.float32(255))
    assert split.test_labels.tolist() == test[1].tolist()
    quick = load_dataset("kmnist", n_train=10, n_test=10)
    assert quick.train_images.shape == (10, 1, 28, 28) and quick.test_images.shape[0] == 10


def test_fashion_mnist_at_the_debian_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              no_data_anywhere: Path) -> None:
    train, test = small_idx_arrays(seed=3, n=10), small_idx_arrays(seed=4, n=10)
    write_idx_dataset(no_data_anywhere, train, test, gz=True)
    assert dataset_search_path("fashion-mnist") == [no_data_anywhere]
    split = load_dataset("fashion-mnist")
    assert split.name == "fashion-mnist"
    assert split.train_labels.tolist() == train[1].tolist()
    # $SPARSECNN_DATA comes first
    other = small_idx_arrays(seed=5, n=10)
    write_idx_dataset(tmp_path / "store" / "fashion-mnist", other, other)
    monkeypatch.setenv("SPARSECNN_DATA", str(tmp_path / "store"))
    assert dataset_search_path("fashion-mnist") == [tmp_path / "store" / "fashion-mnist",
                                                    no_data_anywhere]
    np.testing.assert_array_equal(load_dataset("fashion-mnist").train_images[:, 0].numpy(),
                                  other[0].astype(np.float32) / np.float32(255))


def test_absent_named_datasets_say_how_to_get_them(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   no_data_anywhere: Path) -> None:
    expected = (f"dataset 'fashion-mnist' not found (looked in: {no_data_anywhere}); to get it: "
                f"apt-get install dataset-fashion-mnist, or put the four IDX files ({FOUR}) in "
                "$SPARSECNN_DATA/fashion-mnist")
    with pytest.raises(DatasetNotFoundError, match=f"^{re.escape(expected)}$") as info:
        load_dataset("fashion-mnist")
    assert "\n" not in str(info.value)
    monkeypatch.setenv("SPARSECNN_DATA", str(tmp_path / "store"))
    expected = (f"dataset 'mnist' not found (looked in: {tmp_path / 'store' / 'mnist'}); to get "
                f"it: put the four IDX files ({FOUR}) in $SPARSECNN_DATA/mnist")
    with pytest.raises(DatasetNotFoundError, match=f"^{re.escape(expected)}$"):
        load_dataset("mnist")
    monkeypatch.delenv("SPARSECNN_DATA")
    with pytest.raises(DatasetNotFoundError, match=re.escape(
            "dataset 'kmnist' not found (looked in: $SPARSECNN_DATA is not set); to get it: put")):
        load_dataset("kmnist")
    with pytest.raises(ValueError, match=r"unknown dataset name 'emnist'; known: digits, mnist, "
                                         r"fashion-mnist, kmnist"):
        find_named_dataset("emnist")
    # a directory that holds only some of the files is not the dataset
    partial = tmp_path / "store" / "mnist"
    write_idx_dataset(partial, *(small_idx_arrays(seed=0),) * 2)
    (partial / "t10k-labels-idx1-ubyte").unlink()
    monkeypatch.setenv("SPARSECNN_DATA", str(tmp_path / "store"))
    with pytest.raises(DatasetNotFoundError, match=r"dataset 'mnist' not found"):
        load_dataset("mnist")


def test_paths_are_recognised_by_content(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path / "idx", *(small_idx_arrays(seed=0),) * 2)
    assert load_dataset(tmp_path / "idx").train_images.shape == (3, 1, 28, 28)
    (tmp_path / "cifar").mkdir()
    (tmp_path / "cifar" / "data_batch_1.bin").write_bytes(cifar_records([(1,), (2,)], 0)[0])
    (tmp_path / "cifar" / "test_batch.bin").write_bytes(cifar_records([(3,)], 1)[0])
    assert load_dataset(str(tmp_path / "cifar")).train_images.shape == (2, 3, 32, 32)
    for name in ("a", "b"):
        for i in range(5):
            write_png(tmp_path / "folder" / name / f"{i}.png", np.full((4, 4), i, np.uint8))
    folder = load_dataset(tmp_path / "folder", seed=2)
    assert folder.n_classes == 2 and folder.train_images.shape == (8, 1, 4, 4)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match=r"^dataset '.*nothing' is not a feature-world dataset: "
                                         r".*manifest\.json not found; nor any other dataset "
                                         r"sparsecnn reads \(the names digits, mnist, "
                                         r"fashion-mnist, kmnist, or a directory of IDX files, "
                                         r"of CIFAR binary files or of class sub-folders of "
                                         r"PNG/JPEG images\)$"):
        load_dataset(tmp_path / "nothing")
    with pytest.raises(ValueError, match=r"^dataset must be 'digits' or an existing "
                                         r"feature-world dataset directory; got '.*absent', "
                                         r"which does not exist \(also read: the names"):
        load_dataset(str(tmp_path / "absent"))
    with pytest.raises(TypeError, match=r"dataset must be 'digits' or a path; got int"):
        load_dataset(3)


def test_digits_subset() -> None:
    split = load_dataset("digits", seed=0, n_train=100, n_test=50)
    assert split.train_images.shape == (100, 1, 8, 8) and split.test_images.shape == (50, 1, 8, 8)
    assert int(torch.bincount(split.train_labels).min()) >= 9
    full = load_dataset("digits", seed=0)
    assert full.train_images.shape == (898, 1, 8, 8)


DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (DEBIAN / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's package dataset-fashion-mnist is not installed "
                           "(apt-get install dataset-fashion-mnist)")
def test_the_real_debian_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPARSECNN_DATA", raising=False)
    assert registry.DEBIAN_DATASET_DIRS["fashion-mnist"] == DEBIAN
    split = load_dataset("fashion-mnist")
    assert split.train_images.shape == (60000, 1, 28, 28)
    assert split.test_images.shape == (10000, 1, 28, 28)
    assert torch.bincount(split.train_labels).tolist() == [6000] * 10  # balanced classes
    assert torch.bincount(split.test_labels).tolist() == [1000] * 10
    # an independent reading: header fields and the last training image, byte by byte
    with gzip.open(DEBIAN / "train-images-idx3-ubyte.gz", "rb") as handle:
        raw = handle.read()
    assert raw[:4] == b"\x00\x00\x08\x03"
    assert [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(3)] == [60000, 28, 28]
    last = np.frombuffer(raw[16 + 59999 * 784:], dtype=np.uint8).reshape(28, 28)
    np.testing.assert_array_equal(split.train_images[-1, 0].numpy(),
                                  last.astype(np.float32) / np.float32(255))
    with gzip.open(DEBIAN / "t10k-labels-idx1-ubyte.gz", "rb") as handle:
        labels = handle.read()[8:]
    assert split.test_labels.tolist() == list(labels)
