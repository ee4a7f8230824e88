"""Embedded datasets: digits splits, natural images, the Olshausen-Field whitening filter and
patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from sparsecnn.data import (
    load_digits_split,
    natural_image_patches,
    natural_images,
    whiten_image,
    whitening_filter,
)


def test_digits_split_is_stratified_complete_and_scaled() -> None:
    split = load_digits_split(seed=3)
    assert split.train_images.shape == (898, 1, 8, 8)
    assert split.test_images.shape == (899, 1, 8, 8)
    assert float(split.train_images.min()) == 0.0 and float(split.train_images.max()) == 1.0
    train_counts = torch.bincount(split.train_labels, minlength=10)
    test_counts = torch.bincount(split.test_labels, minlength=10)
    assert int((train_counts - test_counts).abs().max()) <= 1
    # the two halves are exactly scikit-learn's digits / 16
    digits = load_digits()
    together = torch.cat([split.train_images, split.test_images]).flatten(1).double().numpy()
    reference = digits.data / 16.0
    assert sorted(map(tuple, together.round(6))) == sorted(map(tuple, reference.round(6)))
    again = load_digits_split(seed=3)
    assert torch.equal(again.train_labels, split.train_labels)
    other = load_digits_split(seed=4)
    assert not torch.equal(other.train_labels, split.train_labels)


def test_whitening_filter_matches_its_formula() -> None:
    """R(f) = f exp(-(f/f0)^4), f0 = 0.4 * 0.5 cycles/pixel, on the FFT grid of a 6x5 image,
    written here with explicit loops and wrapped frequencies k/N."""
    shape = (6, 5)
    expected = np.empty(shape)
    f0 = 0.4 * 0.5
    for row in range(shape[0]):
        for col in range(shape[1]):
            fy = (row if row <= shape[0] // 2 - (shape[0] % 2 == 0) else row - shape[0]) / shape[0]
            fx = (col if col <= shape[1] // 2 - (shape[1] % 2 == 0) else col - shape[1]) / shape[1]
            f = np.hypot(fx, fy)
            expected[row, col] = f * np.exp(-((f / f0) ** 4))
    np.testing.assert_allclose(whitening_filter(shape), expected, atol=1e-15)
    assert whitening_filter((8, 8))[0, 0] == 0.0


def test_whitening_scales_each_frequency_by_the_filter() -> None:
    """Two cosines at grid frequencies f1, f2 come out with amplitude ratio R(f1)/R(f2)."""
    n = 64
    grid = np.arange(n)
    f1, f2 = 4 / n, 20 / n
    image = np.cos(2 * np.pi * f1 * grid)[None, :] + np.cos(2 * np.pi * f2 * grid)[:, None]
    white = whiten_image(image)
    assert abs(white.mean()) < 1e-12 and white.std() == pytest.approx(1.0)
    spectrum = np.abs(np.fft.fft2(white))
    ratio = spectrum[0, 4] / spectrum[20, 0]
    f0 = 0.2
    assert ratio == pytest.approx(f1 * np.exp(-((f1 / f0) ** 4)) / (f2 * np.exp(-((f2 / f0) ** 4))),
                                  rel=1e-9)


def test_natural_images_and_patches() -> None:
    images = natural_images()
    assert len(images) == 5
    for image in images:
        assert image.ndim == 2 and image.min() >= 0 and image.max() <= 1
    patches = natural_image_patches(500, 8, seed=1)
    assert patches.shape == (500, 64) and patches.dtype == torch.float64
    assert float(patches.std(correction=0)) == pytest.approx(1.0)
    assert torch.equal(patches, natural_image_patches(500, 8, seed=1))
    assert not torch.equal(patches, natural_image_patches(500, 8, seed=2))


@pytest.mark.parametrize(("call", "message"), [
    (lambda: load_digits_split(test_fraction=1.5), r"test_fraction must be in \(0, 1\); got 1\.5"),
    (lambda: load_digits_split(seed=-1), r"seed must be a non-negative integer; got -1"),
    (lambda: natural_images(("mars",)), r"names must be a non-empty subset of"),
    (lambda: whiten_image(np.ones((8, 8))), r"image is constant; whitening it gives zeros"),
    (lambda: whiten_image(np.ones(8)), r"image must be a 2-D grayscale array; got shape \(8,\)"),
    (lambda: whitening_filter((8,)), r"shape must be a pair of integers >= 2; got \(8,\)"),
    (lambda: natural_image_patches(0), r"n_patches must be an integer >= 1; got 0"),
])
def test_bad_input(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
