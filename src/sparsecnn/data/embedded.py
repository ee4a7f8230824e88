"""Embedded datasets: nothing is downloaded (docs/theory.md Part C).

* :func:`load_digits_split` -- scikit-learn's 1797 handwritten digits (8x8, 10 classes),
  scaled to ``[0, 1]`` and split into stratified train/test halves, as ``(n, 1, 8, 8)`` tensors.
* :func:`natural_images` -- the grayscale natural images bundled with scikit-learn
  (``load_sample_images``: china, flower) and scikit-image (``camera``, ``astronaut``,
  ``coffee``).
* :func:`whitening_filter`, :func:`whiten_image` -- Olshausen & Field's (1996, Nature 381)
  whitening/low-pass filter ``R(f) = f exp(-(f/f0)^4)`` with ``f0 = 0.4`` Nyquist
  (docs/theory.md C7).
* :func:`natural_image_patches` -- random ``p x p`` patches of the whitened images, the
  training signals of dictionary learning (docs/theory.md check 25).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .._checks import check_positive_float, check_positive_int
from .split import DatasetSplit, check_fraction

__all__ = [
    "NATURAL_IMAGE_NAMES",
    "load_digits_split",
    "natural_image_patches",
    "natural_images",
    "whiten_image",
    "whitening_filter",
]

NATURAL_IMAGE_NAMES = ("china", "flower", "camera", "astronaut", "coffee")


def load_digits_split(seed: int = 0, test_fraction: float = 0.5,
                      dtype: torch.dtype = torch.float32) -> DatasetSplit:
    """scikit-learn's digits, pixel values ``/16`` so that ``x in [0, 1]``, split with
    ``train_test_split(stratify=labels, random_state=seed)`` (docs/theory.md check 9: a 50/50
    stratified split per seed)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    test_fraction = check_fraction(test_fraction, "test_fraction")
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float64)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=int(seed))
    return DatasetSplit(
        name="digits",
        train_images=torch.from_numpy(np.ascontiguousarray(train_x)).to(dtype),
        train_labels=torch.from_numpy(train_y),
        test_images=torch.from_numpy(np.ascontiguousarray(test_x)).to(dtype),
        test_labels=torch.from_numpy(test_y),
        n_classes=10,
    )


def natural_images(names: tuple[str, ...] = NATURAL_IMAGE_NAMES) -> list[np.ndarray]:
    """Bundled natural images as grayscale ``float64`` arrays in ``[0, 1]``."""
    from skimage import data as skimage_data
    from skimage.color import rgb2gray
    from sklearn.datasets import load_sample_images

    unknown = [name for name in names if name not in NATURAL_IMAGE_NAMES]
    if unknown or not names:
        raise ValueError(f"names must be a non-empty subset of {NATURAL_IMAGE_NAMES}; got "
                         f"{names!r}")
    sample = None
    images = []
    for name in names:
        if name in ("china", "flower"):
            if sample is None:
                sample = load_sample_images()
            index = [Path(f).stem.split(".")[0] for f in sample.filenames].index(name)
            array = sample.images[index]
        else:
            array = getattr(skimage_data, name)()
        array = np.asarray(array, dtype=np.float64)
        if array.ndim == 3:
            array = rgb2gray(array / 255.0)
        else:
            array = array / 255.0
        images.append(array)
    return images


def whitening_filter(shape: tuple[int, int], f0_fraction: float = 0.4) -> np.ndarray:
    """Olshausen-Field filter ``R(f) = f exp(-(f/f0)^4)`` on the FFT grid of ``shape``.

    ``f = sqrt(fx^2 + fy^2)`` in cycles/pixel (Nyquist = 0.5) and ``f0 = f0_fraction * 0.5``.
    The ramp ``f`` flattens the ``1/f`` amplitude spectrum of natural images (whitening); the
    ``exp(-(f/f0)^4)`` factor removes the corner frequencies where sampling is anisotropic.
    ``R(0) = 0``, so filtered images have zero mean.
    """
    if len(shape) != 2 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer))
                              or s < 2 for s in shape):
        raise ValueError(f"shape must be a pair of integers >= 2; got {shape!r}")
    f0_fraction = check_positive_float(f0_fraction, "f0_fraction")
    fy = np.fft.fftfreq(int(shape[0]))[:, None]
    fx = np.fft.fftfreq(int(shape[1]))[None, :]
    frequency = np.sqrt(fx ** 2 + fy ** 2)
    f0 = f0_fraction * 0.5
    return frequency * np.exp(-((frequency / f0) ** 4))


def whiten_image(image: np.ndarray, f0_fraction: float = 0.4) -> np.ndarray:
    """Filter a grayscale image with :func:`whitening_filter` and scale it to unit variance."""
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"image must be a 2-D grayscale array; got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("image must be finite; got NaN/Inf pixels")
    spectrum = np.fft.fft2(array - array.mean())
    filtered = np.real(np.fft.ifft2(spectrum * whitening_filter(array.shape, f0_fraction)))
    sd = filtered.std()
    if sd == 0:
        raise ValueError("image is constant; whitening it gives zeros")
    return filtered / sd


def natural_image_patches(n_patches: int, patch_size: int = 8, seed: int = 0, *,
                          whiten: bool = True, f0_fraction: float = 0.4, downscale: int = 2,
                          names: tuple[str, ...] = NATURAL_IMAGE_NAMES,
                          dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n_patches`` random ``patch_size x patch_size`` patches, flattened to
    ``(n_patches, patch_size**2)``, drawn uniformly over images and positions with
    ``np.random.default_rng(seed)``.

    Images are first block-averaged by ``downscale`` (so that an 8x8 patch covers the scale
    of Olshausen & Field's 16x16 patches), then whitened (:func:`whiten_image`); a margin of
    ``patch_size`` pixels avoids the FFT's periodic border.  Without ``whiten`` the patch
    mean is removed instead.  The patches are scaled to unit variance overall.
    """
    n_patches = check_positive_int(n_patches, "n_patches")
    patch_size = check_positive_int(patch_size, "patch_size", minimum=2)
    downscale = check_positive_int(downscale, "downscale")
    rng = np.random.default_rng(seed)
    prepared = []
    for image in natural_images(names):
        if downscale > 1:
            h, w = (s // downscale * downscale for s in image.shape)
            image = image[:h, :w].reshape(h // downscale, downscale, w // downscale,
                                          downscale).mean(axis=(1, 3))
        prepared.append(whiten_image(image, f0_fraction) if whiten else image)
    margin = patch_size
    which = rng.integers(0, len(prepared), size=n_patches)
    patches = np.empty((n_patches, patch_size * patch_size))
    for i, index in enumerate(which):
        image = prepared[index]
        top = rng.integers(margin, image.shape[0] - margin - patch_size)
        left = rng.integers(margin, image.shape[1] - margin - patch_size)
        patches[i] = image[top:top + patch_size, left:left + patch_size].ravel()
    if not whiten:
        patches = patches - patches.mean(axis=1, keepdims=True)
    patches = patches / patches.std()
    return torch.from_numpy(patches).to(dtype)
