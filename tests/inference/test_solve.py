"""``sparse_code`` (inference/solve.py) for every method against closed forms, scikit-learn
and docs/theory.md Part D checks 1-3 and 6-8; dtypes, autograd, warnings, numpy in/out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import draw_dense_problem, haar_filters, sklearn_lasso_codes, small_dense_problems
from hypothesis import given
from hypothesis import strategies as st

import sparsecnn as sc

ITERATIVE = ("ista", "fista", "lca")
TIGHT = {"max_iter": 200_000, "tol": 1e-12}


@pytest.mark.parametrize("sigma2", [0.3, 1.0, 2.5])
@pytest.mark.parametrize("prior_rate", [0.0, 0.4, 1.3])
def test_check1_orthonormal_soft_threshold(orthonormal_dictionary, signals, sigma2,
                                           prior_rate) -> None:
    """Check 1: S_{sigma^2 lam}(D^T x) is the signed MAP code (1e-6), also by sklearn Lasso."""
    D, x = orthonormal_dictionary, signals
    theta = sigma2 * prior_rate
    closed = sc.soft_threshold(x @ D, theta)
    solved = sc.sparse_code(x, D, theta, method="fista", **TIGHT).codes
    assert torch.max(torch.abs(closed - solved)) <= 1e-6
    reference = sklearn_lasso_codes(x.numpy(), D.numpy(), theta, False)
    assert np.max(np.abs(closed.numpy() - reference)) <= 1e-6
    result = sc.sparse_code(x, D, theta, method="closed_form")
    assert torch.equal(result.codes, closed)
    assert result.converged and result.orthogonality_gap <= 1e-12


@pytest.mark.parametrize("theta", [0.0, 0.5, 1.2])
def test_check2_orthonormal_relu(orthonormal_dictionary, signals, theta) -> None:
    """Check 2: ReLU(D^T x - sigma^2 lam) is the non-negative MAP code (1e-6), also by Lasso
    with positive=True."""
    D, x = orthonormal_dictionary, signals
    closed = torch.relu(x @ D - theta)
    for method in ITERATIVE:
        solved = sc.sparse_code(x, D, theta, method=method, nonneg=True, **TIGHT).codes
        assert torch.max(torch.abs(closed - solved)) <= 1e-6, method
    reference = sklearn_lasso_codes(x.numpy(), D.numpy(), theta, True)
    assert np.max(np.abs(closed.numpy() - reference)) <= 1e-6


def test_check3_per_coefficient_mixed_sign_priors(orthonormal_dictionary, signals,
                                                  generator) -> None:
    """Check 3: with lam_i in [-1, 2] and b = -sigma^2 lam, ReLU(D^T x + b) minimises the
    modified energy over a >= 0 (1e-6); no random feasible perturbation does better."""
    D, x = orthonormal_dictionary, signals
    sigma2 = 0.7
    lam = torch.rand(64, generator=generator, dtype=torch.float64) * 3 - 1
    bias = -sigma2 * lam
    closed = torch.relu(x @ D + bias)
    theta = sigma2 * lam
    solved = sc.sparse_code(x, D, theta, method="fista", nonneg=True, allow_negative_lam=True,
                            **TIGHT)
    assert torch.max(torch.abs(closed - solved.codes)) <= 1e-6
    base = sc.energy(x, D, closed, theta, nonneg=True, allow_negative_lam=True)
    for _ in range(200):
        step = torch.randn(closed.shape, generator=generator, dtype=torch.float64) * 0.1
        perturbed = torch.relu(closed + step)
        other = sc.energy(x, D, perturbed, theta, nonneg=True, allow_negative_lam=True)
        assert torch.all(other >= base - 1e-12)


def test_check6_nonneg_on_doubled_dictionary(orthonormal_dictionary, signals) -> None:
    """Check 6: non-negative coding on [D, -D] gives a+ - a- = S_theta(D^T x) (1e-6) with
    a+ * a- = 0 (1e-8)."""
    D, x, theta = orthonormal_dictionary, signals, 0.6
    doubled = torch.cat([D, -D], dim=1)
    codes = sc.sparse_code(x, doubled, theta, method="fista", nonneg=True, **TIGHT).codes
    positive, negative = codes[:, :64], codes[:, 64:]
    assert torch.max(torch.abs(positive - negative - sc.soft_threshold(x @ D, theta))) <= 1e-6
    assert torch.max(torch.abs(positive * negative)) <= 1e-8


def test_check7_haar_stride2_exact_and_stride1_counterexample(generator) -> None:
    """Check 7: Haar stride 2: ReLU(D^T x - theta) is the non-negative sparse code (1e-8);
    stride 1: the one-shot ReLU differs from the minimiser by more than 0.1 in l2."""
    x = torch.randn(4, 1, 8, 8, generator=generator, dtype=torch.float64)
    theta = 0.3
    exact = sc.ConvDictionary(haar_filters(), stride=2)
    one_shot = torch.relu(exact.analysis(x) - theta)
    codes = sc.sparse_code(x, exact, theta, method="fista", nonneg=True, **TIGHT).codes
    assert torch.max(torch.abs(one_shot - codes)) <= 1e-8
    redundant = sc.ConvDictionary(haar_filters(), stride=1)
    one_shot = torch.relu(redundant.analysis(x) - theta)
    result = sc.sparse_code(x, redundant, theta, method="fista", nonneg=True, **TIGHT)
    assert result.converged
    distances = torch.linalg.vector_norm((one_shot - result.codes).flatten(1), dim=1)
    assert torch.all(distances > 0.1)


def test_check8_cnn_forward_is_layered_thresholding(generator) -> None:
    """Check 8: a 2-layer conv+bias+ReLU forward pass equals layered thresholding with explicit
    matrices; with orthonormal D_l each layer minimises its non-negative energy (1e-8)."""
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=generator, dtype=torch.float64))
    weights = [haar_filters(), q.T.reshape(16, 4, 2, 2).contiguous()]
    biases = [-torch.rand(4, generator=generator, dtype=torch.float64) * 0.3,
              -torch.rand(16, generator=generator, dtype=torch.float64) * 0.3]
    x = torch.randn(3, 1, 8, 8, generator=generator, dtype=torch.float64)
    layer = x
    for weight, bias in zip(weights, biases, strict=True):
        D = sc.ConvDictionary(weight, stride=2)
        assert D.orthogonality_gap(layer.shape[1:]) <= 1e-12
        forward = torch.relu(F.conv2d(layer, weight, bias, stride=2))
        matrix = D.to_matrix(layer.shape[1:])
        code_shape = D.code_shape(layer.shape[1:])
        lam = (-bias).view(-1, 1, 1).expand(code_shape).reshape(-1)
        explicit = torch.relu(layer.flatten(1) @ matrix - lam).view(-1, *code_shape)
        assert torch.max(torch.abs(forward - explicit)) <= 1e-12
        minimiser = sc.sparse_code(layer, D, -bias, method="fista", nonneg=True, **TIGHT).codes
        assert torch.max(torch.abs(forward - minimiser)) <= 1e-8
        layer = forward


@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("method", ITERATIVE)
def test_overcomplete_agrees_with_sklearn_lasso(overcomplete_dictionary, signals, method,
                                                nonneg) -> None:
    D, x, lam = overcomplete_dictionary, signals[:3], 0.25
    codes = sc.sparse_code(x, D, lam, method=method, nonneg=nonneg, **TIGHT).codes
    reference = sklearn_lasso_codes(x.numpy(), D.numpy(), lam, nonneg)
    assert np.max(np.abs(codes.numpy() - reference)) <= 1e-6


def test_per_atom_and_per_coefficient_lambda(overcomplete_dictionary, signals,
                                             generator) -> None:
    """A per-atom lam equals sklearn on the rescaled problem; a per-coefficient lam equal to
    the per-atom one broadcast over the batch gives the same codes."""
    D, x = overcomplete_dictionary, signals[:2]
    lam = torch.rand(128, generator=generator, dtype=torch.float64) * 0.5 + 0.05
    codes = sc.sparse_code(x, D, lam, **TIGHT).codes
    # substitute a_i = c_i / lam_i: atoms d_i / lam_i with unit penalty
    rescaled = sklearn_lasso_codes(x.numpy(), (D / lam).numpy(), 1.0, False) / lam.numpy()
    assert np.max(np.abs(codes.numpy() - rescaled)) <= 1e-6
    full = sc.sparse_code(x, D, lam.expand(2, 128).clone(), **TIGHT).codes
    assert torch.max(torch.abs(full - codes)) <= 1e-9


@pytest.mark.parametrize("method", ("closed_form", *ITERATIVE, "homotopy"))
def test_float32_agrees_with_float64(overcomplete_dictionary, signals, method) -> None:
    D, x = overcomplete_dictionary, signals
    r64 = sc.sparse_code(x, D, 0.3, method=method, nonneg=True, max_iter=20000, tol=1e-9)
    r32 = sc.sparse_code(x.float(), D.float(), 0.3, method=method, nonneg=True,
                         max_iter=20000, tol=1e-6)
    assert r32.codes.dtype == torch.float32 and r32.energy.dtype == torch.float32
    assert torch.max(torch.abs(r32.codes.double() - r64.codes)) <= 2e-4
    assert torch.allclose(r32.energy.double(), r64.energy, rtol=1e-5)


def test_conv_float32_agrees_with_float64(generator) -> None:
    weight = torch.randn(4, 1, 3, 3, generator=generator, dtype=torch.float64)
    D64 = sc.ConvDictionary(weight, padding=1).normalized()
    D32 = sc.ConvDictionary(weight.float(), padding=1).normalized()
    x = torch.randn(2, 1, 10, 10, generator=generator, dtype=torch.float64)
    c64 = sc.sparse_code(x, D64, 0.4, max_iter=20000, tol=1e-10).codes
    c32 = sc.sparse_code(x.float(), D32, 0.4, max_iter=20000, tol=1e-6).codes
    assert torch.max(torch.abs(c32.double() - c64)) <= 5e-4


@pytest.mark.parametrize("method", ITERATIVE)
@pytest.mark.parametrize("nonneg", [False, True])
def test_gradcheck_through_iterations(generator, method, nonneg) -> None:
    """Autograd through a few iterations matches finite differences (x, D and lam)."""
    D = torch.randn(6, 9, generator=generator, dtype=torch.float64)
    D = (D / torch.linalg.vector_norm(D, dim=0)).requires_grad_()
    x = torch.randn(2, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    lam = torch.full((9,), 0.2, dtype=torch.float64, requires_grad=True)
    step = 0.9 / float(torch.linalg.matrix_norm(D.detach(), ord=2)) ** 2

    def codes(x_, D_, lam_):
        return sc.sparse_code(x_, D_, lam_, method=method, nonneg=nonneg, max_iter=4,
                              tol=1e-15, step_size=step, warn=False).codes

    assert torch.autograd.gradcheck(codes, (x, D, lam), eps=1e-7, atol=1e-6)


def test_gradcheck_conv(generator) -> None:
    weight = torch.randn(3, 1, 2, 2, generator=generator, dtype=torch.float64,
                         requires_grad=True)
    x = torch.randn(1, 1, 5, 5, generator=generator, dtype=torch.float64, requires_grad=True)

    def codes(x_, w_):
        D = sc.ConvDictionary(w_, stride=2, padding=1)
        return sc.sparse_code(x_, D, 0.1, method="fista", nonneg=True, max_iter=3,
                              tol=1e-15, step_size=0.1, warn=False).codes

    assert torch.autograd.gradcheck(codes, (x, weight), eps=1e-7, atol=1e-6)


def test_non_convergence_warns_and_reports(overcomplete_dictionary, signals) -> None:
    with pytest.warns(sc.ConvergenceWarning, match=r"ista did not converge in max_iter=3"):
        result = sc.sparse_code(signals, overcomplete_dictionary, 0.1, method="ista",
                                max_iter=3)
    assert result.converged is False and result.n_iter == 3
    assert torch.all(result.optimality_gap > 1e-6)


def test_closed_form_on_non_orthogonal_reports_gap(overcomplete_dictionary, signals) -> None:
    result = sc.sparse_code(signals, overcomplete_dictionary, 0.2, method="closed_form")
    gram = overcomplete_dictionary.T @ overcomplete_dictionary
    expected = torch.linalg.matrix_norm(gram - torch.eye(128, dtype=gram.dtype))
    assert result.orthogonality_gap == pytest.approx(float(expected), rel=1e-12)
    assert result.converged is False and result.n_iter == 0


def test_numpy_in_numpy_out_and_single_signal(overcomplete_dictionary, signals) -> None:
    D, x = overcomplete_dictionary.numpy(), signals.numpy()
    result = sc.sparse_code(x, D, 0.3, **TIGHT)
    assert isinstance(result.codes, np.ndarray) and isinstance(result.energy, np.ndarray)
    single = sc.sparse_code(x[0], D, 0.3, **TIGHT)
    assert single.codes.shape == (128,)
    np.testing.assert_allclose(single.codes, result.codes[0], atol=1e-9)
    np.testing.assert_allclose(sc.energy(x, D, result.codes, 0.3), result.energy, rtol=1e-12)


@given(small_dense_problems, st.sampled_from(["closed_form", "ista", "fista", "lca", "homotopy"]))
def test_nonneg_codes_are_nonnegative(problem, method: str) -> None:
    n, m, batch, lam, seed = problem
    D, x = draw_dense_problem(n, m, batch, seed)
    codes = sc.sparse_code(x, D, lam, method=method, nonneg=True, max_iter=50,
                           warn=False).codes
    assert torch.all(codes >= 0)
