"""Corruptions: determinism, severity laws, the blur against scipy.ndimage, bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage

from sparsecnn.robustness import (
    CORRUPTIONS,
    SEVERITIES,
    corrupt,
    corruption_curves,
    corruption_parameter,
)


def _images(seed: int = 0, n: int = 16, size: int = 8) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size, size, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("corruption", CORRUPTIONS)
@pytest.mark.parametrize("severity", [1, 3, 5])
def test_corruption_is_deterministic_in_seed(corruption: str, severity: int) -> None:
    images = _images()
    first = corrupt(images, corruption, severity, seed=7)
    again = corrupt(images, corruption, severity, seed=7)
    assert torch.equal(first, again)
    assert first.shape == images.shape and first.dtype == images.dtype
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    if corruption in ("gaussian_noise", "salt_and_pepper", "occlusion"):
        assert not torch.equal(first, corrupt(images, corruption, severity, seed=8))


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_severity_zero_is_the_clean_image(corruption: str) -> None:
    images = _images()
    assert torch.equal(corrupt(images, corruption, 0, seed=3), images)


@given(seed=st.integers(0, 2**31 - 1))
def test_gaussian_noise_grows_with_severity_pixel_by_pixel(seed: int) -> None:
    # clip(x + s z) - x = min(s z, 1 - x) or max(s z, -x): its size is monotone in s
    images = _images(seed % 1000)
    changes = [(corrupt(images, "gaussian_noise", s, seed=seed) - images).abs()
               for s in range(6)]
    for lower, higher in itertools.pairwise(changes):
        assert bool((higher >= lower - 1e-15).all())
    norms = [float(torch.linalg.vector_norm(c)) for c in changes]
    assert norms == sorted(norms) and norms[-1] > norms[1] > 0


def test_gaussian_noise_without_clipping_has_the_stated_sigma() -> None:
    images = torch.full((400, 1, 8, 8), 0.5, dtype=torch.float64)
    for severity in range(1, 6):
        noise = corrupt(images, "gaussian_noise", severity, seed=1, bounds=None) - images
        sigma = SEVERITIES["gaussian_noise"][severity - 1]
        assert abs(float(noise.std()) - sigma) < 0.03 * sigma
        assert abs(float(noise.mean())) < 0.03 * sigma


@given(seed=st.integers(0, 2**31 - 1))
def test_salt_and_pepper_sets_are_nested(seed: int) -> None:
    images = torch.full((8, 1, 8, 8), 0.5, dtype=torch.float64)
    changed = [corrupt(images, "salt_and_pepper", s, seed=seed) != images for s in range(6)]
    for lower, higher in itertools.pairwise(changed):
        assert bool((higher | ~lower).all())  # lower implies higher
    replaced = corrupt(images, "salt_and_pepper", 5, seed=seed)
    assert set(replaced[changed[5]].unique().tolist()) <= {0.0, 1.0}


def test_salt_and_pepper_fraction() -> None:
    images = torch.full((500, 1, 8, 8), 0.5, dtype=torch.float64)
    for severity in range(1, 6):
        fraction = float((corrupt(images, "salt_and_pepper", severity, seed=2) != images)
                         .double().mean())
        expected = SEVERITIES["salt_and_pepper"][severity - 1]
        assert abs(fraction - expected) < 4 * (expected * (1 - expected) / images.numel()) ** .5


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_blur_equals_scipy_gaussian_filter(severity: int) -> None:
    images = _images(n=4, size=12)
    width = SEVERITIES["blur"][severity - 1]
    reference = np.stack([ndimage.gaussian_filter(image[0].numpy(), width, mode="constant",
                                                  cval=0.0, truncate=4.0)
                          for image in images])[:, None]
    blurred = corrupt(images, "blur", severity, bounds=None)
    np.testing.assert_allclose(blurred.numpy(), reference, atol=1e-12)


def test_contrast_scales_the_deviation_from_the_mean_exactly() -> None:
    images = _images()
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    deviations = []
    for severity in range(6):
        factor = corruption_parameter("contrast", severity)
        result = corrupt(images, "contrast", severity)
        torch.testing.assert_close(result - mean, factor * (images - mean), atol=1e-14,
                                   rtol=0)
        deviations.append(float(torch.linalg.vector_norm(result - mean)))
    assert deviations == sorted(deviations, reverse=True)


@given(seed=st.integers(0, 2**31 - 1))
def test_occluders_grow_with_the_same_centre(seed: int) -> None:
    images = torch.ones(6, 1, 8, 8, dtype=torch.float64)
    masks = [corrupt(images, "occlusion", s, seed=seed) == 0 for s in range(6)]
    for severity in range(1, 6):
        assert bool((masks[severity] | ~masks[severity - 1]).all())
        side = round(SEVERITIES["occlusion"][severity - 1] * 8)
        rows = masks[severity][:, 0].any(dim=2).sum(1)
        cols = masks[severity][:, 0].any(dim=1).sum(1)
        # the square is clipped at the border: at most side x side, never empty
        assert bool((rows <= side).all() and (cols <= side).all() and (rows >= 1).all())
        assert bool((masks[severity][:, 0].sum((1, 2)) == rows * cols).all())


def test_corruption_curves_start_at_clean_accuracy() -> None:
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).double()
    images = _images(n=30)
    labels = model(images).argmax(1)
    curves = corruption_curves(model, images, labels, seed=0)
    assert set(curves) == set(CORRUPTIONS)
    for values in curves.values():
        assert len(values) == 6 and values[0] == 1.0
        assert all(0.0 <= v <= 1.0 for v in values)


@pytest.mark.parametrize(("call", "message"), [
    (lambda x: corrupt(x, "fog", 1), r"corruption must be one of .*got 'fog'"),
    (lambda x: corrupt(x, "blur", 6), r"severity must be an integer in 0\.\.5; got 6"),
    (lambda x: corrupt(x, "blur", 1.0), r"severity must be an integer in 0\.\.5; got 1\.0"),
    (lambda x: corrupt(x, "blur", 1, seed=-1), r"seed must be a non-negative integer; got -1"),
    (lambda x: corrupt(x[0], "blur", 1), r"images must be a floating tensor of shape "
                                         r"\(n, C, H, W\); got shape \(1, 8, 8\)"),
    (lambda x: corrupt(x, "blur", 1, bounds=(1.0, 0.0)), r"bounds must be None or a pair"),
    (lambda x: corrupt(x * float("nan"), "blur", 1), r"images must be finite"),
])
def test_bad_corruption_input(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(_images())


def test_non_tensor_images_raise_type_error() -> None:
    with pytest.raises(TypeError, match=r"images must be a torch\.Tensor .* got ndarray"):
        corrupt(np.zeros((1, 1, 8, 8)), "blur", 1)
