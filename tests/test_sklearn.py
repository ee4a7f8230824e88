"""The scikit-learn wrapper passes check_estimator and matches SparseCoder."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import SparseCoder
from sklearn.utils.estimator_checks import check_estimator

from sparsecnn.sklearn import SparseEncoder


@pytest.mark.parametrize("method", ["fista", "homotopy"])
def test_check_estimator(method: str) -> None:
    check_estimator(SparseEncoder(method=method))


@pytest.mark.parametrize("method", ["fista", "homotopy"])
@pytest.mark.parametrize("nonneg", [False, True])
def test_matches_sklearn_sparse_coder(nonneg: bool, method: str) -> None:
    """SparseCoder's lasso_cd with transform_alpha = lam minimises the same energy."""
    rng = np.random.default_rng(0)
    atoms = rng.standard_normal((30, 12))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    X = rng.standard_normal((5, 12))
    ours = SparseEncoder(atoms, lam=0.3, method=method, nonneg=nonneg, max_iter=100_000,
                         tol=1e-12)
    codes = ours.fit_transform(X)
    reference = SparseCoder(atoms, transform_algorithm="lasso_cd", transform_alpha=0.3,
                            positive_code=nonneg, transform_max_iter=100_000).transform(X)
    np.testing.assert_allclose(codes, reference, atol=1e-5)


def test_default_basis_gives_closed_form() -> None:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 6))
    encoder = SparseEncoder(lam=0.2, nonneg=True, tol=1e-12, max_iter=10_000).fit(X)
    expected = np.maximum(X @ encoder.components_.T - 0.2, 0)
    np.testing.assert_allclose(encoder.transform(X), expected, atol=1e-8)


def test_dictionary_shape_is_checked() -> None:
    with pytest.raises(ValueError, match=r"dictionary must have shape \(n_atoms, 4\) to match "
                                         r"X's n_features=4; got shape \(3, 5\)"):
        SparseEncoder(np.ones((3, 5))).fit(np.ones((2, 4)))
