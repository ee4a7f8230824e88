"""The dictionary contract: a linear synthesis operator with its adjoint (docs/theory.md A.1)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from .._checks import check_finite, check_nonzero_norms
from .spectral import power_iteration


class Dictionary(ABC):
    """A linear synthesis operator ``D`` with its adjoint ``D^T``.

    Subclasses implement :meth:`analysis` (``D^T x``), :meth:`synthesis` (``D a``),
    :meth:`code_shape`, :meth:`atom_norms` and :meth:`normalized`.
    """

    def __init__(self) -> None:
        self._lipschitz_cache: dict[tuple, float] = {}

    # -- the operator -------------------------------------------------------------------
    @property
    @abstractmethod
    def weight(self) -> torch.Tensor:
        """The tensor that defines the dictionary (matrix or filter bank)."""

    @property
    def dtype(self) -> torch.dtype:
        return self.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.weight.device

    @abstractmethod
    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        """``D^T x``: correlations of the signal with every atom."""

    @abstractmethod
    def synthesis(self, codes: torch.Tensor, signal_shape: Sequence[int] | None = None
                  ) -> torch.Tensor:
        """``D a``: the signal the codes represent."""

    @abstractmethod
    def code_shape(self, signal_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of the codes of one signal of shape ``signal_shape`` (no batch dimension)."""

    @abstractmethod
    def check_signal(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise a clear error if ``x`` (batch first) does not fit the dictionary."""

    @abstractmethod
    def atom_norms(self) -> torch.Tensor:
        """Euclidean norm of every filter/atom (per filter for convolutional dictionaries)."""

    @abstractmethod
    def normalized(self) -> Dictionary:
        """A copy with unit-norm atoms (raises ``ValueError`` on a zero-norm atom)."""

    @abstractmethod
    def coherence(self) -> float:
        """Mutual coherence ``max_{i != j} |<d_i, d_j>| / (||d_i|| ||d_j||)``."""

    @abstractmethod
    def orthogonality_gap(self, signal_shape: Sequence[int] | None = None) -> float:
        """``||D^T D - I||_F``: zero iff the atoms are orthonormal."""

    @abstractmethod
    def _default_signal_shape(self) -> tuple[int, ...]:
        """Signal shape (no batch) used when none is given."""

    def normal(self, codes: torch.Tensor, signal_shape: Sequence[int] | None = None
               ) -> torch.Tensor:
        """``D^T D a``."""
        return self.analysis(self.synthesis(codes, signal_shape))

    def check_atoms(self, name: str = "D") -> None:
        """Raise ``ValueError`` on NaN/Inf weights or a zero-norm atom."""
        check_finite(self.weight, name)
        check_nonzero_norms(self.atom_norms(), lambda count, indices: (
            f"{name} has {count} zero-norm atom(s) (indices {indices}); every atom must have a "
            "non-zero norm"))

    # -- derived quantities ---------------------------------------------------------------
    def _cache_key(self, signal_shape: tuple[int, ...]) -> tuple:
        w = self.weight
        return (w.data_ptr(), w._version, tuple(w.shape), w.dtype, signal_shape)

    def lipschitz(self, signal_shape: Sequence[int] | None = None) -> float:
        """``L = ||D||_2^2``, the Lipschitz constant of ``a -> D^T (D a - x)``.

        Power iteration on ``D^T D`` in float64, cached until the weights change in place or
        are replaced.  For a convolutional dictionary the value depends on the signal size
        (boundary atoms are cropped), so ``signal_shape`` selects it.
        """
        shape = tuple(signal_shape) if signal_shape is not None else self._default_signal_shape()
        key = self._cache_key(shape)
        if key not in self._lipschitz_cache:
            operator = self._float64()
            code_shape = (1, *operator.code_shape(shape))
            self._lipschitz_cache[key] = power_iteration(
                lambda a: operator.normal(a, (1, *shape)), code_shape,
                dtype=torch.float64, device=self.device)
        return self._lipschitz_cache[key]

    @abstractmethod
    def _float64(self) -> Dictionary:
        """A detached float64 copy (for accurate norms)."""

    @abstractmethod
    def astype(self, dtype: torch.dtype) -> Dictionary:
        """The same dictionary with its weight converted to ``dtype`` (differentiable)."""

    def adjointness_test(self, signal_shape: Sequence[int] | None = None, seed: int = 0) -> float:
        """Relative error ``|<D^T x, a> - <x, D a>| / (||D^T x|| ||a||)`` on random ``x``, ``a``.

        Rounding-level for an exact adjoint pair.
        """
        shape = tuple(signal_shape) if signal_shape is not None else self._default_signal_shape()
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn((1, *shape), generator=generator, dtype=torch.float64)
        a = torch.randn((1, *self.code_shape(shape)), generator=generator, dtype=torch.float64)
        x = x.to(device=self.device, dtype=self.dtype)
        a = a.to(device=self.device, dtype=self.dtype)
        with torch.no_grad():
            analysis = self.analysis(x)
            synthesis = self.synthesis(a, x.shape)
            lhs = torch.sum(analysis * a)
            rhs = torch.sum(x * synthesis)
            scale = torch.linalg.vector_norm(analysis) * torch.linalg.vector_norm(a)
        return float(torch.abs(lhs - rhs) / scale)
