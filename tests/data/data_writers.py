"""Helpers of the data tests: writers of small dataset files, written from the format
descriptions (not with the library's readers) so that reading them back checks the readers,
and the exact pattern of a :class:`~sparsecnn.data.DataFileError` message."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
             np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def idx_bytes(array: np.ndarray, *, code: int | None = None,
              sizes: tuple[int, ...] | None = None) -> bytes:
    """``00 00 code ndim``, the sizes as big-endian uint32, then the big-endian values."""
    code = IDX_CODES[array.dtype] if code is None else code
    sizes = array.shape if sizes is None else sizes
    header = bytes([0, 0, code, len(sizes)]) + struct.pack(f">{len(sizes)}I", *sizes)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_bytes(path: Path, data: bytes, *, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def write_idx_dataset(directory: Path, train: tuple[np.ndarray, np.ndarray],
                      test: tuple[np.ndarray, np.ndarray], *, gz: bool = False) -> Path:
    """The four files of an IDX dataset directory (uint8 images ``(n, H, W)``, labels)."""
    suffix = ".gz" if gz else ""
    for split, (images, labels) in (("train", train), ("t10k", test)):
        write_bytes(directory / f"{split}-images-idx3-ubyte{suffix}",
                    idx_bytes(images.astype(np.uint8)), gz=gz)
        write_bytes(directory / f"{split}-labels-idx1-ubyte{suffix}",
                    idx_bytes(labels.astype(np.uint8)), gz=gz)
    return directory


def small_idx_arrays(seed: int, n: int = 3, size: int = 28,
                     n_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    labels = (np.arange(n) % n_classes).astype(np.uint8)
    return images, labels


def cifar_records(labels: list[tuple[int, ...]], seed: int) -> tuple[bytes, np.ndarray]:
    """Records ``label byte(s) + 3072 pixel bytes`` and the pixels as ``(n, 3072)`` uint8."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(len(labels), 3072),
                                                   dtype=np.uint8)
    data = b"".join(bytes(label) + row.tobytes() for label, row in zip(labels, pixels,
                                                                       strict=True))
    return data, pixels


def write_png(path: Path, array: np.ndarray) -> Path:
    from skimage.io import imsave

    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(path, array, check_contrast=False)
    return path


def error_pattern(path: Path, problem: str) -> str:
    """The whole message ``"<path>: <problem>"``, as a regular expression."""
    return f"^{re.escape(f'{path}: {problem}')}$"
