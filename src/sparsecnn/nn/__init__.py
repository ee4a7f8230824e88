"""Torch modules that read a CNN as hierarchical sparse coding (docs/theory.md A.4-A.8).

* :class:`SparseConv2d`, :class:`SparseLinear`: ``ReLU(W x + b)`` (``n_iter=0``) or k steps of
  ISTA/FISTA/LCA on the layer's non-negative sparse-coding energy, with the same weights.
* :class:`HierarchicalSparseCoding`, :class:`SparseCodingClassifier`: stacked layers (layered
  thresholding, layered k-step inference or joint multi-layer ISTA/FISTA) and a
  logistic-regression head.
* :func:`from_cnn`, :func:`to_cnn`: convert a plain CNN and back.
"""

from .convert import AbsorbedReLU, UnmappedLayerWarning, from_cnn, to_cnn
from .functional import sparse_conv2d, sparse_linear
from .hierarchical import HierarchicalSparseCoding, SparseCodingClassifier
from .layers import SparseConv2d, SparseLinear
from .parametrizations import project_priors

__all__ = [
    "AbsorbedReLU",
    "HierarchicalSparseCoding",
    "SparseCodingClassifier",
    "SparseConv2d",
    "SparseLinear",
    "UnmappedLayerWarning",
    "from_cnn",
    "project_priors",
    "sparse_conv2d",
    "sparse_linear",
    "to_cnn",
]
