"""The optimality gap the homotopy kernel forms from ``G_{:,A}`` is the gap of the codes as
returned: checked against the formula of docs/theory.md A.3 written out here in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsecnn import sparse_code
from sparsecnn.inference.active_set import exact_lipschitz


def reference_gap(codes: torch.Tensor, D: torch.Tensor, correlation: torch.Tensor,
                  lam: torch.Tensor, nonneg: bool) -> torch.Tensor:
    """``||L (a - prox_{lam/L}(a - (G a - c)/L))||_inf / ||c||_inf`` in float64."""
    a, c, D64 = codes.double(), correlation.double(), D.double()
    L = exact_lipschitz(D64)
    moved = a - (a @ (D64.T @ D64) - c) / L
    theta = lam.double() / L
    proximal = torch.relu(moved - theta)
    if not nonneg:
        proximal = proximal - torch.relu(-moved - theta)
    return (L * (a - proximal)).abs().amax(1) / c.abs().amax(1)


@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("per_atom", [False, True])
def test_kernel_gap_is_the_gap_of_the_returned_float32_codes(nonneg: bool,
                                                            per_atom: bool) -> None:
    generator = torch.Generator().manual_seed(3)
    D = torch.randn(16, 40, generator=generator)
    D /= D.norm(dim=0)
    x = torch.randn(300, 16, generator=generator)
    lam = 0.05 + 0.2 * torch.rand(40, generator=generator) if per_atom else torch.tensor(0.1)
    result = sparse_code(x, D, lam, method="homotopy", nonneg=nonneg)
    # the kernel reads the float32 correlation D^T x of the problem; so does the reference
    expected = reference_gap(result.codes, D, x @ D, lam, nonneg)
    got = result.optimality_gap.double()
    # float32 codes are the float64 optimum rounded: gaps of ~1e-8..1e-6, agreeing to the
    # rounding of the float32 gap itself
    assert float(expected.max()) > 1e-9
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-12)
    # signals whose minimiser is 0 (|D^T x| <= lam everywhere) have gap exactly 0
    zero = (result.codes == 0).all(1)
    assert torch.equal(got[zero], torch.zeros_like(got[zero]))
