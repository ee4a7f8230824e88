"""Orthogonal dictionary learning: the Procrustes step gives an exactly orthogonal dictionary,
equals SciPy's orthogonal Procrustes solution, and alternating it with the exact one-shot codes
never increases the energy (docs/theory.md A.2-A.3)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given
from hypothesis import strategies as st

from sparsecnn import sparse_code
from sparsecnn.dictlearn import learn_orthogonal_dictionary, procrustes


@given(seed=st.integers(0, 10_000), n=st.integers(2, 12))
def test_procrustes_is_orthogonal_and_matches_scipy(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    signals = rng.standard_normal((50, n))
    codes = rng.standard_normal((50, n))
    dictionary = procrustes(torch.from_numpy(signals), torch.from_numpy(codes)).numpy()
    np.testing.assert_allclose(dictionary.T @ dictionary, np.eye(n), atol=1e-12)
    # SciPy: R = argmin ||codes R - signals||_F over orthogonal R; our D^T = R
    rotation, _ = scipy.linalg.orthogonal_procrustes(codes, signals)
    np.testing.assert_allclose(dictionary.T, rotation, atol=1e-10)


@pytest.mark.parametrize("nonneg", [False, True])
def test_alternation_decreases_energy_and_codes_are_exact(nonneg: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    truth, _ = torch.linalg.qr(torch.randn(16, 16, generator=generator, dtype=torch.float64))
    mask = torch.rand(400, 16, generator=generator, dtype=torch.float64) < 0.2
    magnitudes = torch.rand(400, 16, generator=generator, dtype=torch.float64) + 0.5
    signs = torch.ones_like(magnitudes) if nonneg else torch.sign(
        torch.randn(400, 16, generator=generator, dtype=torch.float64))
    signals = (mask * magnitudes * signs) @ truth.T + 0.01 * torch.randn(
        400, 16, generator=generator, dtype=torch.float64)
    result = learn_orthogonal_dictionary(signals, 0.1, nonneg=nonneg, n_iter=200, seed=1)
    identity = torch.eye(16, dtype=torch.float64)
    gap = torch.linalg.matrix_norm(result.dictionary.T @ result.dictionary - identity)
    assert float(gap) <= 1e-12
    history = np.asarray(result.energy_history)
    assert np.all(np.diff(history) <= 1e-9 * history[0])
    # the planted dictionary's energy, with its exact (thresholded) codes, computed here
    x, d = signals.numpy(), truth.numpy()
    z = x @ d
    codes = np.maximum(z - 0.1, 0) if nonneg else np.sign(z) * np.maximum(np.abs(z) - 0.1, 0)
    planted = 0.5 * np.sum((x - codes @ d.T) ** 2) + 0.1 * np.abs(codes).sum()
    assert history[-1] <= planted * (1 + 1e-9)
    # with D orthogonal the one-shot threshold is the exact minimiser (FISTA agrees)
    reference = sparse_code(signals, result.dictionary, 0.1, method="fista", nonneg=nonneg,
                            max_iter=5000, tol=1e-12).codes
    torch.testing.assert_close(result.codes, reference, atol=1e-8, rtol=0)
    # the planted atoms are recovered up to sign and order
    overlap = (result.dictionary.T @ truth).abs().max(0).values
    assert float(overlap.min()) >= 0.95


def test_procrustes_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"signals and codes must be 2-D with the same shape "
                                         r"\(n_signals, n\).*got \(5, 3\) and \(5, 4\)"):
        procrustes(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"init must be square \(3, 3\); got \(3, 2\)"):
        learn_orthogonal_dictionary(np.ones((5, 3)), 0.1, init=np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"lam must be a finite number >= 0; got -1"):
        learn_orthogonal_dictionary(np.ones((5, 3)), -1)
