"""The forward pass of a sparse-coding layer as a function (docs/theory.md A.4, A.8,
conventions 5-7).

A layer ``ReLU(W x + b)`` with filters (rows) ``w_i`` is read as non-negative sparse coding with

* unit-norm atoms ``d_i = w_i / ||w_i||`` (the dictionary ``D``),
* thresholds ``lam_i = -b_i / ||w_i||`` (one per output channel: a stationary prior),
* output scale ``||w_i||``,

since ``ReLU(w_i^T x + b_i) = ||w_i|| ReLU(d_i^T x - lam_i)`` (convention 5).  The layer's output
with ``n_iter = k > 0`` is ``||w|| * a^k`` where ``a^k`` is the k-th iterate, from ``a^0 = 0``, of
ISTA, FISTA or LCA on

    E+(a) = 1/2 ||x - D a||^2 + sum_i lam_i a_i,   a >= 0

(signed codes and ``sum_i lam_i |a_i|`` with ``nonneg=False``).  The iterations are those of
:func:`sparsecnn.sparse_code` (the same :class:`~sparsecnn.inference.SparseCodingProblem` pieces,
the same step ``1/L``), without its stopping test: a layer runs a fixed number of steps.  One
ISTA step from 0 is ``ReLU(D^T x - lam) / L`` (docs/theory.md A.8, check 14).

``L = ||D||_2^2`` is passed in as a number: the layer modules compute it without gradient by
power iteration (:mod:`sparsecnn.nn.lipschitz`), so autograd differentiates the iterations with
``L`` held constant.  Every update builds new tensors (no in-place operation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._checks import check_choice, check_nonzero_norms, check_positive_int
from ..dictionary import ConvDictionary, DenseDictionary
from ..inference import SparseCodingProblem
from ..inference.lca import lca
from ..inference.proximal_gradient import proximal_gradient
from .unrolled_function import unrolled_conv_codes
from .unrolling import ConvUnrolling

__all__ = ["METHODS", "LayerProblem", "atoms_and_scales", "sparse_conv2d", "sparse_linear",
           "unrolled_codes"]

METHODS = ("ista", "fista", "lca")


def atoms_and_scales(weight: torch.Tensor, name: str = "weight"
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a weight (rows/filters ``w_i`` along dim 0) into unit-norm atoms ``w_i/||w_i||`` and
    scales ``||w_i||``; raise ``ValueError`` on a zero filter (it has no atom)."""
    scales = torch.linalg.vector_norm(weight.flatten(1), dim=1)
    check_nonzero_norms(scales, lambda count, indices: (
        f"{name} has {count} zero filter(s) (output channels {indices}); a zero filter has no "
        "unit-norm atom d = w/||w|| and no threshold -b/||w||: remove the channel or "
        "re-initialise it"))
    shape = (-1,) + (1,) * (weight.ndim - 1)
    return weight / scales.view(shape), scales


def unrolled_codes(problem: SparseCodingProblem, n_iter: int, method: str,
                   lipschitz: float, restart: bool = True) -> torch.Tensor:
    """``n_iter`` iterates of ISTA, FISTA (gradient restart as in ``sparse_code``) or LCA from
    zero, with step ``1/lipschitz`` (the Euler step ``dt/tau = 1/L`` for LCA): the engine's
    loops in their fixed-step mode (``tol=None``).

    ISTA:  a^{t+1} = T_{lam/L}(a^t - (1/L) D^T (D a^t - x)),  a^0 = 0
    LCA:   u^{t+1} = u^t + (1/L)(D^T x - u^t - (D^T D - I) a^t),  a^t = T_lam(u^t),  u^0 = 0
    """
    check_choice(method, "method", METHODS)
    if method == "lca":
        return lca(problem, max_iter=n_iter, tol=None, init=None, step_size=None,
                   lipschitz=lipschitz)[0]
    return proximal_gradient(problem, accelerated=method == "fista", restart=restart,
                             max_iter=n_iter, tol=None, init=None,
                             step_size=1.0 / lipschitz)[0]


def check_n_iter(n_iter: int) -> int:
    """``n_iter``, the number of steps of a layer: an integer ``>= 0`` (0: one-shot ``ReLU``)."""
    return check_positive_int(n_iter, "n_iter", minimum=0)


# Dtypes whose unrolled iterations run in float32 (the fused kernels have no half-precision
# add-relu, and the step 1/L would round away): the output is rounded back to the dtype.
LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check_dtypes(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """``x``, ``weight`` and ``bias`` must share one floating dtype (as ``nn.Conv2d`` needs)."""
    for name, tensor in (("weight", weight), ("bias", bias)):
        if tensor is not None and tensor.dtype != x.dtype:
            raise TypeError(f"{name} has dtype {tensor.dtype} but x has dtype {x.dtype}; "
                            "expected the same floating dtype (convert the input or the "
                            "layer, e.g. layer.to(x.dtype))")


def _in_float32(function, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                *args, **kwargs) -> torch.Tensor:
    """``function`` on float32 copies of a float16/bfloat16 call, rounded back to its dtype
    (differentiable: gradients reach the low-precision parameters)."""
    result = function(x.float(), weight.float(), None if bias is None else bias.float(),
                      *args, **kwargs)
    return result.to(x.dtype)


def _check_iterations(n_iter: int, method: str, lipschitz: float | None) -> None:
    check_n_iter(n_iter)
    check_choice(method, "method", METHODS)
    if n_iter > 0 and (lipschitz is None or not math.isfinite(lipschitz) or lipschitz <= 0):
        raise ValueError(f"lipschitz must be a finite number > 0 when n_iter > 0; got "
                         f"{lipschitz!r}")


class LayerProblem(SparseCodingProblem):
    """The engine's :class:`~sparsecnn.inference.SparseCodingProblem` (same ``threshold``,
    ``gradient``, ``normal``, ``energy``) for one forward pass of a layer, built without the
    per-call validation scans of the engine (finiteness of ``x``, range of ``lam``): the layer
    has checked the shapes, and like ``nn.Conv2d`` it does not scan its input.  ``lam`` (one
    threshold per channel, broadcast to the codes) stays differentiable, so gradients reach
    the biases."""

    def __init__(self, x: torch.Tensor, dictionary: ConvDictionary | DenseDictionary,
                 lam: torch.Tensor, nonneg: bool) -> None:
        # the base class's trusted set-up (every field, no validation): see the docstring
        self._init_fields(x, dictionary, lam, nonneg)


def sparse_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0),
                  n_iter: int = 0, method: str = "ista", nonneg: bool = True,
                  lipschitz: float | None = None, restart: bool = True) -> torch.Tensor:
    """Convolutional sparse-coding layer.

    ``n_iter = 0``: exactly ``relu(conv2d(x, weight, bias, stride, padding))`` (with
    ``nonneg=False``: the soft threshold ``relu(z + b) - relu(-z + b)``, ``z = conv2d(x, W)``).
    ``n_iter = k``: ``||w|| * a^k`` (module docstring), ``lipschitz`` = ``||D||_2^2`` of the
    unit-norm dictionary for this input size.  float16/bfloat16 iterations run in float32
    and the output is rounded to the input's dtype; an empty batch gives an empty output.
    """
    _check_iterations(n_iter, method, lipschitz)
    _check_dtypes(x, weight, bias)
    if n_iter > 0 and x.ndim == 4 and x.shape[0] == 0:  # nothing to iterate, like nn.Conv2d
        return F.conv2d(x, weight, bias, stride, padding)
    if n_iter > 0 and x.dtype in LOW_PRECISION:
        return _in_float32(sparse_conv2d, x, weight, bias, stride, padding, n_iter, method,
                           nonneg, lipschitz, restart)
    if n_iter == 0:
        if nonneg:
            return F.relu(F.conv2d(x, weight, bias, stride, padding))
        z = F.conv2d(x, weight, None, stride, padding)
        offset = 0.0 if bias is None else bias.view(1, -1, 1, 1)
        return F.relu(z + offset) - F.relu(-z + offset)
    atoms, scales = atoms_and_scales(weight)
    lam = torch.zeros_like(scales) if bias is None else -bias / scales
    if nonneg or not bool((lam < 0).any()):
        settings = ConvUnrolling(method, n_iter, float(lipschitz), nonneg, restart,
                                 tuple(stride), tuple(padding))
        return unrolled_conv_codes(x, atoms, lam, settings, scales)
    else:  # signed codes with a negative threshold (an energy unbounded below): the engine loop
        problem = LayerProblem(x, ConvDictionary(atoms, stride, padding), lam.view(-1, 1, 1),
                               nonneg)
        codes = unrolled_codes(problem, n_iter, method, lipschitz, restart)
    return codes * scales.view(1, -1, 1, 1)


def sparse_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  n_iter: int = 0, method: str = "ista", nonneg: bool = True,
                  lipschitz: float | None = None, restart: bool = True) -> torch.Tensor:
    """Dense sparse-coding layer; ``weight`` is ``(out_features, in_features)`` as in
    ``nn.Linear`` and its rows are the (unnormalised) atoms.  ``x`` is ``(*, in_features)``.

    ``n_iter = 0``: exactly ``relu(linear(x, weight, bias))``; ``n_iter = k``: ``||w|| * a^k``
    (float16/bfloat16 iterations run in float32, the output rounded to the input's dtype).
    """
    _check_iterations(n_iter, method, lipschitz)
    _check_dtypes(x, weight, bias)
    if n_iter > 0 and x.dtype in LOW_PRECISION:
        return _in_float32(sparse_linear, x, weight, bias, n_iter, method, nonneg, lipschitz,
                           restart)
    if n_iter == 0:
        if nonneg:
            return F.relu(F.linear(x, weight, bias))
        z = F.linear(x, weight)
        offset = 0.0 if bias is None else bias
        return F.relu(z + offset) - F.relu(-z + offset)
    atoms, scales = atoms_and_scales(weight)
    lam = torch.zeros_like(scales) if bias is None else -bias / scales
    leading = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    problem = LayerProblem(flat, DenseDictionary(atoms.T), lam, nonneg)
    codes = unrolled_codes(problem, n_iter, method, lipschitz, restart)
    return (codes * scales).reshape(*leading, weight.shape[0])
