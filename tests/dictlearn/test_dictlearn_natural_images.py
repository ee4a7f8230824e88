"""docs/theory.md check 25 (Olshausen & Field 1996, C7): on whitened natural 8x8 patches, 64 learned
atoms are oriented and localised, their codes have median excess kurtosis >= 5x that of the PCA
coefficients, and >= 80 % of the coefficients are zero."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from sparsecnn.dictlearn import (
    atom_localization,
    atom_orientation_coherence,
    excess_kurtosis,
    pca_basis,
    zero_fraction,
)
from sparsecnn.studies.paper1_dictlearn import QUICK, measure_natural_image_dictionary


@pytest.fixture(scope="module")
def measured() -> dict:
    return measure_natural_image_dictionary(0, QUICK)


def test_codes_are_heavy_tailed_and_sparse(measured: dict) -> None:
    assert measured["sparse_kurtosis_median"] >= 5 * measured["pca_kurtosis_median"]
    assert measured["zero_fraction"] >= 0.8
    assert measured["energy_last_batch"] < measured["energy_first_batch"]


def test_atoms_are_oriented_and_localised(measured: dict) -> None:
    # random unit atoms are the reference: a Gaussian field has no preferred orientation
    rng = np.random.default_rng(1)
    random_atoms = rng.standard_normal((64, 4096))
    random_atoms /= np.linalg.norm(random_atoms, axis=0)
    random_orientation = np.median(atom_orientation_coherence(random_atoms, (8, 8)))
    random_localization = np.median(atom_localization(random_atoms, (8, 8)))
    assert measured["orientation_learned"] >= random_orientation + 0.2
    assert measured["orientation_learned"] > measured["orientation_pca"]
    assert measured["localization_learned"] >= 1.2 * random_localization
    assert measured["localization_learned"] > measured["localization_pca"]
    dictionary = measured["dictionary"]
    np.testing.assert_allclose(torch.linalg.vector_norm(dictionary, dim=0).numpy(), 1.0,
                               atol=1e-12)


def test_statistics_against_closed_forms_and_scipy() -> None:
    rng = np.random.default_rng(0)
    values = rng.laplace(size=(5000, 3))
    np.testing.assert_allclose(excess_kurtosis(values).numpy(),
                               scipy.stats.kurtosis(values, axis=0, fisher=True), rtol=1e-10)
    assert zero_fraction(np.array([[0.0, 1.0], [0.0, 0.0]])) == 0.75
    # a vertical grating is perfectly oriented; an 2x2 impulse block is fully localised
    grating = np.tile(np.sin(np.arange(8) * 1.3), (8, 1)).reshape(64, 1)
    assert atom_orientation_coherence(grating, (8, 8))[0] == pytest.approx(1.0)
    block = np.zeros((8, 8))
    block[2:4, 5:7] = 1.0
    assert atom_localization(block.reshape(64, 1), (8, 8), window=2)[0] == pytest.approx(1.0)
    uniform = np.ones((64, 1))
    assert atom_localization(uniform, (8, 8), window=4)[0] == pytest.approx(16 / 64)
    # PCA basis: orthonormal, and its coefficients are decorrelated with decreasing variance
    data = rng.standard_normal((2000, 5)) @ rng.standard_normal((5, 5))
    basis = pca_basis(data).numpy()
    np.testing.assert_allclose(basis.T @ basis, np.eye(5), atol=1e-12)
    variances = np.var((data - data.mean(0)) @ basis, axis=0)
    assert np.all(np.diff(variances) <= 0)
    np.testing.assert_allclose(np.sort(variances)[::-1],
                               np.sort(np.linalg.eigvalsh(np.cov(data.T, bias=True)))[::-1],
                               rtol=1e-10)


def test_constant_code_column_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"codes has 1 constant column\(s\) \(e.g. index 1\)"):
        excess_kurtosis(np.array([[1.0, 0.0], [2.0, 0.0], [4.0, 0.0]]))
