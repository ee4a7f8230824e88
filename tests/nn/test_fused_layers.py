"""The fast k-step path of SparseConv2d (sparsecnn.nn.unrolled_function) against the engine's loops.

The reference is :func:`sparsecnn.nn.functional.unrolled_codes` on a ``LayerProblem``: the
engine's ``proximal_gradient`` / ``lca`` loops (code-space gradient ``D^T D a``,
``conv_transpose2d`` synthesis) differentiated by autograd.  The fast path writes the same
iterates with a signal-space residual, a matmul + col2im synthesis and a hand-written backward.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn.functional as F

from sparsecnn import ConvDictionary
from sparsecnn.nn import SparseConv2d, backends, native, sparse_conv2d, unrolling
from sparsecnn.nn.backends import conv_synthesis
from sparsecnn.nn.functional import LayerProblem, atoms_and_scales, unrolled_codes
from sparsecnn.nn.lipschitz import conv_lipschitz
from sparsecnn.nn.unrolled_function import unrolled_conv_codes
from sparsecnn.nn.unrolling import ConvUnrolling

DTYPE = torch.float64
GEOMETRIES = [((1, 1), (1, 1)), ((2, 2), (1, 1)), ((2, 1), (0, 2))]


def problem_tensors(seed: int, stride: tuple[int, int], padding: tuple[int, int],
                    negative_thresholds: bool, batch: int = 3
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Signals (batch, 2, 9, 8), unit-norm atoms (4, 2, 3, 3), thresholds (4,) and L."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 2, 9, 8, generator=generator, dtype=DTYPE)
    atoms, _ = atoms_and_scales(torch.randn(4, 2, 3, 3, generator=generator, dtype=DTYPE))
    lam = 0.3 * torch.rand(4, generator=generator, dtype=DTYPE)
    if negative_thresholds:
        lam = lam - torch.tensor([0.25, 0.0, 0.3, 0.0], dtype=DTYPE)
    return x, atoms, lam, conv_lipschitz(atoms, stride, padding, x.shape[1:])


def engine_codes(x, atoms, lam, settings: ConvUnrolling) -> torch.Tensor:
    problem = LayerProblem(x, ConvDictionary(atoms, settings.stride, settings.padding),
                           lam.view(-1, 1, 1), settings.nonneg)
    return unrolled_codes(problem, settings.n_iter, settings.method, settings.lipschitz,
                          settings.restart)


def use_kernels(kernels: str, monkeypatch) -> None:
    """Run the fused path with the native kernels or with PyTorch's operations."""
    if kernels == "native" and not native.available():
        pytest.skip("native kernels unavailable (no C++ compiler, or SPARSECNN_NATIVE=0)")
    if kernels == "torch":
        monkeypatch.setattr(backends, "native_applies", lambda *arguments: False)


@pytest.mark.parametrize("method", ["ista", "fista", "lca"])
@pytest.mark.parametrize(("nonneg", "negative_thresholds"),
                         [(True, False), (True, True), (False, False)])
@pytest.mark.parametrize(("stride", "padding"), GEOMETRIES)
@pytest.mark.parametrize("n_iter", [1, 2, 6])
@pytest.mark.parametrize("batch_chunk", [None, 2])
@pytest.mark.parametrize("kernels", ["native", "torch"])
def test_fast_codes_and_gradients_equal_engine_loop(method, nonneg, negative_thresholds,
                                                    stride, padding, n_iter, batch_chunk,
                                                    kernels, monkeypatch):
    """Whole batch (one chunk) and uneven chunks of 2 + 1 signals alike, with the native
    stride-1 kernels (:mod:`sparsecnn.nn.native`, where they apply) and with PyTorch's."""
    use_kernels(kernels, monkeypatch)
    x, atoms, lam, lipschitz = problem_tensors(n_iter, stride, padding, negative_thresholds)
    settings = ConvUnrolling(method, n_iter, lipschitz, nonneg, True, stride, padding,
                             batch_chunk)
    inputs = [t.clone().requires_grad_() for t in (x, atoms, lam)]
    fast = unrolled_conv_codes(*inputs, settings)
    reference = engine_codes(*inputs, settings)
    torch.testing.assert_close(fast, reference, rtol=1e-11, atol=1e-12)
    assert bool((reference != 0).any()) and bool((reference == 0).any())  # kinks are exercised
    weights = torch.randn(reference.shape, generator=torch.Generator().manual_seed(1),
                          dtype=DTYPE)
    fast_gradients = torch.autograd.grad((fast * weights).sum(), inputs)
    reference_gradients = torch.autograd.grad((reference * weights).sum(), inputs)
    for got, expected in zip(fast_gradients, reference_gradients, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("restart", [True, False])
@pytest.mark.parametrize("kernels", ["native", "torch"])
def test_fista_restart_rule_matches_engine(restart, kernels, monkeypatch):
    """Many FISTA steps: restarts fire (restart=True differs from restart=False) and the fast
    path follows the engine's rule, codes and gradients, either way (the native kernels form
    the restart test in the pass that writes the codes)."""
    use_kernels(kernels, monkeypatch)
    x, atoms, _, lipschitz = problem_tensors(0, (1, 1), (1, 1), False, batch=4)
    lam = torch.ones(4, dtype=DTYPE)  # large thresholds: the first restart comes at step 11
    inputs = [t.clone().requires_grad_() for t in (x, atoms, lam)]
    codes = {}
    for flag in (True, False):
        settings = ConvUnrolling("fista", 14, lipschitz, True, flag, (1, 1), (1, 1))
        codes[flag] = unrolled_conv_codes(*inputs, settings)
        if flag == restart:
            reference = engine_codes(*inputs, settings)
            torch.testing.assert_close(codes[flag], reference, rtol=1e-11, atol=1e-12)
            for got, expected in zip(torch.autograd.grad(codes[flag].square().sum(), inputs),
                                     torch.autograd.grad(reference.square().sum(), inputs),
                                     strict=True):
                torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-11)
    assert float((codes[True] - codes[False]).detach().abs().max()) > 1e-6


@pytest.mark.parametrize("method", ["ista", "fista", "lca"])
@pytest.mark.parametrize("nonneg", [True, False])
def test_gradcheck_fused(method, nonneg):
    x, atoms, lam, lipschitz = problem_tensors(11, (2, 2), (1, 1), False, batch=2)
    settings = ConvUnrolling(method, 3, lipschitz, nonneg, True, (2, 2), (1, 1))
    inputs = tuple(t.clone().requires_grad_() for t in (x[:, :, :6, :5], atoms, lam))
    assert torch.autograd.gradcheck(lambda *a: unrolled_conv_codes(*a, settings), inputs,
                                    eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("method", ["ista", "fista", "lca"])
@pytest.mark.parametrize("kernels", ["native", "torch"])
@pytest.mark.parametrize("batch_chunk", [None, 1])
def test_output_scales_equal_scaling_the_codes(method, kernels, batch_chunk, monkeypatch):
    """``scales`` inside the function (positive scales: written by the last step itself) =
    ``codes * scales`` outside it, differentiated by autograd (all four inputs, one chunk and
    chunks of one signal), and gradcheck with the scales."""
    use_kernels(kernels, monkeypatch)
    x, atoms, lam, lipschitz = problem_tensors(5, (1, 1), (1, 1), True)
    scales = torch.tensor([0.5, 2.0, 1.3, 0.9], dtype=DTYPE)
    settings = ConvUnrolling(method, 4, lipschitz, True, True, (1, 1), (1, 1), batch_chunk)
    inputs = [t.clone().requires_grad_() for t in (x, atoms, lam, scales)]
    fused = unrolled_conv_codes(*inputs[:3], settings, inputs[3])
    outside = unrolled_conv_codes(*inputs[:3], settings) * inputs[3].view(1, -1, 1, 1)
    torch.testing.assert_close(fused, outside, rtol=1e-13, atol=1e-14)
    weights = torch.randn(fused.shape, generator=torch.Generator().manual_seed(2), dtype=DTYPE)
    for got, expected in zip(torch.autograd.grad((fused * weights).sum(), inputs),
                             torch.autograd.grad((outside * weights).sum(), inputs),
                             strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-12)
    zero_scale = inputs[3].detach().clone()
    zero_scale[1] = 0.0
    zero_scale.requires_grad_()
    got = torch.autograd.grad((unrolled_conv_codes(*inputs[:3], settings, zero_scale) *
                               weights).sum(), zero_scale)[0]
    codes = unrolled_conv_codes(*(t.detach() for t in inputs[:3]), settings)
    torch.testing.assert_close(got, (codes * weights).sum((0, 2, 3)), rtol=1e-11, atol=1e-12)
    small = [inputs[0][:2, :, :5, :6], *inputs[1:]]
    assert torch.autograd.gradcheck(lambda a, b, c, d: unrolled_conv_codes(a, b, c, settings, d),
                                    [t.detach().clone().requires_grad_() for t in small],
                                    eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("scaled", [True, False])
@pytest.mark.parametrize("batch_chunk", [None, 2])
def test_in_place_change_of_the_output_cannot_corrupt_the_backward(scaled, batch_chunk):
    """With positive scales the saved final codes are the output itself: autograd must refuse
    the backward after an in-place change.  Without scales the output is a copy of them: the
    change must leave the gradients as they were."""
    x, atoms, lam, lipschitz = problem_tensors(6, (1, 1), (1, 1), False)
    settings = ConvUnrolling("ista", 3, lipschitz, True, True, (1, 1), (1, 1), batch_chunk)
    leaf = atoms.clone().requires_grad_()
    scales = torch.tensor([0.5, 2.0, 1.3, 0.9], dtype=DTYPE) if scaled else None
    output = unrolled_conv_codes(x, leaf, lam, settings, scales)
    expected = torch.autograd.grad(output.sum(), leaf, retain_graph=True)[0]
    with torch.no_grad():
        output.mul_(-1.0)
    if scaled:
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            torch.autograd.grad(output.sum(), leaf)
    else:
        torch.testing.assert_close(torch.autograd.grad(output.sum(), leaf)[0], expected,
                                   rtol=0, atol=0)


@pytest.mark.parametrize("method", ["ista", "fista", "lca"])
@pytest.mark.parametrize("backward", [True, False])
def test_layer_output_and_graph_are_freed(method, backward):
    """Nothing of a call outlives its output: a reference from the autograd node to the
    output it saved would be a cycle through C++ that the garbage collector cannot see
    (it leaked ~100 MB a call at batch 64)."""
    layer = SparseConv2d(2, 4, 3, padding=1, n_iter=3, method=method).double()
    x = torch.randn(3, 2, 9, 8, dtype=DTYPE, generator=torch.Generator().manual_seed(4))
    output = layer(x)
    assert output.grad_fn is not None
    if backward:
        output.sum().backward()
    reference = weakref.ref(output)
    del output
    gc.collect()
    assert reference() is None


@pytest.mark.parametrize("chunk", [0, -1, 1.5, True])
def test_bad_batch_chunk_is_refused(chunk):
    with pytest.raises(ValueError, match=r"batch_chunk must be None or an integer >= 1; got "):
        ConvUnrolling("ista", 2, 1.0, True, True, (1, 1), (1, 1), chunk)


def test_gradients_when_only_some_inputs_need_them():
    """A first layer: x needs no gradient; the weight and threshold gradients are unchanged."""
    x, atoms, lam, lipschitz = problem_tensors(2, (1, 1), (1, 1), True)
    settings = ConvUnrolling("fista", 4, lipschitz, True, True, (1, 1), (1, 1))
    leaves = [atoms.clone().requires_grad_(), lam.clone().requires_grad_()]
    fast = torch.autograd.grad(unrolled_conv_codes(x, *leaves, settings).square().sum(), leaves)
    expected = torch.autograd.grad(engine_codes(x, *leaves, settings).square().sum(), leaves)
    for got, want in zip(fast, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize(("kernel", "stride", "padding", "size"),
                         [((3, 3), (1, 1), (1, 1), (8, 8)), ((3, 2), (2, 2), (1, 0), (9, 8)),
                          ((4, 4), (3, 2), (2, 1), (10, 7)), ((1, 1), (1, 1), (0, 0), (5, 6))])
def test_conv_synthesis_is_conv_transpose(kernel, stride, padding, size):
    """D a by matmul + col2im = conv_transpose2d with the output_padding that restores the
    signal size (odd and even sizes, stride > kernel - padding)."""
    generator = torch.Generator().manual_seed(3)
    atoms = torch.randn(5, 3, *kernel, generator=generator, dtype=DTYPE)
    dictionary = ConvDictionary(atoms, stride, padding)
    codes = torch.randn(2, *dictionary.code_shape((3, *size)), generator=generator,
                        dtype=DTYPE)
    expected = F.conv_transpose2d(codes, atoms, stride=stride, padding=padding,
                                  output_padding=dictionary.output_padding(
                                      (3, *size), codes.shape[1:]))
    got = conv_synthesis(codes, atoms, stride, padding, size)
    assert got.shape == (2, 3, *size)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_signed_codes_with_negative_thresholds_are_rejected():
    x, atoms, lam, lipschitz = problem_tensors(0, (1, 1), (1, 1), True)
    settings = ConvUnrolling("ista", 2, lipschitz, False, True, (1, 1), (1, 1))
    with pytest.raises(ValueError, match="lam must be >= 0 for signed codes; got minimum"):
        unrolled_conv_codes(x, atoms, lam, settings)


def test_signed_layer_with_positive_bias_takes_the_engine_loop():
    """sparse_conv2d routes signed codes with a negative threshold (a positive bias) to the
    engine loop: the output is that loop's, whose energy is unbounded below."""
    x, atoms, lam, lipschitz = problem_tensors(4, (1, 1), (1, 1), True)
    weight = 1.7 * atoms
    output = sparse_conv2d(x, weight, -1.7 * lam, (1, 1), (1, 1), n_iter=3, method="ista",
                           nonneg=False, lipschitz=lipschitz)
    settings = ConvUnrolling("ista", 3, lipschitz, False, True, (1, 1), (1, 1))
    torch.testing.assert_close(output, 1.7 * engine_codes(x, atoms, lam, settings),
                               rtol=1e-12, atol=1e-13)


def test_module_forward_without_gradient_equals_with_gradient():
    """The no-grad forward (buffers updated in place, nothing saved) = the autograd forward."""
    layer = SparseConv2d(2, 4, 3, padding=1, n_iter=4, method="fista", dtype=DTYPE,
                         generator=torch.Generator().manual_seed(6))
    x = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(8), dtype=DTYPE)
    with torch.no_grad():
        plain = layer(x)
    tracked = layer(x)
    assert tracked.requires_grad
    torch.testing.assert_close(plain, tracked.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("method", ["ista", "fista", "lca"])
def test_layer_output_and_gradients_do_not_depend_on_the_chunk_size(method, monkeypatch):
    """SparseConv2d through the automatic chunking (CHUNK_BYTES = 1: one signal a chunk)
    equals the whole batch in one chunk, output and every parameter gradient."""
    layer = SparseConv2d(2, 4, 3, stride=2, padding=1, n_iter=5, method=method, dtype=DTYPE,
                         generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([0.2, -0.1, 0.05, -0.3], dtype=DTYPE))
    x = torch.randn(5, 2, 9, 8, generator=torch.Generator().manual_seed(10), dtype=DTYPE,
                    requires_grad=True)
    results = {}
    for chunk_bytes in (1, 2 ** 40):
        monkeypatch.setattr(unrolling, "CHUNK_BYTES", chunk_bytes)
        output = layer(x)
        results[chunk_bytes] = (output, *torch.autograd.grad(
            output.square().sum(), (x, layer.weight, layer.bias)))
    settings = ConvUnrolling(method, 5, 1.0, True, True, (2, 2), (1, 1))
    assert unrolling.batch_chunk(x, layer.weight, settings) >= 5
    monkeypatch.setattr(unrolling, "CHUNK_BYTES", 1)
    assert unrolling.batch_chunk(x, layer.weight, settings) == 1
    for chunked, whole in zip(results[1], results[2 ** 40], strict=True):
        torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-13)
