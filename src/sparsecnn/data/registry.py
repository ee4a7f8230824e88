"""``load_dataset(NAME | PATH)``: the one entry point behind every ``--data`` / ``dataset``.

Names: ``"digits"`` (embedded) and the IDX datasets ``"mnist"``, ``"fashion-mnist"``,
``"kmnist"``, looked for in ``$SPARSECNN_DATA/<name>/`` and then at the install location of a
Debian package (``dataset-fashion-mnist`` installs ``/usr/share/datasets/fashion-mnist/``).
Paths are recognised by their content: a feature-world dataset (``manifest.json``), an IDX
directory, a CIFAR binary directory, or an image folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .cifar import is_cifar_directory, load_cifar
from .embedded import load_digits_split
from .feature_world import MANIFEST_NAME, load_feature_world_split
from .idx import is_idx_directory, load_idx_dataset
from .image_folder import is_image_folder, load_image_folder
from .split import DatasetSplit, subset_split

__all__ = ["DATA_ENVIRONMENT_VARIABLE", "DEBIAN_DATASET_DIRS", "IDX_DATASET_NAMES",
           "DatasetNotFoundError", "dataset_search_path", "find_named_dataset", "load_dataset"]

DATA_ENVIRONMENT_VARIABLE = "SPARSECNN_DATA"
# name -> number of classes; all three are 28x28 grayscale IDX datasets
IDX_DATASET_NAMES = {"mnist": 10, "fashion-mnist": 10, "kmnist": 10}
# where Debian's dataset packages install their files (a module attribute so tests can move it)
DEBIAN_DATASET_DIRS: dict[str, Path] = {
    "fashion-mnist": Path("/usr/share/datasets/fashion-mnist"),
}
_FOUR_FILES = ("train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
               "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz")
_DEBIAN_PACKAGE = {"fashion-mnist": "dataset-fashion-mnist"}
_FORMATS = ("the names digits, mnist, fashion-mnist, kmnist, or a directory of IDX files, of "
            "CIFAR binary files or of class sub-folders of PNG/JPEG images")


class DatasetNotFoundError(ValueError):
    """A named dataset that is on none of its search paths; the message says how to get it."""


def dataset_search_path(name: str) -> list[Path]:
    """Where the named dataset is looked for, in order: ``$SPARSECNN_DATA/<name>``, then the
    Debian package's install location when there is one."""
    paths = []
    root = os.environ.get(DATA_ENVIRONMENT_VARIABLE)
    if root:
        paths.append(Path(root) / name)
    if name in DEBIAN_DATASET_DIRS:
        paths.append(DEBIAN_DATASET_DIRS[name])
    return paths


def how_to_get(name: str) -> str:
    """One line saying how to make the named dataset available."""
    where = f"${DATA_ENVIRONMENT_VARIABLE}/{name}"
    if name in _DEBIAN_PACKAGE:
        return (f"apt-get install {_DEBIAN_PACKAGE[name]}, or put the four IDX files "
                f"({_FOUR_FILES}) in {where}")
    return f"put the four IDX files ({_FOUR_FILES}) in {where}"


def find_named_dataset(name: str) -> Path:
    """The first directory of :func:`dataset_search_path` holding the four IDX files."""
    if name not in IDX_DATASET_NAMES:
        raise ValueError(f"unknown dataset name {name!r}; known: "
                         f"{', '.join(['digits', *IDX_DATASET_NAMES])}")
    searched = dataset_search_path(name)
    for directory in searched:
        if is_idx_directory(directory):
            return directory
    looked = ", ".join(map(str, searched)) or f"${DATA_ENVIRONMENT_VARIABLE} is not set"
    raise DatasetNotFoundError(f"dataset {name!r} not found (looked in: {looked}); to get it: "
                               f"{how_to_get(name)}")


def _load_path(path: Path, seed: int, dtype: torch.dtype, n_train: int | None,
               n_test: int | None) -> DatasetSplit:
    subsets = {"n_train": n_train, "n_test": n_test, "seed": seed, "dtype": dtype}
    if (path / MANIFEST_NAME).is_file():
        try:
            split = load_feature_world_split(path, seed=seed, dtype=dtype)
        except FileNotFoundError as error:
            raise ValueError(f"dataset {str(path)!r} is not a feature-world dataset: {error}"
                             ) from None
        return subset_split(split, n_train, n_test, seed)
    if is_idx_directory(path):
        return load_idx_dataset(path, **subsets)
    if is_cifar_directory(path):
        return load_cifar(path, **subsets)
    if is_image_folder(path):
        return load_image_folder(path, **subsets)
    raise ValueError(f"dataset {str(path)!r} is not a feature-world dataset: "
                     f"{path / MANIFEST_NAME} not found; nor any other dataset sparsecnn reads "
                     f"({_FORMATS})")


def load_dataset(name: str | Path, seed: int = 0, dtype: torch.dtype = torch.float32, *,
                 n_train: int | None = None, n_test: int | None = None) -> DatasetSplit:
    """A dataset by name or path, as a :class:`~sparsecnn.data.DatasetSplit`.

    * ``"digits"``: :func:`~sparsecnn.data.load_digits_split` (50/50 stratified, ``seed``);
    * ``"mnist"``, ``"fashion-mnist"``, ``"kmnist"``: :func:`find_named_dataset`, then
      :func:`~sparsecnn.data.load_idx_dataset` (the dataset's own train/t10k split);
    * a directory: a feature-world dataset written by ``sparsecnn generate`` (split 50/50,
      stratified when every class has two images, ``random_state=seed``), an IDX directory,
      a CIFAR binary directory (:func:`~sparsecnn.data.load_cifar`) or an image folder
      (:func:`~sparsecnn.data.load_image_folder`), recognised by content.

    ``n_train`` / ``n_test`` keep a seeded stratified subset of each part (quick runs).
    """
    if not isinstance(name, (str, Path)):
        raise TypeError(f"dataset must be 'digits' or a path; got {type(name).__name__}")
    text = str(name)
    if text == "digits":
        return subset_split(load_digits_split(seed=seed, dtype=dtype), n_train, n_test, seed)
    if isinstance(name, str) and text in IDX_DATASET_NAMES:
        return load_idx_dataset(find_named_dataset(text), n_classes=IDX_DATASET_NAMES[text],
                                name=text, n_train=n_train, n_test=n_test, seed=seed,
                                dtype=dtype)
    path = Path(name)
    if not path.exists():
        raise ValueError(f"dataset must be 'digits' or an existing feature-world dataset "
                         f"directory; got {text!r}, which does not exist (also read: "
                         f"{_FORMATS})")
    return _load_path(path, seed, dtype, n_train, n_test)
