"""The locally competitive algorithm (inference/lca.py): docs/theory.md Part D check 12."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import sklearn_lasso_codes

import sparsecnn as sc


@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("dictionary", ["orthonormal_dictionary", "overcomplete_dictionary"])
def test_check12_lca_steady_state_is_lasso(request, dictionary, signals, nonneg) -> None:
    """Check 12: explicit Euler, dt/tau = 0.05, 40,000 steps: the LCA state is the LASSO
    minimiser to 1e-6."""
    D = request.getfixturevalue(dictionary)
    theta = 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sc.ConvergenceWarning)
        codes = sc.sparse_code(signals, D, theta, method="lca", nonneg=nonneg, step_size=0.05,
                               max_iter=40_000, tol=1e-15).codes
    reference = sklearn_lasso_codes(signals.numpy(), D.numpy(), theta, nonneg)
    assert np.max(np.abs(codes.numpy() - reference)) <= 1e-6
