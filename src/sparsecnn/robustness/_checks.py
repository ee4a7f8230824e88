"""Input checks shared by the corruptions, the attacks and the evaluation, and the two small
conversions they all apply: inputs in the model's dtype, values clipped to the pixel range."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["Bounds", "as_model_dtype", "check_bounds", "check_images", "check_labels",
           "check_seed", "check_severity", "clip"]

#: the pixel range ``(low, high)`` results are clipped to; ``None``: no clipping.
Bounds = tuple[float, float] | None


def check_images(images: Any, name: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (n, C, H, W); got "
                        f"{type(images).__name__}")
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor of shape (n, C, H, W); got shape "
                         f"{tuple(images.shape)}, dtype {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} must be finite; got NaN/Inf entries")
    return images


def check_labels(labels: Any, n: int, name: str = "labels") -> torch.Tensor:
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.ndim != 1:
        got = (f"shape {tuple(labels.shape)}, dtype {labels.dtype}"
               if isinstance(labels, torch.Tensor) else type(labels).__name__)
        raise TypeError(f"{name} must be an int64 tensor of shape (n,); got {got}")
    if labels.shape[0] != n:
        raise ValueError(f"{name} must have one entry per image (n = {n}); got "
                         f"{labels.shape[0]}")
    return labels


def check_bounds(bounds: Bounds) -> Bounds:
    if bounds is None:
        return None
    if (not isinstance(bounds, (tuple, list)) or len(bounds) != 2
            or not all(isinstance(b, (int, float)) for b in bounds)
            or not float(bounds[0]) < float(bounds[1])):
        raise ValueError(f"bounds must be None or a pair (low, high) with low < high; got "
                         f"{bounds!r}")
    return (float(bounds[0]), float(bounds[1]))


def check_severity(severity: Any) -> int:
    if isinstance(severity, bool) or not isinstance(severity, int) or not 0 <= severity <= 5:
        raise ValueError(f"severity must be an integer in 0..5; got {severity!r}")
    return severity


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    return seed


def as_model_dtype(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``images`` in the dtype and on the device of the model's first floating parameter (so
    that a float32 model is attacked in float32)."""
    parameter = next(iter(model.parameters()), None)
    if parameter is not None and parameter.is_floating_point():
        return images.to(dtype=parameter.dtype, device=parameter.device)
    return images


def clip(values: torch.Tensor, bounds: Bounds) -> torch.Tensor:
    """``clamp(values, low, high)``, or ``values`` when ``bounds`` is ``None``."""
    return values if bounds is None else values.clamp(bounds[0], bounds[1])

