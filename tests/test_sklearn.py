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


def test_default_basis_is_thin_and_orthonormal() -> None:
    """5 signals of 3000 features: the basis is 5 x 3000 (a full SVD would be 3000 x 3000),
    its rows orthonormal, so the codes are still the closed-form threshold."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((5, 3000))
    encoder = SparseEncoder(lam=0.2, method="closed_form").fit(X)
    assert encoder.components_.shape == (5, 3000)
    np.testing.assert_allclose(encoder.components_ @ encoder.components_.T, np.eye(5),
                               atol=1e-12)
    expected = np.sign(X @ encoder.components_.T) * np.maximum(
        np.abs(X @ encoder.components_.T) - 0.2, 0)
    np.testing.assert_allclose(encoder.transform(X), expected, atol=1e-10)


def test_feature_names_and_set_output() -> None:
    import pandas
    rng = np.random.default_rng(3)
    X = rng.standard_normal((8, 4))
    atoms = np.eye(3, 4)
    encoder = SparseEncoder(atoms, lam=0.1, method="closed_form").fit(X)
    names = encoder.get_feature_names_out()
    assert names.tolist() == ["sparseencoder0", "sparseencoder1", "sparseencoder2"]
    frame = encoder.set_output(transform="pandas").transform(X)
    assert isinstance(frame, pandas.DataFrame) and frame.columns.tolist() == names.tolist()


def test_sparse_dictionary_is_refused_clearly() -> None:
    import scipy.sparse as scipy_sparse
    with pytest.raises(TypeError, match=r"dictionary must be a dense array .* got a scipy "
                                        r"sparse csr_matrix \(convert it with \.toarray\(\)\)"):
        SparseEncoder(scipy_sparse.csr_matrix(np.eye(3))).fit(np.ones((2, 3)))
