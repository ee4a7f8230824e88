"""Dictionaries as operators: adjoints, Lipschitz constants, coherence, orthogonality gap,
and docs/theory.md check 7 (conv2d is D^T x; Haar stride 2 is orthonormal, stride 1 is not)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import haar_filters

import sparsecnn as sc

CONV_CASES = [  # (n_filters, channels, kernel, stride, padding, image)
    (4, 1, 2, 2, 0, (8, 8)),
    (4, 1, 2, 1, 0, (8, 8)),
    (6, 3, 3, 2, 1, (9, 10)),
    (5, 2, 3, 1, 1, (7, 7)),
    (3, 2, 4, 3, 2, (11, 13)),
    (2, 1, 3, 1, 0, (30, 27)),  # large enough for the interior-class reduction
    (3, 2, 3, 2, 1, (33, 31)),
    (2, 1, 4, 3, 2, (40, 37)),  # reduction with stride 3, padding 2, both remainders
    (2, 1, 5, 1, 2, (30, 29)),
    (2, 2, 4, 2, 3, (41, 38)),  # padding wider than half the kernel
]


def conv_dictionary(case, generator) -> tuple[sc.ConvDictionary, tuple[int, int, int]]:
    k, c, size, stride, padding, image = case
    weight = torch.randn(k, c, size, size, generator=generator, dtype=torch.float64)
    return sc.ConvDictionary(weight, stride=stride, padding=padding), (c, *image)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_analysis_is_explicit_transpose(case, generator) -> None:
    """Check 7: conv2d equals D^T x for the explicit convolutional dictionary (1e-12), and
    conv_transpose2d equals D a."""
    D, shape = conv_dictionary(case, generator)
    matrix = D.to_matrix(shape)
    x = torch.randn(3, *shape, generator=generator, dtype=torch.float64)
    explicit = (x.flatten(1) @ matrix).view(3, *D.code_shape(shape))
    assert torch.max(torch.abs(D.analysis(x) - explicit)) <= 1e-12
    a = torch.randn(3, *D.code_shape(shape), generator=generator, dtype=torch.float64)
    assert torch.max(torch.abs(D.synthesis(a, x.shape).flatten(1) - a.flatten(1) @ matrix.T)) \
        <= 1e-12
    assert D.adjointness_test(shape) <= 1e-13


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_orthogonality_gap_matches_explicit_matrix(case, generator) -> None:
    D, shape = conv_dictionary(case, generator)
    matrix = D.to_matrix(shape)
    gram = matrix.T @ matrix
    expected = torch.linalg.matrix_norm(gram - torch.eye(gram.shape[0], dtype=gram.dtype))
    assert D.orthogonality_gap(shape) == pytest.approx(float(expected), rel=1e-10)


@pytest.mark.parametrize("case", CONV_CASES[:5])
def test_conv_lipschitz_matches_spectral_norm(case, generator) -> None:
    D, shape = conv_dictionary(case, generator)
    expected = float(torch.linalg.matrix_norm(D.to_matrix(shape), ord=2)) ** 2
    assert D.lipschitz(shape) == pytest.approx(expected, rel=1e-5)
    assert D.lipschitz(shape) <= expected * (1 + 1e-12)


def test_dense_lipschitz_coherence_gap(overcomplete_dictionary) -> None:
    D = sc.DenseDictionary(overcomplete_dictionary)
    expected_l = float(torch.linalg.matrix_norm(overcomplete_dictionary, ord=2)) ** 2
    assert D.lipschitz() == pytest.approx(expected_l, rel=1e-8)
    gram = overcomplete_dictionary.T @ overcomplete_dictionary
    off = gram - torch.diag(torch.diag(gram))
    assert D.coherence() == pytest.approx(float(off.abs().max()), rel=1e-12)
    assert D.orthogonality_gap() == pytest.approx(
        float(torch.linalg.matrix_norm(gram - torch.eye(128, dtype=gram.dtype))), rel=1e-12)
    assert D.adjointness_test() <= 1e-13


def test_lipschitz_cache_follows_weight_changes(overcomplete_dictionary) -> None:
    matrix = overcomplete_dictionary.clone()
    D = sc.DenseDictionary(matrix)
    before = D.lipschitz()
    matrix.mul_(2.0)  # in place: the version counter changes, so the cache must not be used
    assert D.lipschitz() == pytest.approx(4 * before, rel=1e-8)


def test_conv_coherence_matches_explicit_interior_atoms(generator) -> None:
    """Coherence of the translation-invariant dictionary equals the explicit one computed on
    uncropped atoms (no padding, large image)."""
    weight = torch.randn(3, 2, 3, 3, generator=generator, dtype=torch.float64)
    D = sc.ConvDictionary(weight, stride=1)
    matrix = D.normalized().to_matrix((2, 9, 9))
    gram = (matrix.T @ matrix).abs()
    gram.fill_diagonal_(0)
    assert D.coherence() == pytest.approx(float(gram.max()), rel=1e-12)


def test_haar_stride_two_is_orthonormal_stride_one_is_not() -> None:
    """Check 7: 2x2 Haar at stride 2 gives ||D^T D - I||_F <= 1e-12; at stride 1 the
    dictionary is overcomplete: rank(D) < number of atoms."""
    exact = sc.ConvDictionary(haar_filters(), stride=2)
    assert exact.orthogonality_gap((1, 8, 8)) <= 1e-12
    assert exact.coherence() <= 1e-15
    redundant = sc.ConvDictionary(haar_filters(), stride=1)
    matrix = redundant.to_matrix((1, 8, 8))
    assert int(torch.linalg.matrix_rank(matrix)) < matrix.shape[1]
    assert redundant.orthogonality_gap((1, 8, 8)) > 1.0


def test_normalized_gives_unit_atoms(generator) -> None:
    D = sc.ConvDictionary(torch.randn(4, 2, 3, 3, generator=generator) * 5).normalized()
    assert torch.allclose(D.atom_norms(), torch.ones(4))
    dense = sc.DenseDictionary(torch.randn(5, 7, generator=generator) * 3).normalized()
    assert torch.allclose(dense.atom_norms(), torch.ones(7))


@pytest.mark.parametrize("make", [
    lambda: sc.DenseDictionary(torch.tensor([[1.0, 0.0], [0.0, 0.0]])),
    lambda: sc.ConvDictionary(torch.zeros(2, 1, 2, 2).index_fill_(0, torch.tensor([0]), 1.0)),
])
def test_zero_norm_atom_is_refused(make) -> None:
    with pytest.raises(ValueError, match=r"has 1 zero-norm atom\(s\) \(indices \[1\]\)"):
        make().normalized()


@pytest.mark.parametrize(("make", "message"), [
    (lambda: sc.DenseDictionary(torch.ones(3)), r"matrix must be 2-D \(n_features, n_atoms\)"),
    (lambda: sc.ConvDictionary(torch.ones(3, 3)), r"weight must be 4-D"),
    (lambda: sc.ConvDictionary(torch.ones(1, 1, 2, 2), stride=0), r"stride must be >= 1"),
    (lambda: sc.ConvDictionary(torch.ones(1, 1, 2, 2), padding=(1,)),
     r"padding must be an int or a pair of ints; got \(1,\)"),
])
def test_bad_construction(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_conv_needs_a_signal_shape() -> None:
    D = sc.ConvDictionary(torch.ones(1, 1, 2, 2))
    with pytest.raises(ValueError, match=r"signal_shape is required for a ConvDictionary"):
        D.lipschitz()
    assert sc.ConvDictionary(torch.ones(1, 1, 2, 2), signal_size=(4, 4)).lipschitz() > 0


@pytest.mark.parametrize(("stride", "padding"), [(1, 0), (2, 1)])
def test_large_conv_lipschitz_is_a_tight_upper_bound(generator, stride, padding) -> None:
    """Beyond the power-iteration limit L is the Fourier (polyphase) bound: never below
    ||D||_2^2 (so 1/L is a safe step) and within a few percent of it."""
    weight = torch.randn(16, 1, 3, 3, generator=generator, dtype=torch.float64)
    D = sc.ConvDictionary(weight, stride=stride, padding=padding)
    shape = (1, 34, 34) if stride == 1 else (1, 56, 56)
    assert np.prod(D.code_shape(shape)) * np.prod(shape) > sc.dictionary.POWER_ITERATION_LIMIT
    matrix = D.to_matrix(shape)
    exact = float(torch.linalg.eigvalsh(matrix @ matrix.T)[-1])  # ||D||_2^2
    assert exact <= D.lipschitz(shape) <= exact * 1.05


def _unblocked_fourier_bound(weight: torch.Tensor, stride: int, padding: int,
                             signal_shape: tuple[int, int, int]) -> float:
    """docs/theory.md A.5 polyphase bound with every frequency at once (fft2 of the polyphase
    filters on the full grid): the reference for the blocked computation."""
    k, c, kh, kw = weight.shape
    ph, pw = -(-kh // stride), -(-kw // stride)
    padded = torch.nn.functional.pad(weight, (0, ph * stride - kw, 0, ph * stride - kh))
    polyphase = padded.reshape(k, c, ph, stride, pw, stride).permute(0, 1, 3, 5, 2, 4)
    polyphase = polyphase.reshape(k, c * stride * stride, ph, pw)
    out_h = (signal_shape[1] + 2 * padding - kh) // stride + 1
    out_w = (signal_shape[2] + 2 * padding - kw) // stride + 1
    response = torch.fft.fft2(polyphase, s=(out_h + ph - 1, out_w + pw - 1)).permute(2, 3, 0, 1)
    singular = torch.linalg.svdvals(response)[..., 0]
    return float((singular ** 2).max())


@pytest.mark.parametrize(("channels", "stride", "padding", "block_bytes"),
                         [(1, 1, 1, 1), (3, 1, 0, 4096), (2, 2, 1, 1), (3, 2, 2, 10**9)])
def test_blocked_fourier_bound_equals_the_unblocked_one(generator, channels, stride, padding,
                                                        block_bytes) -> None:
    """The bound is a maximum over frequencies, so taking it block by block of frequency
    rows (one row per block with block_bytes=1) changes nothing but rounding."""
    weight = torch.randn(5, channels, 3, 3, generator=generator, dtype=torch.float64)
    shape = (channels, 13, 11)
    blocked = sc.dictionary.fourier_lipschitz_bound(weight, (stride, stride), (padding, padding),
                                                    shape, block_bytes=block_bytes)
    assert blocked == pytest.approx(_unblocked_fourier_bound(weight, stride, padding, shape),
                                    rel=1e-12)


SHAPE_MESSAGES = [
    ((2, 4, 4), r"signal_shape is too small for the kernel \(5, 5\) with padding \(0, 0\): "
                r"spatial size \(4, 4\); expected \(H, W\), \(2, H, W\)"),
    ((4, 4), r"signal_shape is too small for the kernel \(5, 5\)"),
    ((2, -5, 12), r"signal_shape must be \(H, W\), \(2, H, W\) or \(batch, 2, H, W\) with "
                  r"H \+ 2\*0 >= 5 and W \+ 2\*0 >= 5; got \(2, -5, 12\)"),
    ((3, 8, 8), r"signal_shape has 3 channel\(s\) but the dictionary's filters have "
                r"in_channels=2"),
    ((8,), r"signal_shape must be \(H, W\)"),
    ((2, 8.5, 8), r"signal_shape must be \(H, W\)"),
    ("abc", r"signal_shape must be \(H, W\)"),
]


@pytest.mark.parametrize("query", ["lipschitz", "orthogonality_gap", "to_matrix", "code_shape"])
@pytest.mark.parametrize(("shape", "message"), SHAPE_MESSAGES)
def test_conv_geometry_is_checked_everywhere(generator, query, shape, message) -> None:
    """A kernel larger than the (padded) image, a negative size or a wrong channel count is a
    ValueError naming signal_shape, never a 0.0 gap (it would read as orthonormal) or a raw
    tensor error."""
    D = sc.ConvDictionary(torch.randn(3, 2, 5, 5, generator=generator, dtype=torch.float64))
    with pytest.raises(ValueError, match=message):
        getattr(D, query)(shape)


def test_conv_analysis_and_synthesis_check_channels(generator) -> None:
    D = sc.ConvDictionary(torch.randn(4, 3, 3, 3, generator=generator, dtype=torch.float64),
                          padding=1)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3, H, W\) to match the "
                                         r"dictionary's in_channels=3; got shape \(1, 1, 8, 8\)"):
        D.analysis(torch.zeros(1, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"codes must have shape \(batch, 4, H_out, W_out\) to "
                                         r"match the dictionary's n_filters=4"):
        D.synthesis(torch.zeros(1, 2, 8, 8, dtype=torch.float64), (1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"signal_shape has 1 channel\(s\) but the "
                                         r"dictionary's filters have in_channels=3"):
        D.synthesis(torch.zeros(1, 4, 8, 8, dtype=torch.float64), (1, 1, 8, 8))
