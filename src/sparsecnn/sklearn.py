"""scikit-learn estimator that encodes data with a given dictionary.

``SparseEncoder`` solves, for every row ``x`` of ``X``,

    min_a 1/2 ||x - D a||^2 + lam ||a||_1      (a >= 0 when nonneg=True)

with :func:`sparsecnn.sparse_code`.  ``lam`` is the library's threshold with no hidden
rescaling (unlike ``sklearn.linear_model.Lasso``, whose ``alpha`` is ``lam / n_features``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from .inference import METHODS, ConvergenceWarning, sparse_code

__all__ = ["SparseEncoder"]


class SparseEncoder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Sparse codes of the rows of ``X`` under a dictionary.

    Parameters
    ----------
    dictionary : array of shape (n_atoms, n_features) or None
        Atoms as rows (scikit-learn's ``components_`` convention); a dense array (a
        scipy-sparse matrix is refused: convert it with ``.toarray()``).  ``None``: ``fit``
        uses the ``min(n_samples, n_features)`` right singular vectors of ``X`` (a thin SVD,
        so memory is ``O(n_samples n_features)``).  They are orthonormal (``D^T D = I``), so
        the codes are the closed-form threshold of docs/theory.md A.2/A.3.
    lam : float, default=0.1
        Threshold ``lam >= 0`` of the energy (no rescaling by ``n_features``).
    method : {"closed_form", "ista", "fista", "lca", "homotopy"}, default="fista"
    nonneg : bool, default=False
        Non-negative codes (the ReLU model).
    max_iter : int, default=1000
    tol : float, default=1e-6
        Stopping tolerance of :func:`sparsecnn.sparse_code` (relative change and optimality gap).

    Attributes
    ----------
    components_ : ndarray of shape (n_atoms, n_features), the unit-norm-or-given atoms.
    n_features_in_ : int
    n_iter_ : int, iterations of the last ``transform``.

    The output columns are named ``sparseencoder0``, ``sparseencoder1``, ...
    (``get_feature_names_out``), and ``set_output(transform="pandas")`` works as for any
    scikit-learn transformer.
    """

    def __init__(self, dictionary: Any = None, lam: float = 0.1, method: str = "fista",
                 nonneg: bool = False, max_iter: int = 1000, tol: float = 1e-6) -> None:
        self.dictionary = dictionary
        self.lam = lam
        self.method = method
        self.nonneg = nonneg
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X: Any, y: Any = None) -> SparseEncoder:
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {self.method!r}")
        if scipy.sparse.issparse(self.dictionary):
            raise TypeError("dictionary must be a dense array of shape (n_atoms, n_features); "
                            f"got a scipy sparse {type(self.dictionary).__name__} (convert it "
                            "with .toarray())")
        if self.dictionary is None:
            # thin: a full SVD would hold an n_features x n_features basis (6.7 GiB at 30000)
            _, _, vt = np.linalg.svd(X, full_matrices=False)
            components = vt
        else:
            components = np.asarray(self.dictionary, dtype=np.float64)
            if components.ndim != 2 or components.shape[1] != X.shape[1]:
                raise ValueError(
                    f"dictionary must have shape (n_atoms, {X.shape[1]}) to match X's "
                    f"n_features={X.shape[1]}; got shape {components.shape}")
        self.components_ = np.ascontiguousarray(components, dtype=np.float64)
        self._n_features_out = self.components_.shape[0]
        # Encoding the training data once records n_iter_ (as sklearn's DictionaryLearning).
        self._encode(X)
        return self

    def _encode(self, X: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            result = sparse_code(np.array(X, dtype=np.float64), self.components_.T, self.lam,
                                 method=self.method, nonneg=self.nonneg,
                                 max_iter=self.max_iter, tol=self.tol)
        for warning in caught:
            warnings.warn(warning.message, warning.category, stacklevel=3)
        self.n_iter_ = result.n_iter
        return result.codes.astype(X.dtype, copy=False)

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return self._encode(X)
