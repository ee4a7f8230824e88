"""Common corruptions, 5 severities each (severity 0 is the clean image), every random draw
from ``torch.Generator().manual_seed(seed)`` and shared across severities, so that a severity
ladder is nested:

* ``gaussian_noise``: ``clip(x + sigma z)``, ``z ~ N(0, I)``, ``sigma`` in
  :data:`SEVERITIES` (severity 4 is docs/theory.md check 27's ``sigma = 0.3``);
* ``salt_and_pepper``: pixel ``i`` replaced by 0 or 1 (probability 1/2 each) iff ``u_i < p``,
  ``u ~ U[0, 1)``;
* ``blur``: convolution with a normalised Gaussian kernel of width ``s`` pixels, radius
  ``int(4 s + 0.5)``, zero padding (``scipy.ndimage.gaussian_filter(mode="constant")``);
* ``contrast``: ``mean + c (x - mean)`` per image, ``c`` decreasing with severity;
* ``occlusion``: a zero square of side ``round(f * min(H, W))`` at a random centre per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_choice, check_positive_float
from ._checks import Bounds, check_bounds, check_images, check_seed, check_severity

__all__ = ["CORRUPTIONS", "SEVERITIES", "corrupt", "corruption_parameter", "gaussian_kernel"]

CORRUPTIONS = ("gaussian_noise", "salt_and_pepper", "blur", "contrast", "occlusion")
#: physical parameter of each corruption at severities 1..5 (severity 0 is the clean image):
#: noise sigma, replaced-pixel fraction, blur width in pixels, contrast factor, occluded side
#: fraction.
SEVERITIES: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.05, 0.1, 0.2, 0.3, 0.5),
    "salt_and_pepper": (0.02, 0.05, 0.1, 0.2, 0.3),
    "blur": (0.4, 0.6, 0.8, 1.0, 1.5),
    "contrast": (0.8, 0.6, 0.4, 0.25, 0.1),
    "occlusion": (0.125, 0.25, 0.375, 0.5, 0.625),
}


def corruption_parameter(corruption: str, severity: int) -> float:
    """The physical parameter of ``corruption`` at ``severity`` (see :data:`SEVERITIES`); the
    identity value (0, or 1 for contrast) at severity 0."""
    check_choice(corruption, "corruption", CORRUPTIONS)
    severity = check_severity(severity)
    if severity == 0:
        return 1.0 if corruption == "contrast" else 0.0
    return SEVERITIES[corruption][severity - 1]


def gaussian_kernel(width: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised 1-D Gaussian ``exp(-t^2 / (2 s^2)) / sum``, ``t = -r..r``, ``r = int(4 s +
    0.5)`` (scipy.ndimage's truncation at 4 widths)."""
    width = check_positive_float(width, "width")
    radius = int(4.0 * width + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=dtype)
    kernel = torch.exp(-offsets ** 2 / (2.0 * width ** 2))
    return kernel / kernel.sum()


def _blur(images: torch.Tensor, width: float) -> torch.Tensor:
    kernel = gaussian_kernel(width, images.dtype).to(images.device)
    radius = (kernel.numel() - 1) // 2
    channels = images.shape[1]
    rows = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    cols = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    blurred = F.conv2d(images, rows, padding=(radius, 0), groups=channels)
    return F.conv2d(blurred, cols, padding=(0, radius), groups=channels)


def corrupt(images: torch.Tensor, corruption: str, severity: int, *, seed: int = 0,
            bounds: Bounds = (0.0, 1.0)) -> torch.Tensor:
    """``images`` ``(n, C, H, W)`` corrupted by ``corruption`` at ``severity`` in 0..5.

    Deterministic in ``seed``; the random draws do not depend on ``severity``, so a higher
    severity perturbs the same pixels further (noise ``x + sigma z`` with the same ``z``, nested
    salt-and-pepper sets, growing occluders with the same centres).  The result is clipped to
    ``bounds`` (``None``: no clipping).  Severity 0 returns a copy of ``images``.
    """
    images = check_images(images)
    check_choice(corruption, "corruption", CORRUPTIONS)
    parameter = corruption_parameter(corruption, severity)
    seed = check_seed(seed)
    bounds = check_bounds(bounds)
    if severity == 0:
        return images.clone()
    generator = torch.Generator().manual_seed(seed)
    n, _, height, width = images.shape
    factory = {"dtype": images.dtype}
    if corruption == "gaussian_noise":
        noise = torch.randn(images.shape, generator=generator, **factory).to(images.device)
        result = images + parameter * noise
    elif corruption == "salt_and_pepper":
        uniform = torch.rand(images.shape, generator=generator, **factory).to(images.device)
        salt = torch.rand(images.shape, generator=generator, **factory).to(images.device)
        low, high = bounds if bounds is not None else (0.0, 1.0)
        values = torch.where(salt < 0.5, torch.full_like(images, low),
                             torch.full_like(images, high))
        result = torch.where(uniform < parameter, values, images)
    elif corruption == "blur":
        result = _blur(images, parameter)
    elif corruption == "contrast":
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        result = mean + parameter * (images - mean)
    else:  # occlusion
        side = max(1, round(parameter * min(height, width)))
        centre_y = torch.randint(0, height, (n,), generator=generator).to(images.device)
        centre_x = torch.randint(0, width, (n,), generator=generator).to(images.device)
        top = (centre_y - side // 2).view(n, 1, 1)
        left = (centre_x - side // 2).view(n, 1, 1)
        rows = torch.arange(height, device=images.device).view(1, height, 1)
        cols = torch.arange(width, device=images.device).view(1, 1, width)
        inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
        result = torch.where(inside[:, None], torch.zeros_like(images), images)
    if bounds is not None:
        result = result.clamp(bounds[0], bounds[1])
    return result
