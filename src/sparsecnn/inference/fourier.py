"""Convolutional sparse coding with circular boundaries, in the Fourier domain.

The circular convolutional dictionary (Wohlberg 2016, "Efficient algorithms for
convolutional sparse representations", IEEE TIP 25(1), the convention of sporco's
``ConvBPDN``) synthesises an image ``s`` (channels ``c``) from coefficient maps ``a_k`` of the
image's size::

    (D a)_c = sum_k d_{k,c} (*) a_k,      (*) = circular convolution, filters anchored at 0

and is diagonalised by the 2-D DFT: ``hat(D a)_c(w) = sum_k hat d_{k,c}(w) hat a_k(w)`` with the
filters zero-padded to the image size.  The adjoint is ``hat(D^T s)_k = sum_c conj(hat
d_{k,c}) hat s_c`` and the Lipschitz constant of the data-term gradient is exact:
``L = max_w lambda_max(hat D(w) hat D(w)^H)``.

:func:`circular_sparse_code` minimises the signed or non-negative energy of docs/theory.md A.1-A.3
with these operators::

    E(a) = 1/2 ||x - D a||^2 + sum_i lam_i |a_i|        (E+: a >= 0, penalty sum_i lam_i a_i)

by FISTA with gradient restart (Beck & Teboulle 2009; O'Donoghue & Candes 2015): the gradient
step is taken in the Fourier domain (where ``D^T D`` is diagonal per frequency) and the
threshold in space, so every iteration costs one forward FFT of the extrapolated point and one
inverse FFT per coefficient map.  It stops with the rule of
:func:`sparsecnn.sparse_code`: for every image, the relative change of the codes and the
relative optimality gap ``||L (a - prox(a - grad/L))||_inf / ||D^T x||_inf`` are both
``<= tol`` (floored at 4 units of rounding of the dtype).  It is a no-autograd fast path:
inputs that require grad are refused (use :func:`sparsecnn.sparse_code` for training).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from .._checks import (
    as_tensor,
    check_finite,
    check_positive_float,
    check_positive_int,
    check_same_dtype_device,
    describe,
)
from .problem import (
    ConvergenceWarning,
    SparseCodeResult,
    check_flag,
    check_iterate,
    tensor_like,
)
from .proximal_gradient import fista_momentum

__all__ = ["CircularConvOperator", "circular_energy", "circular_sparse_code"]


class CircularConvOperator:
    """The circular convolutional dictionary of ``filters`` ``(K, C, kh, kw)`` on images of
    size ``(H, W)``, applied through real 2-D FFTs.

    ``synthesis(a)`` is ``(D a)_c = sum_k d_{k,c} (*) a_k`` for codes ``(B, K, H, W)`` and
    ``analysis(x)`` its exact adjoint ``(D^T x)_k = sum_c d_{k,c} (x) x_c`` (circular
    correlation) for images ``(B, C, H, W)``.
    """

    def __init__(self, filters: torch.Tensor, image_size: tuple[int, int]) -> None:
        if filters.ndim != 4:
            raise ValueError(f"filters must be 4-D (n_filters, in_channels, kh, kw); got "
                             f"{describe(filters)}")
        height, width = image_size
        if filters.shape[2] > height or filters.shape[3] > width:
            raise ValueError(f"filters of size {tuple(filters.shape[2:])} do not fit in images "
                             f"of size {(height, width)}")
        self.filters = filters
        self.image_size = (int(height), int(width))
        # (K, C, W//2 + 1, H): the filters zero-padded to the image size, anchored at 0
        self.spectrum = self.forward_transform(torch.nn.functional.pad(
            filters, (0, width - filters.shape[3], 0, height - filters.shape[2])))

    @property
    def n_filters(self) -> int:
        return self.filters.shape[0]

    def forward_transform(self, values: torch.Tensor) -> torch.Tensor:
        """2-D real DFT of ``(..., H, W)`` maps, stored transposed as ``(..., W//2 + 1, H)``.

        A real FFT along the rows, then a complex FFT along the (contiguous) columns: the
        same coefficients as ``torch.fft.rfft2`` (transposed), in a layout whose inverse
        avoids the slow strided complex-to-real pass of ``irfft2``.
        """
        return torch.fft.fft(torch.fft.rfft(values, dim=-1).transpose(-1, -2).contiguous(),
                             dim=-1)

    def inverse_transform(self, spectrum: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`forward_transform`: real maps ``(..., H, W)``."""
        return torch.fft.irfft(torch.fft.ifft(spectrum, dim=-1).transpose(-1, -2),
                               n=self.image_size[1], dim=-1)

    def synthesis_spectrum(self, code_spectrum: torch.Tensor) -> torch.Tensor:
        """``hat(D a)_c = sum_k hat d_{k,c} hat a_k`` for code spectra ``(B, K, H, W')``."""
        return torch.einsum("kchw,bkhw->bchw", self.spectrum, code_spectrum)

    def analysis_spectrum(self, image_spectrum: torch.Tensor) -> torch.Tensor:
        """``hat(D^T x)_k = sum_c conj(hat d_{k,c}) hat x_c``."""
        return torch.einsum("kchw,bchw->bkhw", self.spectrum.conj(), image_spectrum)

    def synthesis(self, codes: torch.Tensor) -> torch.Tensor:
        return self.inverse_transform(self.synthesis_spectrum(self.forward_transform(codes)))

    def analysis(self, images: torch.Tensor) -> torch.Tensor:
        return self.inverse_transform(self.analysis_spectrum(self.forward_transform(images)))

    def lipschitz(self) -> float:
        """``L = ||D||_2^2 = max_w lambda_max(hat D(w) hat D(w)^H)`` (exact, no iteration)."""
        spectrum = self.spectrum.to(torch.complex128).flatten(2).permute(2, 1, 0)  # (F, C, K)
        if spectrum.shape[1] == 1:
            return float((spectrum.abs() ** 2).sum((1, 2)).max())
        return float(torch.linalg.eigvalsh(spectrum @ spectrum.conj().transpose(1, 2)).max())


def _prepare(x: Any, filters: Any, lam: Any, nonneg: bool
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    numpy_input = not isinstance(x, torch.Tensor)
    if isinstance(filters, torch.Tensor):
        weight = filters
    else:
        weight, _ = as_tensor(filters, "filters")
    if not weight.is_floating_point():
        raise TypeError(f"filters must be a floating tensor; got {describe(weight)}")
    if weight.dtype not in (torch.float32, torch.float64):
        raise TypeError(
            f"circular_sparse_code needs float32 or float64 filters and x; got filters of "
            f"dtype {weight.dtype}: half-precision FFTs are not available on every device and "
            "a float16/bfloat16 iteration cannot judge its own convergence; convert with "
            ".float() (sparsecnn.sparse_code solves float16/bfloat16 in float32 for you)")
    if isinstance(x, torch.Tensor):
        signal = x
        check_same_dtype_device(weight, "filters", signal, "x")
    else:
        if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating) and \
                torch.from_numpy(np.empty(0, dtype=x.dtype)).dtype != weight.dtype:
            raise TypeError(f"x is a numpy array of dtype {x.dtype} but filters has dtype "
                            f"{weight.dtype}; expected the same floating dtype (convert one "
                            "of them)")
        signal, _ = as_tensor(x, "x", dtype=weight.dtype, device=weight.device)
    if weight.ndim != 4:
        raise ValueError(f"filters must be 4-D (n_filters, in_channels, kh, kw) like "
                         f"nn.Conv2d.weight; got {describe(weight)}")
    if signal.ndim != 4 or signal.shape[1] != weight.shape[1]:
        raise ValueError(f"x must have shape (batch, {weight.shape[1]}, H, W) to match the "
                         f"filters' in_channels={weight.shape[1]}; got shape "
                         f"{tuple(signal.shape)}")
    if signal.requires_grad or weight.requires_grad:
        raise ValueError("circular_sparse_code is a no-autograd fast path: x and filters must "
                         "not require grad; use sparsecnn.sparse_code to differentiate")
    if signal.shape[2] < weight.shape[2] or signal.shape[3] < weight.shape[3]:
        raise ValueError(f"x must be at least as large as the filters "
                         f"{tuple(weight.shape[2:])} (circular convolution on the image's "
                         f"grid); got spatial size {tuple(signal.shape[2:])}")
    check_finite(signal, "x")
    check_finite(weight, "filters")
    norms = torch.linalg.vector_norm(weight.flatten(1), dim=1)
    if bool((norms == 0).any()):
        raise ValueError(f"filters has {int((norms == 0).sum())} zero-norm filter(s); every "
                         "filter must have a non-zero norm")
    threshold = tensor_like(lam, "lam", signal)
    check_finite(threshold, "lam")
    if threshold.ndim == 1 and threshold.shape[0] == weight.shape[0]:
        threshold = threshold.view(-1, 1, 1)
    code_shape = (signal.shape[0], weight.shape[0], *signal.shape[2:])
    try:
        if len(torch.broadcast_shapes(threshold.shape, code_shape)) != 4:
            raise RuntimeError
    except RuntimeError:
        raise ValueError(f"lam must be a scalar, one value per filter ({weight.shape[0]}) or "
                         f"broadcastable to the codes of shape {code_shape}; got shape "
                         f"{tuple(threshold.shape)}") from None
    if threshold.numel() and float(threshold.min()) < 0:
        raise ValueError(f"lam must be >= 0 (the energy's l1 weight); got minimum "
                         f"{float(threshold.min()):.6g}")
    _ = nonneg
    return signal, weight, threshold, numpy_input


def circular_energy(x: Any, filters: Any, codes: Any, lam: Any, *, nonneg: bool = False
                    ) -> Any:
    """Energy per image ``1/2 ||x - D a||^2 + sum_i lam_i |a_i|`` of the circular
    dictionary (``+inf`` where ``nonneg`` and a code is negative)."""
    signal, weight, threshold, numpy_input = _prepare(x, filters, lam, nonneg)
    code_tensor = tensor_like(codes, "codes", signal)
    expected = (signal.shape[0], weight.shape[0], *signal.shape[2:])
    if tuple(code_tensor.shape) != expected:
        raise ValueError(f"codes must have shape {expected}; got shape "
                         f"{tuple(code_tensor.shape)}")
    operator = CircularConvOperator(weight, tuple(signal.shape[2:]))
    values = _energy(operator, signal, code_tensor, threshold, nonneg)
    return values.cpu().numpy() if numpy_input else values


def _energy(operator: CircularConvOperator, x: torch.Tensor, codes: torch.Tensor,
            lam: torch.Tensor, nonneg: bool) -> torch.Tensor:
    residual = x - operator.synthesis(codes)
    penalty = (lam * (codes if nonneg else codes.abs())).expand(codes.shape)
    values = 0.5 * (residual ** 2).flatten(1).sum(1) + penalty.flatten(1).sum(1)
    if nonneg:
        infeasible = (codes < 0).flatten(1).any(1)
        values = torch.where(infeasible, torch.full_like(values, math.inf), values)
    return values


def _threshold(values: torch.Tensor, theta: torch.Tensor, nonneg: bool) -> torch.Tensor:
    if nonneg:
        return torch.relu(values - theta)
    return values - torch.clamp(values, -theta, theta)


def circular_sparse_code(x: Any, filters: Any, lam: Any, *, nonneg: bool = False,
                         max_iter: int = 1000, tol: float = 1e-6, restart: bool = True,
                         warn: bool = True, check_every: int = 1) -> SparseCodeResult:
    """Solve ``min_a 1/2 ||x - D a||^2 + sum_i lam_i |a_i|`` (``a >= 0`` and penalty
    ``sum_i lam_i a_i`` with ``nonneg``) for the circular convolutional dictionary::

        (D a)_c = sum_k d_{k,c} (*) a_k,     hat(D a)_c(w) = sum_k hat d_{k,c}(w) hat a_k(w)

    Circular boundary: the convolution ``(*)`` wraps around the image's edges (filters
    anchored at the origin), so ``D`` is block-circulant and the 2-D DFT diagonalises it (the
    right-hand equation, with the filters zero-padded to ``(H, W)``); every coefficient map
    has the image's size.  FISTA with gradient restart then takes each gradient step per
    frequency and each threshold in space, with the exact ``L = max_w lambda_max(hat D(w)
    hat D(w)^H)``, and stops by the rule of :func:`sparsecnn.sparse_code`.  This is a
    different dictionary from :class:`~sparsecnn.ConvDictionary` (zero padding, strides,
    codes of the convolution's output size) used by :func:`sparsecnn.sparse_code`, and a
    no-autograd fast path: inputs that require grad are refused.

    Parameters
    ----------
    x : images ``(batch, C, H, W)``.
    filters : filter bank ``(n_filters, C, kh, kw)`` (like ``nn.Conv2d.weight``), anchored at
        the origin and zero-padded to ``(H, W)`` (sporco's ``ConvBPDN`` convention).
    lam : ``>= 0``: a scalar, one value per filter, or a tensor broadcastable to the codes.
    nonneg : non-negative codes with penalty ``sum_i lam_i a_i`` (a bool).
    max_iter, tol, restart, warn : as in :func:`sparsecnn.sparse_code`.

    float32 and float64 only: float16/bfloat16 filters are refused with a ``TypeError``
    (no half-precision FFT on every device; use :func:`sparsecnn.sparse_code`, which solves
    them in float32).  A numpy ``x`` must have the filters' dtype.  An empty batch returns
    empty codes with ``converged=True`` and ``n_iter=0``.
    check_every : test the stopping rule every ``check_every`` iterations (it costs two norms
        and, once the change is small, a gradient); the codes may then take up to
        ``check_every - 1`` more iterations than needed.

    Returns
    -------
    SparseCodeResult with codes ``(batch, n_filters, H, W)``, ``energy``, ``n_iter``,
    ``converged``, ``optimality_gap``; ``method="fista_fourier"``.
    """
    max_iter = check_positive_int(max_iter, "max_iter")
    check_every = check_positive_int(check_every, "check_every")
    tol = check_positive_float(tol, "tol")
    nonneg = check_flag(nonneg, "nonneg")
    signal, weight, lam_tensor, numpy_input = _prepare(x, filters, lam, nonneg)
    tol = max(tol, 4 * torch.finfo(signal.dtype).eps)
    operator = CircularConvOperator(weight, tuple(signal.shape[2:]))
    lipschitz = operator.lipschitz()
    step = 1.0 / lipschitz
    if signal.shape[0] == 0:  # an empty batch: nothing to solve (FFTs of no images fail)
        empty = signal.new_zeros((0, weight.shape[0], *signal.shape[2:]))
        values = signal.new_zeros(0)
        return SparseCodeResult(
            codes=empty.numpy() if numpy_input else empty,
            energy=values.numpy() if numpy_input else values, n_iter=0, converged=True,
            optimality_gap=values.numpy() if numpy_input else values,
            method="fista_fourier", step_size=step)
    theta = lam_tensor * step
    with torch.no_grad():
        correlation_spectrum = operator.analysis_spectrum(operator.forward_transform(signal))
        correlation = operator.inverse_transform(correlation_spectrum)
        scale = torch.clamp(correlation.abs().flatten(1).amax(1),
                            min=torch.finfo(signal.dtype).tiny)
        # the proximal-gradient point from a point y with spectrum y_hat, in the Fourier domain:
        #   y - step D^T (D y - x) = y + step D^T x - step D^T D y
        shifted_correlation = step * correlation_spectrum
        if weight.shape[1] == 1:
            filter_spectrum = operator.spectrum[:, 0]  # (K, H, W')
            conj_filter_spectrum = filter_spectrum.conj()
            descent = -step * conj_filter_spectrum

            def gradient_step_spectrum(point_spectrum: torch.Tensor) -> torch.Tensor:
                # sum_k hat d_k hat y_k (vecdot conjugates its first argument)
                synthesis = torch.linalg.vecdot(conj_filter_spectrum, point_spectrum, dim=1)
                return torch.addcmul(point_spectrum + shifted_correlation, descent,
                                     synthesis.unsqueeze(1))
        else:
            gram_spectrum = torch.einsum("kchw,jchw->kjhw", operator.spectrum.conj(),
                                         operator.spectrum)

            def gradient_step_spectrum(point_spectrum: torch.Tensor) -> torch.Tensor:
                normal = torch.einsum("kjhw,bjhw->bkhw", gram_spectrum, point_spectrum)
                return point_spectrum + shifted_correlation - step * normal

        code_shape = (signal.shape[0], weight.shape[0], *signal.shape[2:])
        codes = torch.zeros(code_shape, dtype=signal.dtype, device=signal.device)
        point, point_spectrum = codes, operator.forward_transform(codes)
        momentum = torch.ones(signal.shape[0], dtype=signal.dtype, device=signal.device)
        tiny = torch.finfo(signal.dtype).tiny
        scalar_theta = float(theta) if theta.numel() == 1 and not nonneg else None
        converged, n_iter, gap = False, 0, None
        for n_iter in range(1, max_iter + 1):
            values = operator.inverse_transform(gradient_step_spectrum(point_spectrum))
            new_codes = torch.nn.functional.softshrink(values, scalar_theta) \
                if scalar_theta is not None else _threshold(values, theta, nonneg)
            point, momentum = fista_momentum(new_codes, codes, point, momentum, restart)
            point_spectrum = operator.forward_transform(point)  # one FFT per map per iteration
            previous, codes = codes, new_codes
            if n_iter % check_every and n_iter != max_iter:
                continue
            difference = new_codes - previous
            change = torch.linalg.vector_norm(difference.flatten(1), dim=1) / torch.clamp(
                torch.linalg.vector_norm(new_codes.flatten(1), dim=1), min=tiny)
            worst = float(change.max())
            if not math.isfinite(worst):
                check_iterate(codes, "fista_fourier", n_iter)
            if worst <= tol:
                gap = _gap(operator, codes, operator.forward_transform(codes),
                           gradient_step_spectrum, theta, nonneg, lipschitz, scale)
                if float(gap.max()) <= tol:
                    converged = True
                    break
        check_iterate(codes, "fista_fourier", n_iter)
        if gap is None or not converged:
            gap = _gap(operator, codes, operator.forward_transform(codes),
                       gradient_step_spectrum, theta, nonneg, lipschitz, scale)
        if not converged and warn:
            warnings.warn(
                f"fista_fourier did not converge in max_iter={max_iter} iterations: worst "
                f"relative optimality gap {float(gap.max()):.3g} (tol={tol:g}); raise "
                "max_iter or tol", ConvergenceWarning, stacklevel=2)
        energy_values = _energy(operator, signal, codes, lam_tensor, nonneg)

    def output(tensor: torch.Tensor) -> Any:
        return tensor.cpu().numpy() if numpy_input else tensor

    return SparseCodeResult(codes=output(codes), energy=output(energy_values), n_iter=n_iter,
                            converged=converged, optimality_gap=output(gap),
                            method="fista_fourier", step_size=step)


def _gap(operator: CircularConvOperator, codes: torch.Tensor, code_spectrum: torch.Tensor,
         gradient_step_spectrum: Any, theta: torch.Tensor, nonneg: bool, lipschitz: float,
         scale: torch.Tensor) -> torch.Tensor:
    stepped = _threshold(operator.inverse_transform(gradient_step_spectrum(code_spectrum)),
                         theta, nonneg)
    return (lipschitz * (codes - stepped)).abs().flatten(1).amax(1) / scale
