"""Sparse-coding layers: ``SparseConv2d`` and ``SparseLinear`` (Bowren 2021, arXiv 2108.06622;
docs/theory.md A.4-A.8, conventions 5-7).

A layer holds the parameters of ``nn.Conv2d`` / ``nn.Linear`` (``weight``, ``bias``; their state
dicts load unchanged) and reads them as non-negative sparse coding with unit-norm atoms
``d_i = w_i/||w_i||``, thresholds ``lam_i = -b_i/||w_i||`` and output scales ``||w_i||``:

* ``n_iter = 0``: the one-shot code, exactly ``ReLU(conv2d(x, W) + b)`` -- the MAP code when the
  dictionary is orthonormal (A.3-A.5);
* ``n_iter = k``: ``||w|| * a^k``, ``a^k`` the k-th ISTA/FISTA/LCA iterate from 0 on
  ``E+(a) = 1/2 ||x - D a||^2 + sum_i lam_i a_i, a >= 0`` (A.8.2), which approaches the true
  sparse code of a non-orthogonal dictionary as ``k`` grows.  The step is ``1/L`` with
  ``L = ||D||_2^2``, computed without gradient and cached per weight values and input size
  (:mod:`.lipschitz`: it depends on the input size, exact or a Fourier bound by size), or the
  fixed ``step_size`` given to the layer (``step_size <= 1/L`` keeps ISTA monotone).

:meth:`SparseConv2d.from_dictionary` / :meth:`SparseLinear.from_dictionary` build a layer from a
unit-norm dictionary and thresholds ``lam`` directly (``W = D``, ``b = -lam``).

``proper_prior=True`` keeps ``b <= 0`` (projection after every optimizer step);
``unit_norm=True`` stores a direction and a separate ``output_scale`` (weight normalisation), see
:mod:`.parametrizations`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._checks import (
    as_tensor,
    check_choice,
    check_int_pair,
    check_positive_float,
    check_positive_int,
)
from ..dictionary import ConvDictionary, DenseDictionary
from .functional import METHODS, atoms_and_scales, check_n_iter, sparse_conv2d, sparse_linear
from .lipschitz import LipschitzCache
from .parametrizations import register_proper_prior, unit_norm_weight

__all__ = ["SparseConv2d", "SparseLinear"]


def _check_input_tensor(x: Any) -> None:
    # nn.Conv2d fails on a non-tensor with an AttributeError deep inside; a layer names it
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor; got dtype {x.dtype}")


class _SparseCodingLayer(nn.Module):
    """Shared machinery: parameters, state-dict loading, atoms/thresholds, the step size."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def _setup(self, weight_shape: tuple[int, ...], fan_in: int, bias: bool, n_iter: int,
               method: str, nonneg: bool, proper_prior: bool, unit_norm: bool, restart: bool,
               device: Any, dtype: Any, generator: torch.Generator | None,
               step_size: float | None = None) -> None:
        self.n_iter = check_n_iter(n_iter)
        self.step_size = None if step_size is None else check_positive_float(step_size,
                                                                            "step_size")
        self.method = check_choice(method, "method", METHODS)
        self.nonneg = bool(nonneg)
        self.proper_prior = bool(proper_prior)
        self.unit_norm = bool(unit_norm)
        self.restart = bool(restart)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(weight_shape, **factory))
        # same initialisation as nn.Conv2d / nn.Linear (Kaiming uniform, a = sqrt(5))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5), generator=generator)
        if unit_norm:
            norms = torch.linalg.vector_norm(self.weight.detach().flatten(1), dim=1)
            self.output_scale = nn.Parameter(norms.clone())
        if bias:
            self.bias = nn.Parameter(torch.empty(weight_shape[0], **factory))
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound, generator=generator)
            if proper_prior:
                with torch.no_grad():
                    self.bias.copy_(-self.bias.abs())
        else:
            self.register_parameter("bias", None)
        self._lipschitz = LipschitzCache()
        if proper_prior:
            register_proper_prior(self)

    # -- the sparse-coding reading (docs/theory.md convention 5) ----------------------------------
    def effective_weight(self) -> torch.Tensor:
        """The ``nn.Conv2d``/``nn.Linear`` weight ``W`` this layer applies: ``weight`` itself, or
        ``output_scale * weight/||weight||`` with ``unit_norm``."""
        if self.unit_norm:
            return unit_norm_weight(self.weight, self.output_scale)
        return self.weight

    def atoms(self) -> torch.Tensor:
        """Unit-norm atoms ``d_i = w_i/||w_i||`` shaped like ``weight`` (error on a zero filter)."""
        return atoms_and_scales(self.effective_weight())[0]

    def output_scales(self) -> torch.Tensor:
        """``||w_i||`` per output unit/channel."""
        return torch.linalg.vector_norm(self.effective_weight().flatten(1), dim=1)

    def thresholds(self) -> torch.Tensor:
        """``lam_i = -b_i/||w_i||`` (zero without a bias); negative entries are improper priors."""
        atoms, scales = atoms_and_scales(self.effective_weight())
        del atoms
        if self.bias is None:
            return torch.zeros_like(scales)
        return -self.bias / scales

    def _step_lipschitz(self, compute: Any) -> float:
        """``1/step`` of the iterations: ``1/step_size`` when the layer has one, else ``L``."""
        step = self.step_size
        if step is not None:
            return 1.0 / check_positive_float(step, "step_size")
        return compute()

    def _lipschitz_parameters(self) -> list[torch.Tensor]:
        # the atoms depend on the direction only (a sign of g flips atoms, not ||D||_2)
        return [self.weight]

    def extra_repr(self) -> str:
        step = "" if self.step_size is None else f", step_size={self.step_size}"
        return (f"n_iter={self.n_iter}, method={self.method!r}, nonneg={self.nonneg}, "
                f"proper_prior={self.proper_prior}, unit_norm={self.unit_norm}{step}")

    # -- state dicts ------------------------------------------------------------------------
    def _expected_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {"weight": tuple(self.weight.shape)}
        if self.bias is not None:
            shapes["bias"] = tuple(self.bias.shape)
        if self.unit_norm:
            shapes["output_scale"] = tuple(self.output_scale.shape)
        return shapes

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              local_metadata: dict, strict: bool, missing_keys: list[str],
                              unexpected_keys: list[str], error_msgs: list[str]) -> None:
        name = type(self).__name__
        shapes = self._expected_shapes()
        weight_key = prefix + "weight"
        if self.unit_norm and weight_key in state_dict and prefix + "output_scale" not in \
                state_dict:
            # a plain nn.Conv2d/nn.Linear state dict: direction = W, output scale = ||W||
            loaded = state_dict[weight_key]
            if tuple(loaded.shape) == shapes["weight"]:
                _, scales = atoms_and_scales(loaded.detach(), name=f"state dict '{weight_key}'")
                state_dict[prefix + "output_scale"] = scales
        for key, expected in shapes.items():
            full = prefix + key
            if full not in state_dict:
                if strict:
                    raise ValueError(
                        f"state dict for {name} ({self.extra_shape_repr()}) has no entry "
                        f"'{full}'; expected keys {sorted(prefix + k for k in shapes)} (the "
                        f"keys of nn.{self._plain_name}), got {sorted(state_dict)}")
                continue
            got = tuple(state_dict[full].shape)
            if got != expected:
                raise ValueError(
                    f"state dict entry '{full}' has shape {got}; {name} "
                    f"({self.extra_shape_repr()}) expects {expected}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if self.proper_prior and self.bias is not None and bool((self.bias > 0).any()):
            count = int((self.bias > 0).sum())
            with torch.no_grad():
                self.bias.clamp_(max=0.0)
            warnings.warn(
                f"{name} with proper_prior=True loaded {count} positive bias(es) (improper "
                "priors, docs/theory.md A.4); they were projected to 0 (flat prior)",
                UserWarning, stacklevel=3)

    _plain_name = ""

    def extra_shape_repr(self) -> str:
        raise NotImplementedError


class SparseConv2d(_SparseCodingLayer):
    """Convolutional sparse-coding layer (docs/theory.md A.5, A.8).

    ``out = ReLU(conv2d(x, W) + b)`` for ``n_iter = 0``; for ``n_iter = k``,
    ``out = ||w|| * a^k`` with ``a^k`` the k-th iterate from 0 of ``method`` on
    ``min_{a >= 0} 1/2 ||x - D a||^2 + sum_k lam_k sum_p a_{k,p}``, ``D`` the convolutional
    dictionary of the unit-norm filters ``W/||W||`` (analysis ``conv2d``, synthesis
    ``conv_transpose2d``) and ``lam = -b/||w||`` per channel (Bowren 2021; Sulam et al. 2018,
    arXiv 1806.00701, for the unrolled iterations).

    Parameters are those of ``nn.Conv2d`` (``groups = dilation = 1``, zero padding) plus
    ``n_iter``, ``method`` (``"ista"``, ``"fista"``, ``"lca"``), ``nonneg`` (``False``: signed
    codes and the soft threshold), ``proper_prior``, ``unit_norm``, ``restart`` (FISTA's gradient
    restart, as in :func:`sparsecnn.sparse_code`), ``generator`` (seeded initialisation) and
    ``step_size`` (``None``: ``1/L`` with ``L = ||D||_2^2`` for the input size, see
    :meth:`lipschitz`; a float ``> 0``: that fixed step, e.g. lca-pytorch's ``dt/tau``).

    With ``unit_norm=True`` the ``weight`` parameter is the direction ``v`` (any norm) and
    :meth:`effective_weight` is ``output_scale * v/||v||``; a plain ``nn.Conv2d`` state dict
    loads as ``v = W``, ``output_scale = ||W||``.  :meth:`atoms`, :meth:`thresholds` and
    :meth:`output_scales` give the sparse-coding reading in every mode.
    """

    _plain_name = "Conv2d"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                 n_iter: int = 0, method: str = "ista", nonneg: bool = True,
                 proper_prior: bool = False, unit_norm: bool = False, *, bias: bool = True,
                 restart: bool = True, device: Any = None, dtype: Any = None,
                 generator: torch.Generator | None = None,
                 step_size: float | None = None) -> None:
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_channels = check_positive_int(out_channels, "out_channels")
        self.kernel_size = check_int_pair(kernel_size, "kernel_size")
        self.stride = check_int_pair(stride, "stride")
        self.padding = check_int_pair(padding, "padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(
                f"kernel_size and stride must be >= 1 and padding >= 0; got kernel_size="
                f"{kernel_size!r}, stride={stride!r}, padding={padding!r}")
        shape = (self.out_channels, self.in_channels, *self.kernel_size)
        self._setup(shape, self.in_channels * self.kernel_size[0] * self.kernel_size[1], bias,
                    n_iter, method, nonneg, proper_prior, unit_norm, restart, device, dtype,
                    generator, step_size)

    def extra_shape_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"kernel_size={self.kernel_size}")

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}, "
                + super().extra_repr())

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, **options: Any) -> SparseConv2d:
        """A layer with ``conv``'s parameters and weights (``options``: ``n_iter``, ``method``,
        ...).  Raises ``ValueError`` for grouped, dilated or non-zero-padded convolutions."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv must be an nn.Conv2d; got {type(conv).__name__}")
        if conv.groups != 1 or conv.dilation != (1, 1) or conv.padding_mode != "zeros" or \
                isinstance(conv.padding, str):
            raise ValueError(
                "conv must have groups=1, dilation=1, integer padding and padding_mode='zeros' "
                f"to be a convolutional dictionary; got groups={conv.groups}, dilation="
                f"{conv.dilation}, padding={conv.padding!r}, padding_mode={conv.padding_mode!r}")
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, bias=conv.bias is not None, device=conv.weight.device,
                    dtype=conv.weight.dtype, **options)
        layer.load_state_dict(conv.state_dict())
        return layer

    @classmethod
    def from_dictionary(cls, atoms: Any, lam: Any, stride: int | Sequence[int] = 1,
                        padding: int | Sequence[int] = 0, **options: Any) -> SparseConv2d:
        """The layer coding with the convolutional dictionary of unit-norm filters ``atoms``
        ``(K, C, kh, kw)`` and thresholds ``lam`` (one number, or ``K``): ``weight = atoms``,
        ``bias = -lam`` (docs/theory.md convention 5 with ``||w|| = 1``), so ``n_iter = k``
        gives the k-th iterate on ``1/2 ||x - D a||^2 + sum lam_k a_k, a >= 0``."""
        weight, lam_tensor = _dictionary_parameters(atoms, lam, 4, "(K, C, kh, kw)")
        layer = cls(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]), stride, padding,
                    device=weight.device, dtype=weight.dtype, **options)
        _load_dictionary(layer, weight, lam_tensor)
        return layer

    def lipschitz(self, signal_shape: Sequence[int]) -> float:
        """``L = ||D||_2^2`` of the unit-norm dictionary for one signal ``(C, H, W)`` (cached per
        weight values and size).  It depends on the signal size; it is exact for small
        problems and a Fourier upper bound above :data:`~sparsecnn.nn.lipschitz.EXPLICIT_LIMIT`
        (:func:`~sparsecnn.nn.lipschitz.lipschitz_method` says which)."""
        shape = tuple(int(s) for s in signal_shape[-3:])
        return self._lipschitz.conv(self._lipschitz_parameters(), self.atoms, self.stride,
                                    self.padding, shape)

    def dictionary(self, signal_size: Sequence[int] | None = None) -> ConvDictionary:
        """The (detached) convolutional dictionary of unit-norm atoms."""
        return ConvDictionary(self.atoms().detach(), self.stride, self.padding, signal_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input_tensor(x)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (batch, {self.in_channels}, H, W) for "
                             f"in_channels={self.in_channels}; got shape {tuple(x.shape)}")
        if self.proper_prior:  # a deep copy is not registered until it runs
            register_proper_prior(self)
        weight = self.effective_weight()
        lipschitz = self._step_lipschitz(lambda: self.lipschitz(x.shape[1:])) \
            if self.n_iter > 0 else None
        return sparse_conv2d(x, weight, self.bias, self.stride, self.padding, self.n_iter,
                             self.method, self.nonneg, lipschitz, self.restart)


class SparseLinear(_SparseCodingLayer):
    """Dense sparse-coding layer (docs/theory.md A.4, A.8): the rows of ``weight``
    ``(out_features, in_features)`` are the atoms.

    ``out = ReLU(x W^T + b)`` for ``n_iter = 0``; ``out = ||w|| * a^k`` for ``n_iter = k`` with
    ``a^k`` the k-th iterate of ``method`` on ``min_{a >= 0} 1/2 ||x - D a||^2 + lam^T a``,
    ``D = (W/||w||)^T`` and ``lam = -b/||w||``.  Options as for :class:`SparseConv2d`.
    """

    _plain_name = "Linear"

    def __init__(self, in_features: int, out_features: int, n_iter: int = 0,
                 method: str = "ista", nonneg: bool = True, proper_prior: bool = False,
                 unit_norm: bool = False, *, bias: bool = True, restart: bool = True,
                 device: Any = None, dtype: Any = None,
                 generator: torch.Generator | None = None,
                 step_size: float | None = None) -> None:
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        self._setup((self.out_features, self.in_features), self.in_features, bias, n_iter,
                    method, nonneg, proper_prior, unit_norm, restart, device, dtype, generator,
                    step_size)

    def extra_shape_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, " + super().extra_repr())

    @classmethod
    def from_linear(cls, linear: nn.Linear, **options: Any) -> SparseLinear:
        """A layer with ``linear``'s parameters and weights."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear; got {type(linear).__name__}")
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype, **options)
        layer.load_state_dict(linear.state_dict())
        return layer

    @classmethod
    def from_dictionary(cls, D: Any, lam: Any, **options: Any) -> SparseLinear:
        """The layer coding with the dense dictionary ``D`` ``(in_features, out_features)``
        (unit-norm columns are the atoms, as in :class:`~sparsecnn.DenseDictionary`) and
        thresholds ``lam`` (one number, or ``out_features``): ``weight = D^T``, ``bias =
        -lam``, so ``n_iter = k`` gives the k-th iterate on ``1/2 ||x - D a||^2 + lam^T a``."""
        if isinstance(D, DenseDictionary):
            D = D.matrix
        matrix, _ = as_tensor(D, "D")
        if matrix.ndim != 2:
            raise ValueError(f"D must be a matrix (in_features, out_features) with the atoms as "
                             f"columns; got shape {tuple(matrix.shape)}")
        weight, lam_tensor = _dictionary_parameters(matrix.T, lam, 2, "(in_features, "
                                                    "out_features)", name="D")
        layer = cls(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype,
                    **options)
        _load_dictionary(layer, weight, lam_tensor)
        return layer

    def lipschitz(self) -> float:
        """``L = ||D||_2^2`` of the unit-norm dictionary (exact; cached per weight values)."""
        return self._lipschitz.dense(self._lipschitz_parameters(), self.atoms)

    def dictionary(self) -> DenseDictionary:
        """The (detached) dense dictionary ``(in_features, out_features)`` of unit-norm atoms."""
        return DenseDictionary(self.atoms().detach().T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input_tensor(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (*, {self.in_features}) for in_features="
                             f"{self.in_features}; got shape {tuple(x.shape)}")
        if self.proper_prior:
            register_proper_prior(self)
        lipschitz = self._step_lipschitz(self.lipschitz) if self.n_iter > 0 else None
        return sparse_linear(x, self.effective_weight(), self.bias, self.n_iter, self.method,
                             self.nonneg, lipschitz, self.restart)


def _dictionary_parameters(atoms: Any, lam: Any, ndim: int, layout: str, name: str = "atoms"
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight, lam)`` from a unit-norm dictionary (rows/filters along dim 0 of ``atoms``)."""
    weight, _ = as_tensor(atoms, name)
    if weight.ndim != ndim or min(weight.shape) == 0:
        raise ValueError(f"{name} must have shape {layout}; got {tuple(weight.shape)}")
    if not weight.is_floating_point():
        weight = weight.to(torch.get_default_dtype())
    norms = torch.linalg.vector_norm(weight.detach().flatten(1), dim=1)
    tolerance = 1e-4 if weight.dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-10
    if not bool(((norms - 1).abs() <= tolerance).all()):
        raise ValueError(f"{name} must have unit-norm atoms (the layer reads w/||w|| as the "
                         f"atoms); got norms from {float(norms.min()):.6g} to "
                         f"{float(norms.max()):.6g}: divide each atom by its norm first")
    lam_tensor = torch.as_tensor(lam, dtype=weight.dtype, device=weight.device)
    if lam_tensor.ndim == 0:
        lam_tensor = lam_tensor.expand(weight.shape[0])
    if lam_tensor.shape != (weight.shape[0],) or not bool(torch.isfinite(lam_tensor).all()):
        raise ValueError(f"lam must be one finite number or {weight.shape[0]} (one per atom); "
                         f"got shape {tuple(lam_tensor.shape)}")
    return weight, lam_tensor


def _load_dictionary(layer: _SparseCodingLayer, weight: torch.Tensor, lam: torch.Tensor) -> None:
    state = {"weight": weight.detach().clone(), "bias": -lam.detach().clone()}
    if layer.unit_norm:
        state["output_scale"] = torch.ones_like(lam)
    layer.load_state_dict(state)
