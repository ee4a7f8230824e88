"""Input validation shared by the whole package.

Every error names the argument, what was expected and what was received, so that a user
reading a traceback learns how to fix the call without opening the source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def describe(value: Any) -> str:
    """Short human description of a value for error messages."""
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)}, dtype {value.dtype}, device {value.device}"
    if isinstance(value, np.ndarray):
        return f"numpy array of shape {value.shape}, dtype {value.dtype}"
    return f"{type(value).__name__} {value!r}"


def as_tensor(value: Any, name: str, *, dtype: torch.dtype | None = None,
              device: torch.device | str | None = None) -> tuple[torch.Tensor, bool]:
    """Convert ``value`` to a floating tensor; return it and whether the input was numpy.

    Python scalars and numpy arrays are accepted; anything else raises ``TypeError``.
    """
    was_numpy = isinstance(value, np.ndarray)
    if isinstance(value, torch.Tensor):
        tensor = value
    elif was_numpy or isinstance(value, (int, float, np.floating, np.integer, list, tuple)):
        array = np.asarray(value)
        if array.dtype == object or not np.issubdtype(array.dtype, np.number):
            raise TypeError(f"{name} must be numeric; got {describe(value)}")
        if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
            array = array.astype(np.float64)
        if not array.flags.writeable or not array.flags.c_contiguous:
            array = np.array(array, order="C")  # torch cannot wrap read-only memory
        tensor = torch.from_numpy(array)
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor, numpy array or number; got {type(value).__name__}"
        )
    if not tensor.is_floating_point():
        if tensor.is_complex():
            raise TypeError(f"{name} must be real-valued; got {describe(tensor)}")
        tensor = tensor.to(torch.get_default_dtype() if dtype is None else dtype)
    if dtype is not None and tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    if device is not None:
        tensor = tensor.to(device)
    return tensor, was_numpy


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``tensor`` holds NaN or Inf."""
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        n_bad = int((~finite).sum())
        raise ValueError(
            f"{name} must be finite; got {n_bad} NaN/Inf entr{'y' if n_bad == 1 else 'ies'} "
            f"in a {describe(tensor)}"
        )


def check_same_dtype_device(reference: torch.Tensor, reference_name: str,
                            other: torch.Tensor, other_name: str) -> None:
    """Raise ``TypeError`` on a dtype mix and ``ValueError`` on a device mix."""
    if other.dtype != reference.dtype:
        raise TypeError(
            f"{other_name} has dtype {other.dtype} but {reference_name} has dtype "
            f"{reference.dtype}; expected the same floating dtype (convert one of them)"
        )
    if other.device != reference.device:
        raise ValueError(
            f"{other_name} is on device {other.device} but {reference_name} is on "
            f"{reference.device}; expected both on the same device"
        )


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def check_int_pair(value: Any, name: str, *, minimum: int | None = None) -> tuple[int, int]:
    """An int or a pair of ints ``(height, width)``, each ``>= minimum`` when one is given.

    The one reader of 2-D sizes (kernel size, stride, padding, image size) across the package, so
    every such argument accepts the same forms and fails with the same message.
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        expected = "an int or a pair of ints" if minimum is None else (
            f"an integer >= {minimum} or a pair (height, width) of such integers")
        raise ValueError(f"{name} must be {expected}; got {value!r}")
    if minimum is not None and min(pair) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} or a pair (height, width) of "
                         f"such integers; got {value!r}")
    return pair


def check_positive_float(value: Any, name: str, *, allow_zero: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number; got {value!r}") from None
    ok = number >= 0 if allow_zero else number > 0
    if not np.isfinite(number) or not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}; got {value!r}")
    return number


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def as_matrix(value: Any, name: str, *, axes: str, dtype: torch.dtype | None = None
              ) -> torch.Tensor:
    """``value`` as a finite 2-D floating tensor; ``axes`` names its dimensions in the error
    (e.g. ``"(n_signals, n_features)"``)."""
    tensor, _ = as_tensor(value, name, dtype=dtype)
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be 2-D {axes}; got shape {tuple(tensor.shape)}")
    check_finite(tensor, name)
    return tensor


def check_batch(images: Any, name: str = "images") -> torch.Tensor:
    """A batch-first floating tensor ``(n, ...)`` with finite entries (images or features)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor with the batch dimension first; got "
                        f"{type(images).__name__}")
    if images.ndim < 2 or not images.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor of shape (n, ...); got shape "
                         f"{tuple(images.shape)}, dtype {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} must be finite; got NaN/Inf entries")
    return images


def check_nonzero_norms(norms: torch.Tensor, message: Callable[[int, str], str]) -> None:
    """Raise ``ValueError`` when some ``norms[i] = ||w_i||`` is 0 (a zero atom or filter has no
    direction ``w_i/||w_i||``): the one zero-atom check of dictionaries, layer weights and
    interpreted layers.  ``message(count, indices)`` words the error for the caller, with
    ``indices`` the first five zero entries (``"[0, 3]"``, ``"..."`` appended past five)."""
    zero = torch.nonzero(norms == 0).flatten()
    if zero.numel():
        count = int(zero.numel())
        raise ValueError(message(count, f"{zero[:5].tolist()}{'...' if count > 5 else ''}"))
