"""The labelled train/test split every loader returns, and the seeded stratified choices of
which examples go where.

* :class:`DatasetSplit` -- images ``(n, C, H, W)`` floats in ``[0, 1]``, labels ``int64``.
* :func:`stratified_halves` -- ``train_test_split(stratify=labels, random_state=seed)``, falling
  back to an unstratified split when a class has fewer than two examples.
* :func:`choose_subset` -- ``n`` of the examples, stratified and seeded, in their original order
  (``n_train`` / ``n_test`` of the loaders, for quick runs).
* :func:`split_from_arrays` -- integer pixel arrays ``/ max_value`` to a :class:`DatasetSplit`,
  converting only the chosen subset to floats (bounded memory).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._checks import check_positive_float, check_positive_int

__all__ = ["DatasetSplit", "check_fraction", "choose_subset", "split_from_arrays",
           "stratified_halves", "subset_split"]


@dataclass
class DatasetSplit:
    """A labelled train/test split; images are ``(n, C, H, W)`` floats, labels ``int64``."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    n_classes: int

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train_images.shape[1:])

    def to(self, dtype: torch.dtype) -> DatasetSplit:
        return DatasetSplit(self.name, self.train_images.to(dtype), self.train_labels,
                            self.test_images.to(dtype), self.test_labels, self.n_classes)


def check_fraction(value: float, name: str) -> float:
    number = check_positive_float(value, name)
    if not number < 1:
        raise ValueError(f"{name} must be in (0, 1); got {value!r}")
    return number


def _stratify_by(labels: np.ndarray) -> np.ndarray | None:
    # scikit-learn refuses to stratify when a class has a single example
    counts = np.bincount(labels)
    return labels if counts[counts > 0].min() >= 2 else None


def stratified_halves(labels: np.ndarray, test_fraction: float,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` of ``train_test_split(test_size=test_fraction,
    stratify=labels, random_state=seed)``, unstratified when a class has one example or a part
    would be smaller than the number of classes."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(labels.shape[0])
    stratify = _stratify_by(labels)
    n_test = int(np.ceil(test_fraction * labels.shape[0]))  # scikit-learn's rounding
    if min(n_test, labels.shape[0] - n_test) < np.count_nonzero(np.bincount(labels)):
        stratify = None  # a part smaller than the number of classes cannot hold every class
    train, test = train_test_split(indices, test_size=test_fraction, random_state=int(seed),
                                   stratify=stratify)
    return train, test


def choose_subset(labels: np.ndarray, n: int | None, seed: int, what: str) -> np.ndarray | None:
    """Indices of ``n`` examples drawn stratified with ``random_state=seed``, sorted; ``None``
    when ``n`` is ``None`` (keep everything)."""
    if n is None:
        return None
    n = check_positive_int(n, f"n_{what}")
    available = int(labels.shape[0])
    if n > available:
        raise ValueError(f"n_{what}={n} is more than the {available} {what} examples")
    if n == available:
        return np.arange(available)
    from sklearn.model_selection import train_test_split

    indices = np.arange(available)
    stratify = _stratify_by(labels)
    if stratify is not None and n < np.count_nonzero(np.bincount(labels)):
        stratify = None  # fewer examples than classes: a stratified draw is impossible
    chosen, _ = train_test_split(indices, train_size=n, random_state=int(seed),
                                 stratify=stratify)
    return np.sort(chosen)


def _to_float(pixels: np.ndarray, max_value: float, dtype: torch.dtype) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(pixels)).to(dtype)
    return tensor.div_(max_value)


def split_from_arrays(name: str, train: tuple[np.ndarray, np.ndarray],
                      test: tuple[np.ndarray, np.ndarray], n_classes: int, *, max_value: float,
                      n_train: int | None = None, n_test: int | None = None, seed: int = 0,
                      dtype: torch.dtype = torch.float32) -> DatasetSplit:
    """``x = pixels / max_value`` for ``(pixels (n, C, H, W), labels (n,))`` pairs; the subsets
    are chosen (:func:`choose_subset`) on the integer pixels, before any float copy."""
    parts = []
    for (pixels, labels), n, what in ((train, n_train, "train"), (test, n_test, "test")):
        chosen = choose_subset(labels, n, seed, what)
        if chosen is not None:
            pixels, labels = pixels[chosen], labels[chosen]
        parts.append((_to_float(pixels, max_value, dtype),
                      torch.from_numpy(labels.astype(np.int64))))
    (train_x, train_y), (test_x, test_y) = parts
    return DatasetSplit(name=name, train_images=train_x, train_labels=train_y,
                        test_images=test_x, test_labels=test_y, n_classes=int(n_classes))


def subset_split(split: DatasetSplit, n_train: int | None, n_test: int | None,
                 seed: int) -> DatasetSplit:
    """``split`` with ``n_train`` / ``n_test`` examples chosen by :func:`choose_subset`."""
    chosen_train = choose_subset(split.train_labels.numpy(), n_train, seed, "train")
    chosen_test = choose_subset(split.test_labels.numpy(), n_test, seed, "test")
    if chosen_train is None and chosen_test is None:
        return split
    train_idx = torch.from_numpy(chosen_train) if chosen_train is not None else slice(None)
    test_idx = torch.from_numpy(chosen_test) if chosen_test is not None else slice(None)
    return DatasetSplit(split.name, split.train_images[train_idx],
                        split.train_labels[train_idx], split.test_images[test_idx],
                        split.test_labels[test_idx], split.n_classes)
