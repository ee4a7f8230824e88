"""The sparse-coding problem shared by every inference algorithm (docs/theory.md A.1-A.4, A.8).

Signed:        E(a)  = 1/2 ||x - D a||^2 + sum_i lam_i |a_i|
Non-negative:  E+(a) = 1/2 ||x - D a||^2 + sum_i lam_i a_i,  a >= 0

``lam`` is a scalar or a tensor broadcastable to the codes (per atom, per channel or per
coefficient); there is no hidden rescaling.  ``L = ||D||_2^2`` is the Lipschitz constant of the
data-term gradient ``D^T (D a - x)``.

This module validates inputs, holds the precomputed quantities of one problem (``D^T x``, the
Gram matrix of a dense dictionary when that is cheaper), and defines the energy, the proximal
map and the optimality (KKT) gap used as a stopping criterion.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from .._checks import as_tensor, check_finite, check_same_dtype_device, describe
from ..dictionary import ConvDictionary, DenseDictionary, as_dictionary


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped at ``max_iter`` before meeting its stopping criterion."""


class SolverDivergedError(FloatingPointError):
    """The iterates became NaN or Inf (the energy is unbounded below or the step too large)."""


@dataclass
class SparseCodeResult:
    """Outcome of :func:`sparsecnn.sparse_code`.

    Attributes
    ----------
    codes : the sparse codes, batch first (numpy if the signal was numpy).
    energy : the energy of ``codes`` per signal, shape ``(batch,)``.
    n_iter : iterations performed (0 for the closed form).
    converged : whether the stopping criterion was met (for ``closed_form``: whether the
        codes satisfy the optimality conditions to ``tol``, i.e. ``D`` is orthogonal enough).
    optimality_gap : relative optimality (KKT) gap per signal, see :func:`optimality_gap`.
    history : energy per iteration ``(n_iter + 1, batch)`` if requested, else ``None``.
    orthogonality_gap : ``||D^T D - I||_F`` for ``closed_form`` (how far the
        "orthogonal-assumed" transform is from exact), else ``None``.
    method : the algorithm used.
    step_size : ``1/L`` for ISTA/FISTA, the Euler step ``dt/tau`` for LCA, 1 for the closed form.
    """

    codes: Any
    energy: Any
    n_iter: int
    converged: bool
    optimality_gap: Any
    method: str
    step_size: float
    history: Any = None
    orthogonality_gap: float | None = None
    extras: dict = field(default_factory=dict)


class SolverRun(NamedTuple):
    """What one solver hands back to :func:`sparsecnn.sparse_code`.

    Attributes
    ----------
    codes : the final iterate ``a^k`` (the problem's shape, dtype and device).
    n_iter : iterations performed ``k`` (for the homotopy path: the most path segments, or
        fallback FISTA iterations, any signal used).
    converged : whether every signal met the stopping rule.
    step_size : the step used: ``1/L`` for ISTA/FISTA, the Euler step ``dt/tau`` for LCA;
        ``None`` for the homotopy path, which has no step.
    history : the energy after every iteration, ``[E(a^0), ..., E(a^k)]``, when requested;
        else empty.
    gap : the optimality gap per signal when the solver formed it (the homotopy path), else
        ``None`` (``sparse_code`` then computes it).
    """

    codes: torch.Tensor
    n_iter: int
    converged: bool
    step_size: float | None
    history: list[torch.Tensor]
    gap: torch.Tensor | None = None


def _reduce_per_sample(values: torch.Tensor) -> torch.Tensor:
    return values.flatten(1).sum(1)


def tensor_like(value: Any, name: str, x: torch.Tensor) -> torch.Tensor:
    """``value`` as a tensor of ``x``'s dtype and device: a tensor must already have them (no
    silent copy or cast of what the caller may differentiate), anything else is converted."""
    if isinstance(value, torch.Tensor):
        check_same_dtype_device(x, "x", value, name)
        return value
    tensor, _ = as_tensor(value, name, dtype=x.dtype, device=x.device)
    return tensor


def _validated_lam(lam: Any, x: torch.Tensor, dictionary: ConvDictionary | DenseDictionary,
                   code_shape: tuple[int, ...], nonneg: bool, allow_negative_lam: bool
                   ) -> torch.Tensor:
    """``lam`` as a finite tensor of ``x``'s dtype and device broadcastable to the codes,
    ``>= 0`` unless ``allow_negative_lam`` (with ``nonneg`` only)."""
    tensor = tensor_like(lam, "lam", x)
    check_finite(tensor, "lam")
    if isinstance(dictionary, ConvDictionary) and tensor.ndim == 1 and \
            tensor.shape[0] == dictionary.n_filters:
        tensor = tensor.view(-1, 1, 1)  # one threshold per channel
    try:
        torch.broadcast_shapes(tensor.shape, code_shape)
    except RuntimeError:
        raise ValueError(
            f"lam must be a scalar or broadcastable to the codes of shape "
            f"{code_shape} (per atom, per channel or per coefficient); got shape "
            f"{tuple(tensor.shape)}") from None
    if len(torch.broadcast_shapes(tensor.shape, code_shape)) != len(code_shape):
        raise ValueError(
            f"lam has more dimensions than the codes of shape {code_shape}; got "
            f"shape {tuple(tensor.shape)}")
    if tensor.numel() and float(tensor.detach().min()) < 0:
        if not allow_negative_lam:
            raise ValueError(
                "lam must be >= 0 (the energy's l1 weight); got minimum "
                f"{float(tensor.detach().min()):.6g}. Negative thresholds (positive CNN "
                "biases) are the modified model of docs/theory.md A.4: pass "
                "allow_negative_lam=True with "
                "nonneg=True to opt in")
        if not nonneg:
            raise ValueError(
                "allow_negative_lam=True requires nonneg=True: with signed codes a negative "
                "lam makes the energy unbounded below")
    return tensor


def check_flag(value: Any, name: str) -> bool:
    """``value`` as a bool: ``True``/``False`` or a numpy bool; anything else (``"no"``, 0,
    None) is a ``TypeError``, because its truthiness is not what the caller meant."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be a bool (True or False); got {describe(value)}")


def _check_numpy_dtype(x: Any, dictionary: ConvDictionary | DenseDictionary) -> None:
    """A floating numpy ``x`` must have the dictionary's dtype: converting it silently would
    solve a float64 signal in float32 (or the reverse) without saying so."""
    if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating):
        x_dtype = torch.from_numpy(np.empty(0, dtype=x.dtype)).dtype
        if x_dtype != dictionary.dtype:
            raise TypeError(
                f"x is a numpy array of dtype {x.dtype} but D has dtype {dictionary.dtype}; "
                "expected the same floating dtype (convert one of them, e.g. "
                f"x.astype(np.{str(dictionary.dtype).removeprefix('torch.')}))")


class SparseCodingProblem:
    """One validated problem ``(x, D, lam, nonneg)`` with its precomputed quantities.

    ``nonneg`` must be a bool; a floating numpy ``x`` must have ``D``'s dtype (``TypeError``
    naming both otherwise, as for tensors); lists and integer arrays take ``D``'s dtype.
    """

    def __init__(self, x: Any, D: Any, lam: Any, *, nonneg: bool = False,
                 allow_negative_lam: bool = False) -> None:
        nonneg = check_flag(nonneg, "nonneg")
        allow_negative_lam = check_flag(allow_negative_lam, "allow_negative_lam")
        dictionary = as_dictionary(D, "D")
        dictionary.check_atoms("D")
        _check_numpy_dtype(x, dictionary)
        if isinstance(x, torch.Tensor):
            signal, numpy_input = x, False
            check_same_dtype_device(dictionary.weight, "D", signal, "x")
        else:
            signal, numpy_input = as_tensor(x, "x", dtype=dictionary.dtype,
                                            device=dictionary.device)
        if not signal.is_floating_point():
            raise TypeError(f"x must be a floating tensor; got {describe(signal)}")
        squeeze = isinstance(dictionary, DenseDictionary) and signal.ndim == 1
        if squeeze:
            signal = signal.unsqueeze(0)
        dictionary.check_signal(signal, "x")
        check_finite(signal, "x")
        code_shape = (signal.shape[0], *dictionary.code_shape(signal.shape[1:]))
        lam_tensor = _validated_lam(lam, signal, dictionary, code_shape, bool(nonneg),
                                    allow_negative_lam)
        self._init_fields(signal, dictionary, lam_tensor, nonneg, numpy_input=numpy_input,
                          squeeze=squeeze)

    @classmethod
    def from_validated(cls, x: torch.Tensor, dictionary: ConvDictionary | DenseDictionary,
                       lam: torch.Tensor, nonneg: bool) -> SparseCodingProblem:
        """The problem of signals ``x`` (batch first), ``dictionary`` and ``lam`` (a tensor
        broadcastable to the codes) that the caller has already checked: no validation and
        no scan of the inputs (torch in, torch out)."""
        problem = cls.__new__(cls)
        problem._init_fields(x, dictionary, lam, nonneg)
        return problem

    def rows(self, start: int, stop: int) -> SparseCodingProblem:
        """The problem of signals ``start:stop`` alone (same dictionary, Gram matrix and
        thresholds; rows of a per-signal ``lam``): every signal is an independent problem, so
        a batch may be solved chunk by chunk with the same result."""
        lam = self.lam
        if lam.ndim == len(self.code_shape) and lam.shape[0] == self.code_shape[0] > 1:
            lam = lam[start:stop]
        problem = type(self).__new__(type(self))
        problem._init_fields(self.x[start:stop], self.D, lam, self.nonneg, gram=self._gram)
        return problem

    def with_dtype(self, dtype: torch.dtype) -> SparseCodingProblem:
        """The same problem with ``x``, ``D`` and ``lam`` converted to ``dtype``
        (differentiable conversions; the presentation of results is kept)."""
        problem = type(self).__new__(type(self))
        problem._init_fields(self.x.to(dtype), self.D.astype(dtype), self.lam.to(dtype),
                             self.nonneg, numpy_input=self.numpy_input, squeeze=self.squeeze)
        return problem

    def _init_fields(self, x: torch.Tensor, dictionary: ConvDictionary | DenseDictionary,
                     lam: torch.Tensor, nonneg: bool, *, numpy_input: bool = False,
                     squeeze: bool = False, gram: torch.Tensor | None = None) -> None:
        """Every field of a problem, set here only, so that every constructor (and a subclass
        such as :class:`sparsecnn.nn.functional.LayerProblem`) sets them all."""
        self.x = x
        self.D = dictionary
        self.lam = lam
        self.nonneg = bool(nonneg)
        self.numpy_input = numpy_input  # present results as numpy: the signal was numpy
        self.squeeze = squeeze  # present results without the batch axis: one 1-D signal
        self.signal_shape = tuple(x.shape)
        self.code_shape = (x.shape[0], *dictionary.code_shape(x.shape[1:]))
        self._correlation: torch.Tensor | None = None
        self._gram = gram
        if gram is None and isinstance(dictionary, DenseDictionary) and \
                dictionary.n_atoms <= 2 * dictionary.n_features:
            # a @ G costs m^2 per signal against 2nm for D^T (D a): cheaper when m <= 2n
            self._gram = dictionary.gram()

    @property
    def correlation(self) -> torch.Tensor:
        """``D^T x``, formed on first use: a problem that is only split into chunks
        (:meth:`rows`) never holds it for the whole batch."""
        if self._correlation is None:
            self._correlation = self.D.analysis(self.x)
        return self._correlation

    # -- pieces every algorithm uses ---------------------------------------------------------
    def normal(self, codes: torch.Tensor) -> torch.Tensor:
        """``D^T D a``."""
        if self._gram is not None:
            return codes @ self._gram
        return self.D.normal(codes, self.signal_shape)

    def gradient(self, codes: torch.Tensor) -> torch.Tensor:
        """``D^T (D a - x)``."""
        return self.normal(codes) - self.correlation

    def threshold(self, values: torch.Tensor, scale: float | torch.Tensor = 1.0) -> torch.Tensor:
        """Proximal map of ``scale * (lam-penalty)``: soft threshold or ``relu(v - scale lam)``."""
        theta = self.lam * scale
        if self.nonneg:
            return torch.relu(values - theta)
        return torch.relu(values - theta) - torch.relu(-values - theta)

    def lipschitz(self) -> float:
        return self.D.lipschitz(self.signal_shape[1:])

    def energy(self, codes: torch.Tensor) -> torch.Tensor:
        """Energy per signal (``+inf`` where ``nonneg`` and a code is negative)."""
        residual = self.x - self.D.synthesis(codes, self.signal_shape)
        penalty = self.lam * (codes if self.nonneg else codes.abs())
        values = 0.5 * _reduce_per_sample(residual ** 2) + _reduce_per_sample(
            penalty.expand(codes.shape))
        if self.nonneg:
            infeasible = _reduce_per_sample((codes < 0).to(codes.dtype)) > 0
            values = torch.where(infeasible, torch.full_like(values, float("inf")), values)
        return values

    def optimality_gap(self, codes: torch.Tensor, lipschitz: float | None = None
                       ) -> torch.Tensor:
        """Relative KKT gap per signal: ``||L (a - prox(a - grad/L))||_inf / ||D^T x||_inf``.

        The proximal-gradient residual is zero iff ``a`` minimises the energy; it is scaled by
        ``||D^T x||_inf`` (the smallest ``lam`` with an all-zero solution) to be unit-free.
        """
        L = self.lipschitz() if lipschitz is None else lipschitz
        step = codes - self.threshold(codes - self.gradient(codes) / L, 1.0 / L)
        numerator = (L * step).abs().flatten(1).amax(1)
        scale = self.correlation.abs().flatten(1).amax(1)
        tiny = torch.finfo(codes.dtype).tiny
        return numerator / torch.clamp(scale, min=tiny)

    def as_codes(self, value: Any, name: str) -> torch.Tensor:
        """Validate ``value`` as codes of this problem (dtype, device, shape, finiteness)."""
        tensor = tensor_like(value, name, self.x)
        if self.squeeze and tensor.ndim == 1:
            tensor = tensor.unsqueeze(0)
        if tuple(tensor.shape) != self.code_shape:
            raise ValueError(f"{name} must have the codes' shape {self.code_shape} for this x "
                             f"and D; got shape {tuple(tensor.shape)}")
        check_finite(tensor, name)
        return tensor

    def has_converged(self, change: torch.Tensor, codes: torch.Tensor, lipschitz: float,
                      tol: float, method: str, iteration: int) -> bool:
        """The stopping rule of every iterative method: the worst relative change and, only
        then (it costs a gradient), the worst relative optimality gap are both ``<= tol``.
        Raises :class:`SolverDivergedError` on non-finite iterates."""
        worst_change = float(change.detach().max())
        if not np.isfinite(worst_change):
            check_iterate(codes, method, iteration)
        return worst_change <= tol and float(
            self.optimality_gap(codes.detach(), lipschitz).max()) <= tol

    # -- presenting results ------------------------------------------------------------------
    def output(self, tensor: torch.Tensor) -> Any:
        if self.squeeze and tensor.ndim >= 1 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if self.numpy_input:
            return tensor.detach().cpu().numpy()
        return tensor

    def effective_tol(self, tol: float) -> float:
        """``tol``, floored at a few units of rounding of the working dtype."""
        return max(tol, 4 * torch.finfo(self.x.dtype).eps)


def energy(x: Any, D: Any, codes: Any, lam: Any, *, nonneg: bool = False,
           allow_negative_lam: bool = False) -> Any:
    """Sparse-coding energy per signal, ``1/2 ||x - D a||^2 + sum_i lam_i |a_i|``.

    With ``nonneg=True`` the penalty is ``sum_i lam_i a_i`` and the energy is ``+inf`` for
    codes with a negative entry (the constraint ``a >= 0``).
    """
    problem = SparseCodingProblem(x, D, lam, nonneg=nonneg,
                                  allow_negative_lam=allow_negative_lam)
    return problem.output(problem.energy(problem.as_codes(codes, "codes")))


def optimality_gap(x: Any, D: Any, codes: Any, lam: Any, *, nonneg: bool = False,
                   allow_negative_lam: bool = False) -> Any:
    """Relative optimality (KKT) gap per signal; zero iff ``codes`` minimise the energy."""
    problem = SparseCodingProblem(x, D, lam, nonneg=nonneg,
                                  allow_negative_lam=allow_negative_lam)
    return problem.output(problem.optimality_gap(problem.as_codes(codes, "codes")))


def warn_not_converged(method: str, n_iter: int, gap: torch.Tensor, tol: float) -> None:
    warnings.warn(
        f"{method} did not converge in max_iter={n_iter} iterations: worst relative optimality "
        f"gap {float(gap.max()):.3g} (tol={tol:g}); raise max_iter or tol",
        ConvergenceWarning, stacklevel=4)


def check_iterate(codes: torch.Tensor, method: str, iteration: int) -> None:
    if not bool(torch.isfinite(codes).all()):
        raise SolverDivergedError(
            f"{method} iterates became NaN/Inf at iteration {iteration}: the energy is "
            "unbounded below (negative lam with a rank-deficient D?) or the step is too large")

