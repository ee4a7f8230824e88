"""CIFAR-10 and CIFAR-100, binary version only (never the python/pickle version: unpickling a
data file can run arbitrary code).

CIFAR-10 binary: ``data_batch_1.bin`` ... ``data_batch_5.bin`` (training) and
``test_batch.bin``, each a run of 3073-byte records: one label byte (0..9), then 3072 pixel
bytes, the 32x32 red, green and blue planes in turn.  CIFAR-100 binary: ``train.bin`` and
``test.bin``, 3074-byte records: a coarse label byte (0..19), a fine label byte (0..99), then
the 3072 pixel bytes.  Either as a directory (also the parent of ``cifar-10-batches-bin`` or
``cifar-100-binary``, the folders the archives unpack to) or as the list of files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._checks import check_choice
from .file_reading import DataFileError
from .split import DatasetSplit, split_from_arrays

__all__ = ["CIFAR_PIXELS", "is_cifar_directory", "load_cifar", "read_cifar_records"]

CIFAR_PIXELS = 3 * 32 * 32
_PICKLE_ADVICE = ("this is the CIFAR python (pickle) version, which sparsecnn never unpickles; "
                  "use the binary version (cifar-10-binary.tar.gz or cifar-100-binary.tar.gz "
                  "from https://www.cs.toronto.edu/~kriz/cifar.html)")
_UNPACKED = ("cifar-10-batches-bin", "cifar-100-binary")
# names of the python version: data_batch_1..5 / test_batch / batches.meta (CIFAR-10),
# train / test / meta (CIFAR-100), and the folders they unpack to
_PICKLE_NAMES = re.compile(r"data_batch_\d+|test_batch|batches\.meta|train|test|meta|"
                           r"cifar-10-batches-py|cifar-100-python")
_TRAIN_10 = re.compile(r"data_batch_(\d+)\.bin")


@dataclass(frozen=True)
class _Layout:
    name: str
    label_bytes: int
    n_classes: tuple[int, ...]  # per label byte: CIFAR-100's coarse then fine


_CIFAR10 = _Layout("cifar-10", 1, (10,))
_CIFAR100 = _Layout("cifar-100", 2, (20, 100))


def read_cifar_records(path: Path | str, label_bytes: int,
                       n_classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels (n, 3, 32, 32) uint8, labels (n, label_bytes) uint8)`` of one binary file.

    The file's length must be a whole number of ``label_bytes + 3072``-byte records (checked
    before reading) and label byte ``j`` of every record must be below ``n_classes[j]``.
    """
    path = Path(path)
    record = label_bytes + CIFAR_PIXELS
    if not path.is_file():
        raise DataFileError(path, "no such file")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        start = handle.read(2)
    if start[:1] == b"\x80" and size % record:
        raise DataFileError(path, _PICKLE_ADVICE)
    if size == 0:
        raise DataFileError(path, "empty file (no records)")
    if size % record:
        raise DataFileError(path, f"truncated or not CIFAR binary: {size} bytes is not a whole "
                                  f"number of {record}-byte records ({label_bytes} label "
                                  f"byte{'s' if label_bytes > 1 else ''} + {CIFAR_PIXELS} "
                                  "pixel bytes)")
    records = np.fromfile(path, dtype=np.uint8).reshape(-1, record)
    labels = records[:, :label_bytes]
    for column, limit in enumerate(n_classes):
        outside = np.flatnonzero(labels[:, column] >= limit)
        if outside.size:
            index = int(outside[0])
            which = ("coarse ", "fine ")[column] if label_bytes == 2 else ""
            raise DataFileError(path, f"{which}label {int(labels[index, column])} in record "
                                      f"{index} is out of range: {limit} classes "
                                      f"(0..{limit - 1})")
    pixels = records[:, label_bytes:].reshape(-1, 3, 32, 32)
    return pixels, labels


def _resolve_directory(directory: Path) -> list[Path]:
    for unpacked in _UNPACKED:
        if (directory / unpacked).is_dir():
            directory = directory / unpacked
            break
    return sorted(p for p in directory.iterdir() if p.is_file())


def _refuse_pickle(paths: Sequence[Path], directory: Path | None) -> None:
    if directory is not None and any((directory / name).is_dir()
                                     for name in ("cifar-10-batches-py", "cifar-100-python")):
        raise DataFileError(directory, _PICKLE_ADVICE)
    for path in paths:
        if _PICKLE_NAMES.fullmatch(path.name):
            raise DataFileError(path, _PICKLE_ADVICE)


def _classify(paths: Sequence[Path], where: Path) -> tuple[_Layout, list[Path], list[Path]]:
    names = {path.name: path for path in paths}
    batches = sorted((int(m.group(1)), path) for path in paths
                     if (m := _TRAIN_10.fullmatch(path.name)))
    if batches or "test_batch.bin" in names:
        layout, train = _CIFAR10, [path for _, path in batches]
        test = [names["test_batch.bin"]] if "test_batch.bin" in names else []
        wanted = "data_batch_1.bin ... data_batch_5.bin and test_batch.bin"
    elif "train.bin" in names or "test.bin" in names:
        layout = _CIFAR100
        train = [names["train.bin"]] if "train.bin" in names else []
        test = [names["test.bin"]] if "test.bin" in names else []
        wanted = "train.bin and test.bin"
    else:
        raise DataFileError(where, "no CIFAR binary files (data_batch_1.bin ... "
                                   "data_batch_5.bin and test_batch.bin for CIFAR-10, train.bin "
                                   "and test.bin for CIFAR-100)")
    if not train or not test:
        missing = "training" if not train else "test"
        raise DataFileError(where, f"no {missing} file: {layout.name} binary needs {wanted}")
    return layout, train, test


def is_cifar_directory(directory: Path) -> bool:
    """Whether ``directory`` holds CIFAR files, binary or (to be refused) python version."""
    if not directory.is_dir():
        return False
    if any((directory / name).is_dir() for name in (*_UNPACKED, "cifar-10-batches-py",
                                                    "cifar-100-python")):
        return True
    names = {p.name for p in directory.iterdir() if p.is_file()}
    return bool(names & {"test_batch.bin", "test.bin", "test_batch", "batches.meta"})


def load_cifar(source: Path | str | Sequence[Path | str], *, label: str = "fine",
               n_train: int | None = None, n_test: int | None = None, seed: int = 0,
               dtype: torch.dtype = torch.float32) -> DatasetSplit:
    """CIFAR-10 or CIFAR-100 (binary version) as ``x = pixels / 255`` of shape
    ``(n, 3, 32, 32)``, with the dataset's own train/test split.

    ``source`` is a directory or the list of files; the python (pickle) version is refused
    with a message saying to use the binary version.  ``label`` chooses CIFAR-100's ``"fine"``
    (100 classes) or ``"coarse"`` (20 superclasses) labels.  ``n_train`` / ``n_test`` keep a
    seeded stratified subset (quick runs).
    """
    label = check_choice(label, "label", ("fine", "coarse"))
    if isinstance(source, (str, Path)):
        where: Path = Path(source)
        if where.is_dir():
            paths = _resolve_directory(where)
            _refuse_pickle(paths, where)
        else:
            paths = [where]
            _refuse_pickle(paths, None)
    else:
        paths = [Path(path) for path in source]
        if not paths:
            raise ValueError("source must be a directory or a non-empty list of CIFAR files")
        where = paths[0].parent
        _refuse_pickle(paths, None)
    layout, train_paths, test_paths = _classify(paths, where)
    column = layout.label_bytes - 1 if label == "fine" else 0
    n_classes = layout.n_classes[column]
    parts = []
    for group in (train_paths, test_paths):
        read = [read_cifar_records(path, layout.label_bytes, layout.n_classes) for path in group]
        pixels = np.concatenate([pixels for pixels, _ in read])
        labels = np.concatenate([labels[:, column] for _, labels in read])
        parts.append((pixels, labels))
    name = layout.name if layout is _CIFAR10 or label == "fine" else f"{layout.name}-coarse"
    return split_from_arrays(name, parts[0], parts[1], n_classes, max_value=255.0,
                             n_train=n_train, n_test=n_test, seed=seed, dtype=dtype)
