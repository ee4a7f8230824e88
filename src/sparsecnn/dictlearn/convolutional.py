"""Minibatch convolutional dictionary learning (docs/theory.md A.5).

The dictionary is a filter bank ``f`` shaped like ``nn.Conv2d.weight``; its atoms are every
filter at every stride position (:class:`sparsecnn.ConvDictionary`).  Learning minimises

    (1/N) sum_n min_a [ 1/2 ||x_n - D_f a||^2 + lam ||a||_1 ]    over unit-norm filters f

by alternating, on each minibatch, (i) convolutional sparse coding of the images with
:func:`sparsecnn.sparse_code` (FISTA, signed or non-negative) and (ii) ``dictionary_steps``
projected gradient steps on the filters,

    f <- P( f - (1/L_f) grad_f 1/2 ||x - D_f a||^2 ),

where ``L_f`` is the squared operator norm of the linear map ``f -> D_f a`` for the current
codes (power iteration through autograd) and ``P`` rescales every filter to unit Frobenius
norm (docs/theory.md convention 4).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from .._checks import as_tensor, check_finite, check_positive_float, check_positive_int
from ..dictionary import ConvDictionary
from ..inference import ConvergenceWarning, sparse_code

__all__ = ["ConvDictionaryLearningResult", "learn_conv_dictionary"]


@dataclass
class ConvDictionaryLearningResult:
    """Learned unit-norm filters ``(n_filters, C, k, k)`` and the mean energy per image of
    every minibatch before its dictionary step."""

    filters: torch.Tensor
    stride: int
    padding: int
    energy_history: list[float] = field(default_factory=list)

    def as_dictionary(self) -> ConvDictionary:
        return ConvDictionary(self.filters, stride=self.stride, padding=self.padding)


def _unit_filters(filters: torch.Tensor) -> torch.Tensor:
    norms = torch.linalg.vector_norm(filters.flatten(1), dim=1).view(-1, 1, 1, 1)
    return filters / torch.clamp(norms, min=torch.finfo(filters.dtype).tiny)


def _synthesis_norm(codes: torch.Tensor, filters: torch.Tensor, signal_shape: tuple[int, ...],
                    stride: int, padding: int, generator: torch.Generator,
                    n_iter: int = 20) -> float:
    """``||f -> D_f a||^2`` by power iteration on its normal operator (autograd adjoint)."""
    vector = torch.randn(filters.shape, generator=generator, dtype=torch.float64).to(
        filters.dtype)
    vector = vector / torch.linalg.vector_norm(vector)
    estimate = 0.0
    for _ in range(n_iter):
        probe = vector.detach().requires_grad_(True)
        image = ConvDictionary(probe, stride=stride, padding=padding).synthesis(
            codes, signal_shape)
        (normal,) = torch.autograd.grad(image, probe, grad_outputs=image.detach())
        estimate = float(torch.linalg.vector_norm(normal))
        if estimate == 0.0:
            return 0.0
        vector = normal / estimate
    return estimate


def learn_conv_dictionary(images: Any, n_filters: int, kernel_size: int, lam: float, *,
                          stride: int = 1, padding: int = 0, nonneg: bool = False,
                          n_steps: int = 50, batch_size: int = 16, dictionary_steps: int = 5,
                          inference_iter: int = 50, seed: int = 0, init: Any = None,
                          progress: Callable[[Iterable], Iterable] | None = None
                          ) -> ConvDictionaryLearningResult:
    """Learn ``n_filters`` unit-norm ``kernel_size x kernel_size`` filters from ``images``
    ``(n_images, C, H, W)`` (module docstring).  Initial filters: ``init`` or seeded random
    crops of the images."""
    data, _ = as_tensor(images, "images")
    if data.ndim != 4:
        raise ValueError(f"images must be 4-D (n_images, C, H, W); got shape "
                         f"{tuple(data.shape)}")
    check_finite(data, "images")
    n_filters = check_positive_int(n_filters, "n_filters")
    kernel_size = check_positive_int(kernel_size, "kernel_size")
    lam = check_positive_float(lam, "lam")
    n_steps = check_positive_int(n_steps, "n_steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    dictionary_steps = check_positive_int(dictionary_steps, "dictionary_steps")
    inference_iter = check_positive_int(inference_iter, "inference_iter")
    if kernel_size > min(data.shape[-2:]) + 2 * padding:
        raise ValueError(f"kernel_size must fit the padded images of size "
                         f"{tuple(data.shape[-2:])}; got {kernel_size}")
    generator = torch.Generator().manual_seed(int(seed))
    if init is None:
        which = torch.randint(0, data.shape[0], (n_filters,), generator=generator)
        top = torch.randint(0, data.shape[-2] - kernel_size + 1, (n_filters,),
                            generator=generator)
        left = torch.randint(0, data.shape[-1] - kernel_size + 1, (n_filters,),
                             generator=generator)
        crops = torch.stack([data[i, :, t:t + kernel_size, s:s + kernel_size]
                             for i, t, s in zip(which.tolist(), top.tolist(), left.tolist(),
                                                strict=True)])
        noise = torch.randn(crops.shape, generator=generator, dtype=torch.float64).to(
            data.dtype)
        filters = _unit_filters(crops - crops.mean(dim=(1, 2, 3), keepdim=True)
                                + 1e-3 * noise)
    else:
        filters, _ = as_tensor(init, "init", dtype=data.dtype)
        expected = (n_filters, data.shape[1], kernel_size, kernel_size)
        if tuple(filters.shape) != expected:
            raise ValueError(f"init must have shape {expected}; got {tuple(filters.shape)}")
        ConvDictionary(filters).check_atoms("init")
        filters = _unit_filters(filters)
    history: list[float] = []
    steps: Iterable[int] = range(n_steps)
    if progress is not None:
        steps = progress(steps)
    for _ in steps:
        index = torch.randint(0, data.shape[0], (min(batch_size, data.shape[0]),),
                              generator=generator)
        batch = data[index]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            result = sparse_code(batch, ConvDictionary(filters, stride=stride, padding=padding),
                                 lam, method="fista", nonneg=nonneg, max_iter=inference_iter,
                                 tol=1e-4, warn=False)
        codes = result.codes.detach()
        history.append(float(result.energy.mean()))
        lipschitz = _synthesis_norm(codes, filters, tuple(batch.shape), stride, padding,
                                    generator)
        if lipschitz == 0.0:
            continue  # every code is zero: the filters receive no gradient
        for _ in range(dictionary_steps):
            probe = filters.detach().requires_grad_(True)
            reconstruction = ConvDictionary(probe, stride=stride, padding=padding).synthesis(
                codes, tuple(batch.shape))
            loss = 0.5 * ((batch - reconstruction) ** 2).sum()
            (gradient,) = torch.autograd.grad(loss, probe)
            filters = _unit_filters(filters - gradient / lipschitz)
    return ConvDictionaryLearningResult(filters=filters.detach(), stride=stride,
                                        padding=padding, energy_history=history)
