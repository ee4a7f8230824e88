"""Datasets: embedded ones (nothing is downloaded) and the files users already have.

* :mod:`~sparsecnn.data.embedded` -- scikit-learn's digits, the bundled natural images, the
  Olshausen-Field whitening filter and patches;
* :mod:`~sparsecnn.data.idx` -- IDX files (MNIST, Fashion-MNIST, KMNIST), ``.gz`` or raw;
* :mod:`~sparsecnn.data.cifar` -- CIFAR-10 / CIFAR-100, binary version;
* :mod:`~sparsecnn.data.image_folder` -- one sub-folder of PNG/JPEG images per class;
* :mod:`~sparsecnn.data.feature_world` -- feature-world dataset directories;
* :mod:`~sparsecnn.data.registry` -- :func:`load_dataset` of a name or a path;
* :mod:`~sparsecnn.data.split` -- :class:`DatasetSplit` and the seeded stratified splits;
* :mod:`~sparsecnn.data.file_reading` -- :class:`DataFileError` and bounded reading.
"""

from .cifar import load_cifar, read_cifar_records
from .embedded import (
    NATURAL_IMAGE_NAMES,
    load_digits_split,
    natural_image_patches,
    natural_images,
    whiten_image,
    whitening_filter,
)
from .file_reading import DataFileError
from .idx import load_idx_dataset, read_idx
from .image_folder import load_image_folder
from .registry import DatasetNotFoundError, dataset_search_path, find_named_dataset, load_dataset
from .split import DatasetSplit

__all__ = [
    "NATURAL_IMAGE_NAMES",
    "DataFileError",
    "DatasetNotFoundError",
    "DatasetSplit",
    "dataset_search_path",
    "find_named_dataset",
    "load_cifar",
    "load_dataset",
    "load_digits_split",
    "load_idx_dataset",
    "load_image_folder",
    "natural_image_patches",
    "natural_images",
    "read_cifar_records",
    "read_idx",
    "whiten_image",
    "whitening_filter",
]
