"""IDX files (LeCun's format of MNIST, Fashion-MNIST and KMNIST), ``.gz`` or raw.

An IDX file is a 4-byte magic number ``00 00 TT D`` (``TT`` the dtype code, ``D`` the number of
dimensions), ``D`` big-endian ``uint32`` sizes, then ``prod(sizes)`` big-endian values.  An
IDX dataset directory holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each raw or ``.gz``; a ``.`` in
place of the ``-`` before ``idx`` is accepted): the dataset's own train/test split.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from .file_reading import (
    MAX_DEFLATE_RATIO,
    DataFileError,
    is_gzip,
    open_maybe_gzip,
    read_stream_exactly,
)
from .split import DatasetSplit, split_from_arrays

__all__ = ["IDX_DTYPES", "find_idx_files", "is_idx_directory", "load_idx_dataset", "read_idx"]

# dtype code -> (name, big-endian numpy dtype)
IDX_DTYPES: dict[int, tuple[str, str]] = {
    0x08: ("unsigned byte", ">u1"),
    0x09: ("signed byte", ">i1"),
    0x0B: ("short", ">i2"),
    0x0C: ("int", ">i4"),
    0x0D: ("float", ">f4"),
    0x0E: ("double", ">f8"),
}
_UBYTE = 0x08
_ROLES = (("train", "images", 3), ("train", "labels", 1), ("t10k", "images", 3),
          ("t10k", "labels", 1))


def _expected_name(split: str, kind: str, ndim: int) -> str:
    return f"{split}-{kind}-idx{ndim}-ubyte"


def read_idx(path: Path | str, *, ndim: int | None = None,
             dtype_code: int | None = None) -> np.ndarray:
    """The array of one IDX file (``.gz`` recognised by content), as native-endian numpy.

    ``ndim`` / ``dtype_code``, when given, are required of the header.  The sizes in the header
    are checked against the file before the data is read: the raw file's length must be
    ``4 + 4 D + prod(sizes) * itemsize``; a ``.gz`` file cannot hold more than
    ``MAX_DEFLATE_RATIO`` times its length, and its stream must end exactly after the data.
    """
    path = Path(path)
    with open_maybe_gzip(path) as stream:
        magic = read_stream_exactly(stream, 4, path, "the 4-byte magic number")
        if magic[:2] != b"\x00\x00":
            raise DataFileError(path, f"bad magic number 0x{magic.hex()}: an IDX file starts "
                                      "with two zero bytes, a dtype code and the number of "
                                      "dimensions")
        code, n_dims = magic[2], magic[3]
        if code not in IDX_DTYPES:
            known = ", ".join(f"0x{known:02x}" for known in IDX_DTYPES)
            raise DataFileError(path, f"unknown IDX dtype code 0x{code:02x} (known: {known})")
        if dtype_code is not None and code != dtype_code:
            raise DataFileError(path, f"dtype code 0x{code:02x} ({IDX_DTYPES[code][0]}), "
                                      f"expected 0x{dtype_code:02x} "
                                      f"({IDX_DTYPES[dtype_code][0]})")
        if n_dims == 0 or (ndim is not None and n_dims != ndim):
            wanted = f"expected {ndim} (an idx{ndim} file)" if ndim else "expected at least 1"
            raise DataFileError(path, f"{n_dims} dimensions, {wanted}")
        header = read_stream_exactly(stream, 4 * n_dims, path, f"the {n_dims} sizes")
        sizes = tuple(int(size) for size in np.frombuffer(header, dtype=">u4"))
        item = np.dtype(IDX_DTYPES[code][1])
        n_bytes = int(np.prod(sizes, dtype=object)) * item.itemsize
        shown = " x ".join(map(str, sizes))
        file_bytes = path.stat().st_size
        if is_gzip(path):
            if n_bytes > MAX_DEFLATE_RATIO * file_bytes:
                raise DataFileError(path, f"sizes do not match the header: {shown} "
                                          f"({n_bytes} bytes) cannot be in a {file_bytes}-byte "
                                          "gzip file")
        else:
            there = file_bytes - 4 - 4 * n_dims
            if there < n_bytes:
                raise DataFileError(path, f"truncated: the header says {shown} ({n_bytes} "
                                          f"bytes of data) but the file holds {there}")
            if there > n_bytes:
                raise DataFileError(path, f"sizes do not match the header: it says {shown} "
                                          f"({n_bytes} bytes of data) but the file holds "
                                          f"{there}")
        data = read_stream_exactly(stream, n_bytes, path, f"the data ({shown})")
        if stream.read(1):
            raise DataFileError(path, f"sizes do not match the header: it says {shown} "
                                      f"({n_bytes} bytes of data) but more data follows")
    return np.frombuffer(data, dtype=item).reshape(sizes).astype(item.newbyteorder("="),
                                                                 copy=False)


def find_idx_files(directory: Path) -> dict[tuple[str, str], Path] | None:
    """The four files of an IDX dataset directory keyed by ``(split, kind)``; the raw file when
    both it and its ``.gz`` are there; ``None`` when one is missing."""
    found: dict[tuple[str, str], Path] = {}
    names = sorted(p.name for p in directory.iterdir() if p.is_file())
    for split, kind, ndim in _ROLES:
        pattern = re.compile(rf"{split}-{kind}[-.]idx{ndim}-ubyte(\.gz)?")
        matches = [name for name in names if pattern.fullmatch(name)]
        if not matches:
            return None
        found[(split, kind)] = directory / min(matches, key=len)  # raw before .gz
    return found


def is_idx_directory(directory: Path) -> bool:
    return directory.is_dir() and find_idx_files(directory) is not None


def _read_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, ndim=3, dtype_code=_UBYTE)
    labels = read_idx(labels_path, ndim=1, dtype_code=_UBYTE)
    if labels.shape[0] != images.shape[0]:
        raise DataFileError(labels_path, f"{labels.shape[0]} labels but {images_path.name} "
                                         f"holds {images.shape[0]} images")
    return images[:, None, :, :], labels


def _check_labels(labels: np.ndarray, n_classes: int, path: Path, name: str) -> None:
    outside = np.flatnonzero(labels >= n_classes)
    if outside.size:
        index = int(outside[0])
        raise DataFileError(path, f"label {int(labels[index])} at index {index} is out of "
                                  f"range: {name} has {n_classes} classes "
                                  f"(0..{n_classes - 1})")


def load_idx_dataset(directory: Path | str, *, n_classes: int | None = None,
                     name: str | None = None, n_train: int | None = None,
                     n_test: int | None = None, seed: int = 0,
                     dtype: torch.dtype = torch.float32) -> DatasetSplit:
    """An IDX dataset directory as ``x = pixels / 255`` of shape ``(n, 1, H, W)``, ``train``
    files for training and ``t10k`` files for testing.

    ``n_classes`` defaults to ``1 + max(train labels)``; every label must be below it.
    ``n_train`` / ``n_test`` keep a seeded stratified subset (quick runs).
    """
    directory = Path(directory)
    name = name or directory.name
    if not directory.is_dir():
        raise DataFileError(directory, "not a directory (an IDX dataset is a directory of four "
                                       "IDX files)")
    files = find_idx_files(directory)
    if files is None:
        wanted = ", ".join(_expected_name(*role) for role in _ROLES)
        raise DataFileError(directory, f"not an IDX dataset directory: it needs {wanted} "
                                       "(each raw or .gz)")
    train = _read_split(files[("train", "images")], files[("train", "labels")])
    test = _read_split(files[("t10k", "images")], files[("t10k", "labels")])
    if train[0].shape[1:] != test[0].shape[1:]:
        raise DataFileError(files[("t10k", "images")],
                            f"images are {test[0].shape[2]}x{test[0].shape[3]} but the "
                            f"training images are {train[0].shape[2]}x{train[0].shape[3]}")
    if n_classes is None:
        n_classes = int(train[1].max()) + 1 if train[1].size else 0
    _check_labels(train[1], n_classes, files[("train", "labels")], name)
    _check_labels(test[1], n_classes, files[("t10k", "labels")], name)
    return split_from_arrays(name, train, test, n_classes, max_value=255.0, n_train=n_train,
                             n_test=n_test, seed=seed, dtype=dtype)
