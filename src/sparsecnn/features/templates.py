"""Level-1 features (templates) of the feature world: docs/theory.md B.1, [P2].

A template is a ``k x k`` array F_j with values in [0, 1].  Four families:

* ``"binary"``: F_j in {0,1}^{k x k}, uniform random, drawn among patterns that have a one in
  their first and last row and column.  Such a template, alone on the zero background, occurs
  nowhere but at its own position (every shifted window loses a border one), so B.1(ii) holds
  for isolated features.
* ``"bars"``: oriented strokes of width one through the centre, angles pi*j/N.
* ``"real"``: real-valued templates, entries uniform in [0, 1].
* ``"natural"``: k x k patches cut from the natural images bundled with scikit-learn
  (``load_sample_images``) and scikit-image (``data.camera``), contrast-stretched to [0, 1].
  Nothing is downloaded.

Binary templates are matched by Hamming distance, real-valued ones by the L1 distance
d_j(u) = sum |I[u:u+k] - F_j| (docs/theory.md B.3 step 1).
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

__all__ = [
    "TEMPLATE_FAMILIES",
    "bar_templates",
    "binary_template_capacity",
    "binary_templates",
    "is_binary",
    "natural_images",
    "natural_templates",
    "real_templates",
]

TEMPLATE_FAMILIES = ("binary", "bars", "real", "natural")


def is_binary(templates: np.ndarray) -> bool:
    """True when every template entry is exactly 0 or 1."""
    return bool(np.all((templates == 0) | (templates == 1)))


@lru_cache(maxsize=8)
def _border_touching_patterns(feature_size: int) -> np.ndarray:
    """All binary k x k patterns with a one in the first/last row and first/last column."""
    k = feature_size
    codes = np.arange(1, 2 ** (k * k), dtype=np.int64)
    bits = ((codes[:, None] >> np.arange(k * k)) & 1).astype(np.uint8).reshape(-1, k, k)
    keep = (bits[:, 0, :].any(1) & bits[:, -1, :].any(1)
            & bits[:, :, 0].any(1) & bits[:, :, -1].any(1))
    return bits[keep].astype(np.float64)


def binary_template_capacity(feature_size: int) -> int | None:
    """Number of distinct border-touching binary templates (None when k*k > 16: ample)."""
    if feature_size * feature_size > 16:
        return None
    return len(_border_touching_patterns(feature_size))


def binary_templates(n_features: int, feature_size: int, rng: np.random.Generator) -> np.ndarray:
    """N pairwise distinct border-touching binary templates (see module docstring)."""
    k = feature_size
    capacity = binary_template_capacity(k)
    if capacity is not None:
        if n_features > capacity:
            raise ValueError(
                f"n_features must be <= {capacity} for template_family='binary' with "
                f"feature_size={k}: only {capacity} pairwise distinct binary templates touch "
                f"all four borders; got n_features={n_features}")
        patterns = _border_touching_patterns(k)
        return patterns[rng.choice(len(patterns), size=n_features, replace=False)]
    chosen: list[np.ndarray] = []
    seen: set[bytes] = set()
    while len(chosen) < n_features:
        candidate = (rng.random((k, k)) < 0.5).astype(np.float64)
        if not (candidate[0].any() and candidate[-1].any()
                and candidate[:, 0].any() and candidate[:, -1].any()):
            continue
        key = candidate.tobytes()
        if key not in seen:
            seen.add(key)
            chosen.append(candidate)
    return np.stack(chosen)


def _stroke(feature_size: int, angle: float) -> np.ndarray:
    k = feature_size
    centre = (k - 1) / 2.0
    rows, cols = np.mgrid[0:k, 0:k].astype(np.float64)
    y, x = rows - centre, cols - centre
    # distance of each pixel centre from the line through the centre at ``angle``
    distance = np.abs(-np.sin(angle) * x - np.cos(angle) * y)
    return (distance <= 0.5 + 1e-9).astype(np.float64)


def bar_templates(n_features: int, feature_size: int) -> np.ndarray:
    """N oriented strokes of width one through the centre, angle pi*j/N (j = 0..N-1)."""
    k = feature_size
    if k < 3:
        raise ValueError(f"feature_size must be >= 3 for template_family='bars'; got {k}")
    bars = [_stroke(k, np.pi * j / n_features) for j in range(n_features)]
    unique = {b.tobytes() for b in bars}
    if len(unique) < n_features:
        distinct = len({_stroke(k, np.pi * j / 64).tobytes() for j in range(64)})
        raise ValueError(
            f"n_features={n_features} oriented bars of feature_size={k} cannot be pairwise "
            f"distinct: at most about {distinct} orientations rasterize differently at this size; "
            f"use fewer features, a larger feature_size or template_family='binary'")
    return np.stack(bars)


def real_templates(n_features: int, feature_size: int, rng: np.random.Generator) -> np.ndarray:
    """N real-valued templates with entries uniform in [0, 1]."""
    return rng.random((n_features, feature_size, feature_size))


@lru_cache(maxsize=1)
def natural_images() -> tuple[np.ndarray, ...]:
    """The bundled natural images as grayscale float arrays in [0, 1] (nothing downloaded)."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    images = [image.astype(np.float64).mean(axis=2) / 255.0
              for image in load_sample_images().images]
    images.append(data.camera().astype(np.float64) / 255.0)
    return tuple(images)


def natural_templates(n_features: int, feature_size: int, rng: np.random.Generator,
                      *, min_contrast: float = 0.2, max_attempts: int = 10000) -> np.ndarray:
    """N patches cut at random places from :func:`natural_images`, stretched to [0, 1].

    Patches whose standard deviation before stretching is below ``min_contrast / 4`` are
    skipped (flat sky), so every template has visible structure.
    """
    images = natural_images()
    k = feature_size
    chosen: list[np.ndarray] = []
    for _ in range(max_attempts):
        image = images[int(rng.integers(len(images)))]
        y = int(rng.integers(image.shape[0] - k + 1))
        x = int(rng.integers(image.shape[1] - k + 1))
        patch = image[y:y + k, x:x + k]
        low, high = patch.min(), patch.max()
        if high - low < min_contrast or patch.std() < min_contrast / 4:
            continue
        chosen.append((patch - low) / (high - low))
        if len(chosen) == n_features:
            return np.stack(chosen)
    raise ValueError(  # pragma: no cover - the bundled images have plenty of texture
        f"could not cut {n_features} textured {k}x{k} patches from the bundled images")


def all_binary_patches(feature_size: int) -> np.ndarray:
    """Every binary k x k patch (2**(k*k) of them), for exhaustive checks (k <= 4)."""
    k = feature_size
    if k * k > 16:
        raise ValueError(f"feature_size must be <= 4 for exhaustive enumeration; got {k}")
    return np.array(list(itertools.product((0.0, 1.0), repeat=k * k))).reshape(-1, k, k)
