"""Thresholds and the map between CNN biases and sparse-coding priors (docs/theory.md A.2-A.4).

Conventions (docs/theory.md, "How to read this"):

* soft threshold ``S_theta(z) = sign(z) * max(|z| - theta, 0)`` is the proximal map of
  ``theta * |a|``; the non-negative threshold ``relu(z - theta)`` is the proximal map of
  ``theta * a + indicator(a >= 0)``.
* a unit ``ReLU(w^T x + b)`` is a unit-norm atom ``d = w / ||w||`` with threshold
  ``lam = -b / ||w||`` and output scale ``||w||`` (convention 5);
* ``b < 0`` is a proper exponential prior, ``b = 0`` a flat improper prior and ``b > 0`` an
  improper anti-sparse prior (convention 6, docs/theory.md A.4).

Every function accepts torch tensors, numpy arrays or Python numbers and returns the same kind.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._checks import as_tensor, check_finite

__all__ = [
    "bias_to_lambda",
    "lambda_to_bias",
    "merge_polarity",
    "nonneg_threshold",
    "polarity_split",
    "prior_is_proper",
    "prior_kind",
    "prior_rate",
    "soft_threshold",
]


def _to_tensor(value: Any, name: str) -> tuple[torch.Tensor, str]:
    kind = "torch" if isinstance(value, torch.Tensor) else (
        "numpy" if isinstance(value, np.ndarray) else "scalar")
    tensor, _ = as_tensor(value, name)
    return tensor, kind


def _back(tensor: torch.Tensor, kind: str) -> Any:
    if kind == "torch":
        return tensor
    array = tensor.detach().cpu().numpy()
    if kind == "scalar":
        return array.item()
    return array


def _threshold_tensor(theta: Any, like: torch.Tensor) -> torch.Tensor:
    if isinstance(theta, torch.Tensor):
        return theta.to(dtype=like.dtype, device=like.device)
    tensor, _ = as_tensor(theta, "theta", dtype=like.dtype, device=like.device)
    return tensor


def soft_threshold(z: Any, theta: Any) -> Any:
    """Soft threshold ``S_theta(z) = sign(z) * relu(|z| - theta)`` (docs/theory.md A.2).

    Written as ``relu(z - theta) - relu(-z - theta)`` (the polarity split), which is exactly
    equal for ``theta >= 0`` and keeps autograd free of ``sign``.
    """
    zt, kind = _to_tensor(z, "z")
    th = _threshold_tensor(theta, zt)
    return _back(torch.relu(zt - th) - torch.relu(-zt - th), kind)


def nonneg_threshold(z: Any, theta: Any) -> Any:
    """Non-negative threshold ``relu(z - theta)`` (docs/theory.md A.3); for ``theta < 0`` it is the
    minimiser of the modified energy with an anti-sparse prior (A.4)."""
    zt, kind = _to_tensor(z, "z")
    th = _threshold_tensor(theta, zt)
    return _back(torch.relu(zt - th), kind)


def polarity_split(z: Any, theta: Any, dim: int = 1) -> Any:
    """Concatenate ``relu(z - theta)`` and ``relu(-z - theta)`` along ``dim`` (CReLU).

    These are the non-negative codes of the doubled dictionary ``[D, -D]``; for ``theta >= 0``
    their difference (:func:`merge_polarity`) is the soft threshold (docs/theory.md A.2, check 6).
    """
    zt, kind = _to_tensor(z, "z")
    th = _threshold_tensor(theta, zt)
    return _back(torch.cat([torch.relu(zt - th), torch.relu(-zt - th)], dim=dim), kind)


def merge_polarity(codes: Any, dim: int = 1) -> Any:
    """Inverse of :func:`polarity_split`: split ``codes`` in two halves along ``dim`` and return
    ``positive - negative``."""
    ct, kind = _to_tensor(codes, "codes")
    size = ct.shape[dim]
    if size % 2:
        raise ValueError(f"codes must have an even size along dim={dim}; got {size}")
    positive, negative = ct.split(size // 2, dim=dim)
    return _back(positive - negative, kind)


def _weight_norm(weight_norm: Any, like: torch.Tensor) -> torch.Tensor:
    norm = _threshold_tensor(weight_norm, like)
    check_finite(norm, "weight_norm")
    if bool((norm <= 0).any()):
        raise ValueError(
            f"weight_norm must be > 0 everywhere (a zero weight vector has no atom); "
            f"got minimum {float(norm.min())}"
        )
    return norm


def bias_to_lambda(b: Any, weight_norm: Any = 1.0) -> Any:
    """Threshold of the unit-norm atom: ``lam = -b / ||w||`` (docs/theory.md convention 5,
    check 4)."""
    bt, kind = _to_tensor(b, "b")
    check_finite(bt, "b")
    return _back(-bt / _weight_norm(weight_norm, bt), kind)


def lambda_to_bias(lam: Any, weight_norm: Any = 1.0) -> Any:
    """Inverse of :func:`bias_to_lambda`: ``b = -lam * ||w||``."""
    lt, kind = _to_tensor(lam, "lam")
    check_finite(lt, "lam")
    return _back(-lt * _weight_norm(weight_norm, lt), kind)


def prior_rate(b: Any, weight_norm: Any = 1.0, noise_variance: float = 1.0) -> Any:
    """Rate of the exponential prior with sigma^2 explicit: ``-b / (sigma^2 ||w||)`` (A.4)."""
    if not noise_variance > 0:
        raise ValueError(f"noise_variance must be > 0; got {noise_variance!r}")
    lam = bias_to_lambda(b, weight_norm)
    return lam / noise_variance


def prior_is_proper(b: Any) -> Any:
    """True where ``b < 0``: the prior ``lam * exp(-lam a)`` on ``a >= 0`` with ``lam = -b/||w||``
    integrates to one iff ``lam > 0`` (the integral of ``exp(-lam a)`` is ``1/lam``)."""
    bt, kind = _to_tensor(b, "b")
    check_finite(bt, "b")
    proper = bt < 0
    if kind == "torch":
        return proper
    array = proper.cpu().numpy()
    return bool(array) if kind == "scalar" else array


def prior_kind(b: float) -> str:
    """Name the prior of one bias: ``"proper"`` (b < 0), ``"flat"`` (b = 0, improper) or
    ``"anti-sparse"`` (b > 0, improper and not normalisable)."""
    value = float(b)
    if not np.isfinite(value):
        raise ValueError(f"b must be finite; got {b!r}")
    if value < 0:
        return "proper"
    return "flat" if value == 0 else "anti-sparse"
