"""The two benchmark problems.

P1: 20,000 mean-removed 8x8 grayscale patches of scikit-learn's sample images, coded over 256
unit-norm atoms learned once by ``MiniBatchDictionaryLearning``; ``lam`` is chosen (by
bisection on a subsample, solved exactly) so that about 6% of the codes are non-zero.

P2: one 256x256 high-passed grayscale image (``skimage.data.camera`` in ``[0, 1]`` minus a
Gaussian-blurred copy), 32 fixed 8x8 unit-norm filters (seeded), ``lam = 0.05``.

Nothing is cached on disk: everything is rebuilt from the seed in every run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ConvProblem", "DenseProblem", "image_problem", "patch_problem"]


@dataclass
class DenseProblem:
    """``min_A 1/2 ||X - D A||_F^2 + lam ||A||_1`` with signals as rows of ``signals``."""

    signals: np.ndarray  # (n_signals, n_features), float64
    dictionary: np.ndarray  # (n_features, n_atoms), unit-norm columns, float64
    lam: float


@dataclass
class ConvProblem:
    """``min_a 1/2 ||x - sum_k d_k (*) a_k||^2 + lam sum_k ||a_k||_1`` (circular convolution)."""

    image: np.ndarray  # (H, W), float64
    filters: np.ndarray  # (n_filters, kh, kw), unit-norm, float64
    lam: float


def _gray_sample_images() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [image.astype(np.float64).mean(axis=2) / 255.0
            for image in load_sample_images().images]


def _exact_sparsity(signals: np.ndarray, dictionary: np.ndarray, lam: float) -> float:
    """Fraction of non-zeros of the exact lasso codes: SPAMS's LARS when installed, else
    sparsecnn's homotopy (both exact, so the bisection and the problem are the same)."""
    try:
        import spams
    except ImportError:
        from sparsecnn import sparse_code

        codes = sparse_code(signals, dictionary, lam, method="homotopy").codes
        return float(np.count_nonzero(codes) / codes.size)
    codes = spams.lasso(np.asfortranarray(signals.T), np.asfortranarray(dictionary),
                        lambda1=lam, mode=2, numThreads=2)
    return codes.nnz / (codes.shape[0] * codes.shape[1])


def patch_problem(n_signals: int = 20_000, n_atoms: int = 256, patch_size: int = 8,
                  target_density: float = 0.06, seed: int = 0) -> DenseProblem:
    """Build P1 (see the module docstring)."""
    from sklearn.decomposition import MiniBatchDictionaryLearning
    from sklearn.feature_extraction.image import extract_patches_2d

    rng = np.random.default_rng(seed)
    images = _gray_sample_images()
    per_image = [n_signals // len(images)] * len(images)
    per_image[0] += n_signals - sum(per_image)
    patches = np.concatenate([
        extract_patches_2d(image, (patch_size, patch_size), max_patches=count,
                           random_state=int(rng.integers(2**31))).reshape(count, -1)
        for image, count in zip(images, per_image, strict=True)])
    patches = patches - patches.mean(axis=1, keepdims=True)
    learner = MiniBatchDictionaryLearning(n_components=n_atoms, alpha=0.1, batch_size=256,
                                          max_iter=2, random_state=seed)
    learner.fit(patches[rng.permutation(n_signals)[:10_000]])
    atoms = learner.components_.T.copy()
    atoms /= np.linalg.norm(atoms, axis=0, keepdims=True)
    subsample = patches[rng.permutation(n_signals)[:2000]]
    low, high = 1e-4, float(np.abs(subsample @ atoms).max())
    for _ in range(30):  # bisection on log(lam): density decreases with lam
        middle = float(np.sqrt(low * high))
        if _exact_sparsity(subsample, atoms, middle) > target_density:
            low = middle
        else:
            high = middle
        if high / low < 1.01:
            break
    return DenseProblem(signals=np.ascontiguousarray(patches), dictionary=atoms,
                        lam=float(np.sqrt(low * high)))


def image_problem(size: int = 256, n_filters: int = 32, filter_size: int = 8,
                  lam: float = 0.05, blur_sigma: float = 4.0, seed: int = 0) -> ConvProblem:
    """Build P2 (see the module docstring); the filters are seeded random unit-norm 8x8."""
    from scipy.ndimage import gaussian_filter
    from skimage.data import camera
    from skimage.transform import resize

    image = camera().astype(np.float64) / 255.0
    if image.shape != (size, size):
        image = resize(image, (size, size), anti_aliasing=True)
    high_passed = image - gaussian_filter(image, blur_sigma, mode="reflect")
    rng = np.random.default_rng(seed)
    filters = rng.standard_normal((n_filters, filter_size, filter_size))
    filters -= filters.mean(axis=(1, 2), keepdims=True)
    filters /= np.linalg.norm(filters.reshape(n_filters, -1), axis=1)[:, None, None]
    return ConvProblem(image=np.ascontiguousarray(high_passed), filters=filters, lam=lam)
