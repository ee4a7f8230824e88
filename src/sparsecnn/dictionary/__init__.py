"""Dictionaries as linear operators that carry their adjoint (docs/theory.md A.1, A.5).

A dictionary ``D`` maps codes ``a`` to signals ``D a`` (synthesis) and signals ``x`` to
correlations ``D^T x`` (analysis).  Atoms are the columns ``d_i`` of ``D``; the library's
convention is unit-norm atoms (docs/theory.md convention 4), which :meth:`Dictionary.normalized`
produces.

* :class:`DenseDictionary` holds an explicit matrix ``(n_features, n_atoms)``.
* :class:`ConvDictionary` holds a filter bank shaped like ``nn.Conv2d.weight``
  ``(n_filters, in_channels, kh, kw)``; its atoms are every filter at every stride-``s``
  position.  Analysis is ``conv2d`` (a strided cross-correlation) and synthesis is
  ``conv_transpose2d`` with the same weight, stride and padding (``output_padding`` restores
  the signal size when ``stride > 1``), so the two are exact adjoints (convention 7).

Both provide the Lipschitz constant ``L = ||D||_2^2`` of the data-term gradient by power
iteration (cached until the weights change), the mutual coherence and the orthogonality gap
``||D^T D - I||_F``.
"""


from __future__ import annotations

from typing import Any

import torch

from .._checks import as_tensor, describe
from .base import Dictionary
from .convolutional import LIPSCHITZ_BLOCK_BYTES, ConvDictionary, fourier_lipschitz_bound
from .dense import DenseDictionary
from .spectral import POWER_ITERATION_LIMIT, power_iteration

__all__ = ["LIPSCHITZ_BLOCK_BYTES", "POWER_ITERATION_LIMIT", "ConvDictionary", "DenseDictionary",
           "Dictionary", "as_dictionary", "fourier_lipschitz_bound", "power_iteration"]


def as_dictionary(D: Any, name: str = "D") -> Dictionary:
    """Accept a :class:`Dictionary` or a 2-D matrix (wrapped as :class:`DenseDictionary`)."""
    if isinstance(D, Dictionary):
        return D
    if isinstance(D, (torch.Tensor,)) or hasattr(D, "__array__"):
        tensor, _ = as_tensor(D, name)
        if tensor.ndim != 2:
            raise ValueError(
                f"{name} must be a Dictionary or a 2-D matrix (n_features, n_atoms); got "
                f"{describe(tensor)} (wrap a 4-D filter bank in ConvDictionary)")
        return DenseDictionary(tensor)
    raise TypeError(f"{name} must be a Dictionary or a 2-D matrix; got {type(D).__name__}")
