"""An image folder: one sub-folder per class (classes sorted by name, label = position),
PNG or JPEG images inside, read with scikit-image (``skimage.io.imread``).

Every image must have the first image's size and mode (grayscale, RGB or RGBA; 8 or 16 bits).
The split is seeded and stratified (:func:`~sparsecnn.data.split.stratified_halves`), and is
made on the file list, so that ``n_train`` / ``n_test`` read only the images they keep.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .file_reading import DataFileError
from .split import DatasetSplit, check_fraction, choose_subset, split_from_arrays, stratified_halves

__all__ = ["IMAGE_SUFFIXES", "is_image_folder", "list_image_folder", "load_image_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# PNG and JPEG signatures: a file with neither is refused before any decoder guesses at it
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
_MODES = {1: "grayscale", 3: "RGB", 4: "RGBA"}
_MAX_VALUE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _visible(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if not p.name.startswith("."))


def is_image_folder(directory: Path) -> bool:
    """Whether ``directory`` has a sub-folder holding at least one PNG/JPEG image."""
    return directory.is_dir() and any(
        child.is_dir() and any(_is_image(p) for p in child.iterdir())
        for child in _visible(directory))


def list_image_folder(directory: Path | str) -> tuple[list[str], list[Path], np.ndarray]:
    """``(class names sorted, image paths, labels)`` of an image folder; an empty folder or an
    empty class folder is an error."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataFileError(directory, "not a directory")
    classes = [child for child in _visible(directory) if child.is_dir()]
    if not classes:
        raise DataFileError(directory, "empty image folder: no class sub-folders (an image "
                                       "folder holds one sub-folder of PNG/JPEG images per "
                                       "class)")
    paths: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(classes):
        images = [p for p in _visible(folder) if _is_image(p)]
        if not images:
            raise DataFileError(folder, "empty class folder: no .png, .jpg or .jpeg images")
        paths += images
        labels += [label] * len(images)
    return [folder.name for folder in classes], paths, np.asarray(labels, dtype=np.int64)


def _describe(array: np.ndarray) -> str:
    channels = 1 if array.ndim == 2 else array.shape[2]
    bits = array.dtype.itemsize * 8
    return f"{array.shape[0]}x{array.shape[1]} {_MODES.get(channels, channels)} {bits}-bit"


def _read_image(path: Path) -> np.ndarray:
    from skimage.io import imread

    with open(path, "rb") as handle:
        start = handle.read(8)
    if not start.startswith(_SIGNATURES):
        raise DataFileError(path, "unreadable image: not a PNG or JPEG file (it does not start "
                                  "with their signature bytes)")
    try:
        array = np.asarray(imread(path))
    except Exception as error:  # every backend error of a damaged file is the same problem
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise DataFileError(path, f"unreadable image ({type(error).__name__}: {first_line})"
                            ) from None
    channels = 1 if array.ndim == 2 else (array.shape[2] if array.ndim == 3 else 0)
    if channels not in _MODES or array.dtype not in _MAX_VALUE:
        raise DataFileError(path, f"unsupported image: shape {array.shape}, dtype {array.dtype} "
                                  "(grayscale, RGB or RGBA with 8 or 16 bits are read)")
    return array


def _read_images(paths: list[Path], first: np.ndarray, first_path: Path) -> np.ndarray:
    """``(n, C, H, W)`` pixels of ``paths``, each required to match ``first``."""
    reference = _describe(first)
    channels = 1 if first.ndim == 2 else first.shape[2]
    out = np.empty((len(paths), channels, *first.shape[:2]), dtype=first.dtype)
    for i, path in enumerate(paths):
        array = first if path == first_path else _read_image(path)
        if array.shape != first.shape or array.dtype != first.dtype:
            raise DataFileError(path, f"image is {_describe(array)}, but {first_path} is "
                                      f"{reference}: every image must have the same size "
                                      "and mode")
        out[i] = array[None] if array.ndim == 2 else np.moveaxis(array, 2, 0)
    return out


def load_image_folder(directory: Path | str, *, test_fraction: float = 0.2, seed: int = 0,
                      n_train: int | None = None, n_test: int | None = None,
                      dtype: torch.dtype = torch.float32) -> DatasetSplit:
    """An image folder as ``x = pixels / max`` (``max = 255`` for 8-bit, ``65535`` for 16-bit
    images) of shape ``(n, C, H, W)``, split by :func:`stratified_halves` with
    ``test_size=test_fraction``, ``random_state=seed``; ``n_train`` / ``n_test`` then keep a
    seeded stratified subset of each part, and only the kept images are read."""
    directory = Path(directory)
    test_fraction = check_fraction(test_fraction, "test_fraction")
    classes, paths, labels = list_image_folder(directory)
    parts = []
    first_path = paths[0]
    first = _read_image(first_path)
    for indices, n, what in zip(stratified_halves(labels, test_fraction, seed),
                                (n_train, n_test), ("train", "test"), strict=True):
        chosen = choose_subset(labels[indices], n, seed, what)
        if chosen is not None:
            indices = indices[chosen]
        indices = np.sort(indices)
        parts.append((_read_images([paths[i] for i in indices], first, first_path),
                      labels[indices]))
    return split_from_arrays(directory.name, parts[0], parts[1], len(classes),
                             max_value=_MAX_VALUE[first.dtype], seed=seed, dtype=dtype)
