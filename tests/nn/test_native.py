"""The native stride-1 kernels against PyTorch's convolutions (an independent implementation),
their input checks, and the fallback when they cannot be built."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sparsecnn.nn import SparseConv2d, native

pytestmark = pytest.mark.skipif(
    not native.available(),
    reason="native kernels unavailable (no C++ compiler, or SPARSECNN_NATIVE=0)")

# (batch, channels, height, width, filters, kernel, padding): the layer's shape, widths that
# leave a partial vector segment, rectangular kernels, no padding and padding = kernel - 1
GEOMETRIES = [
    (3, 3, 32, 32, 64, (3, 3), (1, 1)),
    (2, 2, 7, 9, 5, (3, 3), (1, 1)),
    (2, 3, 13, 37, 11, (5, 3), (2, 0)),
    (1, 1, 5, 5, 3, (1, 1), (0, 0)),
    (2, 4, 40, 50, 17, (3, 2), (0, 1)),
    (1, 2, 6, 70, 9, (3, 3), (2, 2)),
]
TOLERANCE = {torch.float32: {"rtol": 1e-4, "atol": 1e-4},
             torch.float64: {"rtol": 1e-12, "atol": 1e-12}}


def _problem(geometry, dtype, seed=0):
    batch, channels, height, width, filters, kernel, padding = geometry
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, height, width, dtype=dtype, generator=generator)
    weight = torch.randn(filters, channels, *kernel, dtype=dtype, generator=generator)
    bias = torch.randn(filters, dtype=dtype, generator=generator)
    return x, weight, bias, padding, generator


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize(("sign", "with_addend", "relu"),
                         [(1.0, False, False), (1.0, True, True), (-1.0, True, False)])
def test_correlate_equals_conv2d(geometry, dtype, sign, with_addend, relu):
    x, weight, bias, padding, generator = _problem(geometry, dtype)
    expected = F.conv2d(x, sign * weight, bias, 1, padding)
    addend = torch.randn(expected.shape, dtype=dtype, generator=generator) if with_addend \
        else None
    if addend is not None:
        expected = expected + addend
    if relu:
        expected = torch.relu(expected)
    got = native.correlate(x, weight, padding, bias=bias, sign=sign, addend=addend, relu=relu)
    torch.testing.assert_close(got, expected, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize(("inside", "inside_relu", "outside", "relu"),
                         [(0.7, 0.3, 0.0, False), (0.25, 0.0, 0.75, False), (1.0, 0.0, 0.0, True),
                          (0.0, 0.0, -1.5, True)])
def test_correlate_epilogue(geometry, dtype, inside, inside_relu, outside, relu):
    """``out = outside A + [mask != 0] scale relu?(v + bias + inside A + inside_relu relu(A))``
    and ``rectified = relu(pre)``, written into given tensors."""
    x, weight, bias, padding, generator = _problem(geometry, dtype)
    v = F.conv2d(x, weight, None, 1, padding)
    addend = torch.randn(v.shape, dtype=dtype, generator=generator)
    mask = torch.randn(v.shape, dtype=dtype, generator=generator).clamp_min(0)  # half zeros
    scale = torch.rand(weight.shape[0], dtype=dtype, generator=generator) + 0.5
    pre = v + bias.view(1, -1, 1, 1) + inside * addend + inside_relu * torch.relu(addend)
    kept = scale.view(1, -1, 1, 1) * (torch.relu(pre) if relu else pre)
    expected = outside * addend + torch.where(mask != 0, kept, torch.zeros_like(kept))
    out, rectified = torch.full_like(v, float("nan")), torch.full_like(v, float("nan"))
    got = native.correlate(x, weight, padding, bias=bias, addend=addend, relu=relu,
                           scale=scale, out=out, inside=inside, inside_relu=inside_relu,
                           outside=outside, mask=mask, rectified=rectified)
    assert got is out
    torch.testing.assert_close(out, expected, **TOLERANCE[dtype])
    torch.testing.assert_close(rectified, torch.relu(pre), **TOLERANCE[dtype])
    in_place = addend.clone()  # the addend updated in place
    native.correlate(x, weight, padding, bias=bias, addend=in_place, relu=relu, scale=scale,
                     out=in_place, inside=inside, inside_relu=inside_relu, outside=outside,
                     mask=mask)
    torch.testing.assert_close(in_place, expected, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_correlate_per_signal_terms(geometry, dtype):
    """``out = [mask != 0] (signal_scale[n] pre + extra)``, ``side = side_scale[n] pre``: the
    backward through FISTA's ``y = (1 + beta) a - beta a_prev``."""
    x, weight, _, padding, generator = _problem(geometry, dtype)
    v = -F.conv2d(x, weight, None, 1, padding)
    addend, extra = (torch.randn(v.shape, dtype=dtype, generator=generator) for _ in range(2))
    mask = torch.randn(v.shape, dtype=dtype, generator=generator).clamp_min(0)
    beta = torch.rand(x.shape[0], dtype=dtype, generator=generator)
    pre = v + addend
    kept = (1 + beta).view(-1, 1, 1, 1) * pre + extra
    side = torch.full_like(v, float("nan"))
    got = native.correlate(x, weight, padding, sign=-1.0, addend=addend, mask=mask,
                           signal_scale=1 + beta, extra=extra, side=side, side_scale=-beta)
    torch.testing.assert_close(got, torch.where(mask != 0, kept, torch.zeros_like(kept)),
                               **TOLERANCE[dtype])
    torch.testing.assert_close(side, -beta.view(-1, 1, 1, 1) * pre, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_correlate_restart_direction(geometry, dtype):
    """FISTA's ``<y - a, a - a_prev>`` per signal, from the pass that writes ``a``."""
    x, weight, bias, padding, generator = _problem(geometry, dtype)
    v = F.conv2d(x, weight, bias, 1, padding)
    extrapolated, previous = (torch.randn(v.shape, dtype=dtype, generator=generator)
                              for _ in range(2))
    codes = torch.relu(v + extrapolated)
    expected = ((extrapolated - codes) * (codes - previous)).flatten(1).sum(1)
    direction = torch.full((x.shape[0],), float("nan"), dtype=dtype)
    got = native.correlate(x, weight, padding, bias=bias, addend=extrapolated, relu=True,
                           previous=previous, direction=direction)
    torch.testing.assert_close(got, codes, **TOLERANCE[dtype])
    torch.testing.assert_close(direction, expected, rtol=TOLERANCE[dtype]["rtol"],
                               atol=TOLERANCE[dtype]["atol"] * codes.numel())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_residual_equals_signal_minus_conv_transpose2d(geometry, dtype):
    x, weight, _, padding, generator = _problem(geometry, dtype)
    codes = torch.randn(F.conv2d(x, weight, None, 1, padding).shape, dtype=dtype,
                        generator=generator)
    expected = x - F.conv_transpose2d(codes, weight, None, 1, padding)
    torch.testing.assert_close(native.residual(x, codes, weight, padding), expected,
                               **TOLERANCE[dtype])
    torch.testing.assert_close(native.residual(None, codes, weight, padding), expected - x,
                               **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("threads", [1, 2])
def test_weight_gradient_equals_convolution_backward(geometry, dtype, threads):
    x, weight, _, padding, generator = _problem(geometry, dtype)
    maps = torch.randn(F.conv2d(x, weight, None, 1, padding).shape, dtype=dtype,
                       generator=generator)
    _, expected_weight, expected_bias = torch.ops.aten.convolution_backward(
        maps, x, weight, [weight.shape[0]], (1, 1), padding, (1, 1), False, (0, 0), 1,
        [False, True, True])
    start_weight = torch.randn(weight.shape, dtype=dtype, generator=generator)
    start_bias = torch.randn(weight.shape[0], dtype=dtype, generator=generator)
    grad_weight, grad_bias = start_weight.clone(), start_bias.clone()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        native.add_weight_gradient(grad_weight, maps, x, padding, alpha=0.5,
                                   grad_bias=grad_bias, alpha_bias=-2.0)
    finally:
        torch.set_num_threads(previous)
    scale = max(1.0, float(expected_weight.abs().max()))
    torch.testing.assert_close(grad_weight, start_weight + 0.5 * expected_weight,
                               rtol=TOLERANCE[dtype]["rtol"],
                               atol=TOLERANCE[dtype]["atol"] * scale)
    torch.testing.assert_close(grad_bias, start_bias - 2.0 * expected_bias,
                               rtol=TOLERANCE[dtype]["rtol"],
                               atol=TOLERANCE[dtype]["atol"] * scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_weight_gradient_then_correlate_equals_the_two_calls(geometry, dtype):
    """The fused backward half-step: the weight gradient of ``<m, conv2d(s, W)>`` then the
    synthesis ``D m`` of the same maps, signal by signal, equal the two separate kernels."""
    x, weight, _, padding, generator = _problem(geometry, dtype)
    maps = torch.randn(F.conv2d(x, weight, None, 1, padding).shape, dtype=dtype,
                       generator=generator)
    flipped = native.transposed_weight(weight)
    kernel_h, kernel_w = weight.shape[2:]
    transposed_padding = (kernel_h - 1 - padding[0], kernel_w - 1 - padding[1])
    expected_weight = torch.zeros_like(weight)
    expected_bias = torch.zeros(weight.shape[0], dtype=dtype)
    native.add_weight_gradient(expected_weight, maps, x, padding, alpha=0.5,
                               grad_bias=expected_bias, alpha_bias=-1.0)
    addend = torch.randn(x.shape, dtype=dtype, generator=generator)
    expected = native.correlate(maps, flipped, transposed_padding, sign=-1.0, addend=addend)
    grad_weight, grad_bias = torch.zeros_like(weight), torch.zeros(weight.shape[0], dtype=dtype)
    got = native.add_weight_gradient_then_correlate(
        grad_weight, maps, x, padding, maps, flipped, transposed_padding, alpha=0.5,
        grad_bias=grad_bias, alpha_bias=-1.0, sign=-1.0, addend=addend)
    torch.testing.assert_close(got, expected, **TOLERANCE[dtype])
    torch.testing.assert_close(grad_weight, expected_weight, **TOLERANCE[dtype])
    torch.testing.assert_close(grad_bias, expected_bias, **TOLERANCE[dtype])
    torch.testing.assert_close(got, addend - F.conv_transpose2d(maps, weight, None, 1, padding),
                               **TOLERANCE[dtype])


def test_weight_gradient_of_conv_transpose2d():
    # <s, conv_transpose2d(m, W)> has the weight gradient of <m, conv2d(s, W)>
    x, weight, _, padding, generator = _problem(GEOMETRIES[2], torch.float64)
    codes = torch.randn(F.conv2d(x, weight, None, 1, padding).shape, dtype=torch.float64,
                        generator=generator)
    leaf = weight.clone().requires_grad_()
    (F.conv_transpose2d(codes, leaf, None, 1, padding) * x).sum().backward()
    grad = torch.zeros_like(weight)
    native.add_weight_gradient(grad, codes, x, padding)
    torch.testing.assert_close(grad, leaf.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: native.correlate(torch.zeros(1, 2, 4, 4, dtype=torch.int64),
                              torch.zeros(3, 2, 3, 3), (1, 1)),
     "correlate: expected CPU float32 or float64 tensors; got torch.int64 on cpu"),
    (lambda: native.correlate(torch.zeros(1, 2, 4, 4), torch.zeros(3, 5, 3, 3), (1, 1)),
     "correlate: inputs have 2 channels, weight expects 5"),
    (lambda: native.correlate(torch.zeros(1, 2, 4, 4), torch.zeros(3, 2, 3, 3,
                                                                   dtype=torch.float64),
                              (1, 1)),
     "correlate: weight must be a CPU torch.float32 tensor; got torch.float64 on cpu"),
    (lambda: native.correlate(torch.zeros(1, 2, 4, 4), torch.zeros(3, 2, 3, 3), (-1, 1)),
     "correlate: padding must be two integers >= 0; got (-1, 1)"),
    (lambda: native.correlate(torch.zeros(1, 2, 4, 4), torch.zeros(3, 2, 3, 3), (1, 1),
                              addend=torch.zeros(1, 3, 3, 3)),
     "correlate: addend must have shape (1, 3, 4, 4); got (1, 3, 3, 3)"),
    (lambda: native.correlate(torch.zeros(1, 2, 2, 2), torch.zeros(3, 2, 3, 3), (0, 0)),
     "correlate: the kernel is larger than the padded input"),
    (lambda: native.correlate(torch.zeros(1, 2, 4, 4), torch.zeros(3, 2, 3, 3), (1, 1),
                              outside=0.5),
     "correlate: inside_relu, outside and previous need an addend"),
    (lambda: native.correlate(torch.zeros(1, 2, 4, 4), torch.zeros(3, 2, 3, 3), (1, 1),
                              addend=torch.zeros(1, 3, 4, 4), previous=torch.zeros(1, 3, 4, 4)),
     "correlate: previous and direction go together"),
    (lambda: native.correlate(torch.zeros(2, 2, 4, 4), torch.zeros(3, 2, 3, 3), (1, 1),
                              signal_scale=torch.ones(3)),
     "correlate: signal_scale must have shape (2,); got (3,)"),
    (lambda: native.correlate(torch.zeros(1, 2, 4, 4), torch.zeros(3, 2, 3, 3), (1, 1),
                              out=torch.zeros(1, 3, 4, 4).transpose(2, 3)),
     "correlate: out must be contiguous with shape (1, 3, 4, 4); got (1, 3, 4, 4)"),
    (lambda: native.correlate(torch.zeros(1, 2, 4, 4), torch.zeros(3, 2, 3, 3), (1, 1),
                              scale=torch.ones(2)),
     "correlate: scale must have shape (3,); got (2,)"),
    (lambda: native.add_weight_gradient(torch.zeros(3, 2, 3, 3), torch.zeros(1, 3, 2, 2),
                                        torch.zeros(1, 2, 4, 4), (1, 1)),
     "maps must have shape (1, 3, 4, 4); got (1, 3, 2, 2)"),
])
def test_bad_input_names_the_argument(call, message):
    with pytest.raises((TypeError, ValueError)) as error:
        call()
    assert str(error.value) == message


@pytest.fixture
def fresh_native(monkeypatch, tmp_path):
    """A private kernel cache, and the library state restored after the test."""
    monkeypatch.setenv("SPARSECNN_CACHE", str(tmp_path / "cache"))
    saved = dict(native._STATE)
    native.reset()
    yield tmp_path / "cache"
    native.reset()
    native._STATE.update(saved)


def test_build_is_cached_under_a_hashed_name(fresh_native):
    assert native.available()
    built = sorted(fresh_native.glob("kernels-*.so"))
    assert len(built) == 1 and not list(fresh_native.glob(".kernels-*"))
    stamp = built[0].stat().st_mtime_ns
    native.reset()
    assert native.available()
    assert built[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt


def test_failed_build_warns_and_the_layer_falls_back(fresh_native, monkeypatch, tmp_path):
    broken = tmp_path / "broken-compiler"
    broken.write_text("#!/bin/sh\necho 'compiler exploded' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CXX", str(broken))
    layer = SparseConv2d(3, 8, 3, padding=1, n_iter=2)
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(0))
    with pytest.warns(RuntimeWarning, match="compiler exploded"):
        assert not native.available()
    assert not list(fresh_native.glob("*.so")) and not list(fresh_native.glob(".kernels-*"))
    fallback = layer(x)
    monkeypatch.delenv("CXX")
    native.reset()
    assert native.available()
    torch.testing.assert_close(layer(x), fallback, rtol=1e-5, atol=1e-6)


def test_disabled_by_environment_is_silent(fresh_native, monkeypatch, recwarn):
    monkeypatch.setenv("SPARSECNN_NATIVE", "0")
    assert not native.available()
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert not fresh_native.exists()


@pytest.fixture(params=["native", "torch"])
def backend(request, monkeypatch):
    """The layer on the native kernels, or on PyTorch's operations (``SPARSECNN_NATIVE=0``)."""
    saved = dict(native._STATE)
    if request.param == "torch":
        monkeypatch.setenv("SPARSECNN_NATIVE", "0")
        native.reset()
    yield request.param
    native.reset()
    native._STATE.update(saved)


def _bad_pixel_layer(method, n_iter, value):
    layer = SparseConv2d(1, 4, 3, padding=1, n_iter=n_iter, method=method,
                         generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    x[0, 0, 5, 9] = value
    return layer, x


@pytest.mark.parametrize("method", ["ista", "fista", "lca"])
@pytest.mark.parametrize("n_iter", [0, 1, 3])
def test_nan_pixel_spreads_exactly_over_its_receptive_field(backend, method, n_iter):
    """A NaN pixel makes NaN every code it reaches, as ``torch.relu(nan) = nan``: with 3x3
    kernels, padding 1, ``a^1`` reads a 3x3 window and each step (``D`` then ``D^T``) widens
    it by 2, so ``a^k`` is NaN exactly in the square of radius ``max(2k - 1, 1)`` around the
    pixel, in every channel of that signal, and nowhere else."""
    layer, x = _bad_pixel_layer(method, n_iter, float("nan"))
    with torch.no_grad():
        codes = layer(x)
    radius = max(2 * n_iter - 1, 1)
    expected = torch.zeros(codes.shape, dtype=torch.bool)
    expected[0, :, max(0, 5 - radius):5 + radius + 1, max(0, 9 - radius):9 + radius + 1] = True
    assert native.available() == (backend == "native")
    assert torch.equal(torch.isnan(codes), expected)
    assert torch.isfinite(codes[~expected]).all()


@pytest.mark.parametrize("method", ["ista", "fista", "lca"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_native_and_pytorch_paths_agree_where_the_output_is_not_finite(monkeypatch, method,
                                                                       value):
    """The issue's case (``n_iter=3``) and one more step: NaN, +inf and -inf at the same
    positions on both paths (+inf survives the rectifier, -inf becomes 0, inf - inf NaN)."""
    saved = dict(native._STATE)
    try:
        for n_iter in (3, 4):
            layer, x = _bad_pixel_layer(method, n_iter, value)
            native.reset()
            assert native.available()
            with torch.no_grad():
                fast = layer(x)
            monkeypatch.setenv("SPARSECNN_NATIVE", "0")
            native.reset()
            with torch.no_grad():
                reference = layer(x)
            monkeypatch.delenv("SPARSECNN_NATIVE")
            assert not torch.isfinite(reference).all()
            for test in (torch.isnan, torch.isposinf, torch.isneginf):
                assert torch.equal(test(fast), test(reference)), (n_iter, test.__name__)
            finite = torch.isfinite(reference)
            torch.testing.assert_close(fast[finite], reference[finite], rtol=1e-4, atol=1e-5)
    finally:
        native.reset()
        native._STATE.update(saved)
