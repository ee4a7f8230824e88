"""SparseConv2d / SparseLinear: docs/theory.md conventions 5-7, A.8 and checks 5, 8, 14 at the layer
level, exactness of the one-shot layer, equivalence with the engine, gradients, constraints."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from torch import nn

from sparsecnn import ConvDictionary, DenseDictionary, sparse_code
from sparsecnn.nn import (
    HierarchicalSparseCoding,
    SparseCodingClassifier,
    SparseConv2d,
    SparseLinear,
    project_priors,
    sparse_conv2d,
    sparse_linear,
)
from sparsecnn.nn.lipschitz import explicit_synthesis_matrix, fourier_lipschitz_bound

DTYPE = torch.float64


@pytest.fixture(autouse=True)
def _seeded_default_initialisation() -> None:
    """Layers built with PyTorch's default initialisation (nn.Conv2d, nn.Linear) are the same
    whatever the test order or worker."""
    torch.manual_seed(0)


def explicit_analysis_matrix(function, shape: tuple[int, ...]) -> torch.Tensor:
    """The matrix D^T of a linear map (computed by autograd, independent of the library)."""
    size = math.prod(shape)
    return torch.autograd.functional.jacobian(
        lambda v: function(v.view(1, *shape)).flatten(), torch.zeros(size, dtype=DTYPE))


def haar_bank() -> torch.Tensor:
    bank = torch.tensor([[[1, 1], [1, 1]], [[1, 1], [-1, -1]], [[1, -1], [1, -1]],
                         [[1, -1], [-1, 1]]], dtype=DTYPE) / 2.0
    return bank.unsqueeze(1)


def conv_layer(generator: torch.Generator, stride: int = 1, padding: int = 0, **options
               ) -> SparseConv2d:
    return SparseConv2d(2, 5, 3, stride, padding, dtype=DTYPE, generator=generator, **options)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(7)


# -- n_iter = 0 is exactly the CNN layer -----------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("stride", "padding"), [(1, 0), (2, 1), (3, 2)])
def test_one_shot_conv_is_exactly_conv_relu(generator, dtype, stride, padding):
    conv = nn.Conv2d(3, 6, 3, stride=stride, padding=padding, dtype=dtype)
    layer = SparseConv2d.from_conv(conv)
    x = torch.randn(4, 3, 11, 10, generator=generator).to(dtype)
    expected = F.relu(F.conv2d(x, conv.weight, conv.bias, stride=stride, padding=padding))
    assert torch.equal(layer(x), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_shot_linear_is_exactly_linear_relu(generator, dtype):
    linear = nn.Linear(7, 4, dtype=dtype)
    layer = SparseLinear(7, 4, dtype=dtype)
    layer.load_state_dict(linear.state_dict())
    x = torch.randn(5, 7, generator=generator).to(dtype)
    assert torch.equal(layer(x), F.relu(linear(x)))


def test_one_shot_signed_layer_is_soft_threshold(generator):
    layer = conv_layer(generator, nonneg=False, proper_prior=True)
    x = torch.randn(2, 2, 7, 7, generator=generator, dtype=DTYPE)
    z = F.conv2d(x, layer.weight)
    theta = -layer.bias.view(1, -1, 1, 1)
    expected = torch.sign(z) * torch.clamp(z.abs() - theta, min=0)  # S_theta(z), A.2
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-14)


# -- convention 5 / check 5 --------------------------------------------------------------------

def test_positive_homogeneity_check_5(generator):
    """ReLU(w^T x + b) = ||w|| ReLU((w/||w||)^T x + b/||w||) to 1e-12, through the layer."""
    layer = conv_layer(generator, stride=2, padding=1)
    x = torch.randn(3, 2, 9, 9, generator=generator, dtype=DTYPE)
    norms = torch.sqrt((layer.weight.detach() ** 2).sum(dim=(1, 2, 3)))
    atoms = layer.weight.detach() / norms.view(-1, 1, 1, 1)
    rebuilt = norms.view(1, -1, 1, 1) * F.relu(
        F.conv2d(x, atoms, stride=2, padding=1) + (layer.bias.detach() / norms).view(1, -1, 1, 1))
    with torch.no_grad():
        torch.testing.assert_close(layer(x), rebuilt, rtol=0, atol=1e-12)
        torch.testing.assert_close(layer.thresholds(), -layer.bias / norms, rtol=0, atol=1e-15)
        torch.testing.assert_close(layer.output_scales(), norms, rtol=0, atol=1e-14)
        torch.testing.assert_close(layer.atoms(), atoms, rtol=0, atol=1e-15)


# -- k-step inference ------------------------------------------------------------------------

@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("method", ["ista", "fista"])
def test_one_step_from_zero_is_scaled_relu_check_14(generator, stride, method):
    """One projected-ISTA step from 0 is ReLU(D^T x - lam)/L (docs/theory.md A.8, check 14); the
    layer multiplies by ||w||, so its output is ReLU(conv(x, W) + b) / L."""
    layer = conv_layer(generator, stride=stride, padding=1, n_iter=1, method=method)
    shape = (2, 8, 8)
    x = torch.randn(3, *shape, generator=generator, dtype=DTYPE)
    with torch.no_grad():
        atoms = layer.atoms()
        analysis = explicit_analysis_matrix(
            lambda v: F.conv2d(v, atoms, stride=stride, padding=1), shape)
        lipschitz = float(torch.linalg.matrix_norm(analysis, ord=2) ** 2)
        expected = F.relu(F.conv2d(x, layer.weight, layer.bias, stride, 1)) / lipschitz
        torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-14)
        assert layer.lipschitz(shape) == pytest.approx(lipschitz, rel=1e-12)


def test_one_step_dense_is_scaled_relu_check_14(generator):
    layer = SparseLinear(6, 9, n_iter=1, dtype=DTYPE, generator=generator)
    x = torch.randn(4, 6, generator=generator, dtype=DTYPE)
    with torch.no_grad():
        atoms = layer.weight / torch.linalg.vector_norm(layer.weight, dim=1, keepdim=True)
        lipschitz = float(torch.linalg.svdvals(atoms)[0] ** 2)
        expected = F.relu(F.linear(x, layer.weight, layer.bias)) / lipschitz
        torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("method", ["ista", "fista", "lca"])
@pytest.mark.parametrize(("stride", "padding", "n_iter"), [(1, 1, 1), (2, 1, 4), (2, 0, 7)])
def test_k_steps_equal_engine_iterates(generator, method, stride, padding, n_iter):
    """k steps of the layer = sparse_code(..., max_iter=k) codes times ||w|| (same step)."""
    layer = conv_layer(generator, stride, padding, n_iter=n_iter, method=method)
    x = torch.randn(3, 2, 9, 9, generator=generator, dtype=DTYPE)
    with torch.no_grad():
        output = layer(x)
        step = 1.0 / layer.lipschitz(x.shape[1:])
        result = sparse_code(x, ConvDictionary(layer.atoms(), stride, padding),
                             layer.thresholds(), method=method, nonneg=True, max_iter=n_iter,
                             tol=1e-300, step_size=step, allow_negative_lam=True, warn=False)
        assert result.n_iter == n_iter
        expected = result.codes * layer.output_scales().view(1, -1, 1, 1)
    torch.testing.assert_close(output, expected, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("method", ["ista", "fista", "lca"])
def test_dense_k_steps_equal_engine_iterates(generator, method):
    layer = SparseLinear(10, 16, n_iter=5, method=method, dtype=DTYPE, generator=generator)
    x = torch.randn(4, 10, generator=generator, dtype=DTYPE)
    with torch.no_grad():
        result = sparse_code(x, DenseDictionary(layer.atoms().T), layer.thresholds(),
                             method=method, nonneg=True, max_iter=5, tol=1e-300,
                             step_size=1.0 / layer.lipschitz(), allow_negative_lam=True,
                             warn=False)
        torch.testing.assert_close(layer(x), result.codes * layer.output_scales(), rtol=1e-12,
                                   atol=1e-13)


def test_ista_steps_match_plain_numpy_reference(generator):
    """Projected ISTA written with explicit matrices in numpy, from 0 (docs/theory.md A.8)."""
    layer = conv_layer(generator, stride=2, padding=1, n_iter=6)
    shape = (2, 7, 7)
    x = torch.randn(2, *shape, generator=generator, dtype=DTYPE)
    with torch.no_grad():
        atoms = layer.atoms()
        analysis = explicit_analysis_matrix(lambda v: F.conv2d(v, atoms, stride=2, padding=1),
                                            shape).numpy()
        output = layer(x)
    dictionary = analysis.T
    lam = np.repeat((-layer.bias.detach() / layer.output_scales().detach()).numpy(),
                    output.shape[2] * output.shape[3])
    lipschitz = np.linalg.norm(dictionary, 2) ** 2
    scales = np.repeat(layer.output_scales().detach().numpy(), output.shape[2] * output.shape[3])
    for signal, layer_output in zip(x.numpy(), output.numpy(), strict=True):
        a = np.zeros(dictionary.shape[1])
        for _ in range(6):
            a = np.maximum(a - dictionary.T @ (dictionary @ a - signal.ravel()) / lipschitz
                           - lam / lipschitz, 0.0)
        np.testing.assert_allclose(layer_output.ravel(), scales * a, rtol=1e-10, atol=1e-12)


def test_many_fista_steps_reach_the_minimiser(generator):
    """With enough steps the layer's codes minimise E+ (reference: SciPy L-BFGS-B)."""
    layer = SparseConv2d(1, 3, 3, stride=1, padding=1, n_iter=600, method="fista",
                         proper_prior=True, dtype=DTYPE, generator=generator)
    shape = (1, 5, 5)
    x = torch.randn(1, *shape, generator=generator, dtype=DTYPE)
    with torch.no_grad():
        codes = (layer(x) / layer.output_scales().view(1, -1, 1, 1)).flatten().numpy()
        atoms = layer.atoms()
        dictionary = explicit_analysis_matrix(lambda v: F.conv2d(v, atoms, padding=1),
                                              shape).numpy().T
        lam = np.repeat(layer.thresholds().numpy(), 25)
    signal = x.flatten().numpy()

    def energy(a):
        residual = signal - dictionary @ a
        return 0.5 * residual @ residual + lam @ a, -dictionary.T @ residual + lam

    reference = minimize(energy, np.zeros(dictionary.shape[1]), jac=True, method="L-BFGS-B",
                         bounds=[(0, None)] * dictionary.shape[1],
                         options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 20000})
    assert energy(codes)[0] == pytest.approx(reference.fun, rel=1e-9, abs=1e-10)
    np.testing.assert_allclose(codes, reference.x, atol=1e-5)


# -- check 8: CNN forward pass = layered thresholding ----------------------------------------

def test_two_layer_cnn_is_layered_thresholding_check_8(generator):
    hierarchy = HierarchicalSparseCoding.convolutional([1, 3, 4], kernel_size=3, stride=[1, 2],
                                                       padding=1, dtype=DTYPE,
                                                       generator=generator)
    first, second = hierarchy.sparse_layers
    x = torch.randn(2, 1, 6, 6, generator=generator, dtype=DTYPE)
    with torch.no_grad():
        m1 = explicit_analysis_matrix(lambda v: F.conv2d(v, first.weight, padding=1), (1, 6, 6))
        m2 = explicit_analysis_matrix(lambda v: F.conv2d(v, second.weight, stride=2, padding=1),
                                      (3, 6, 6))
        b1 = first.bias.repeat_interleave(36)
        b2 = second.bias.repeat_interleave(9)
        gamma1 = torch.relu(x.flatten(1) @ m1.T + b1)
        gamma2 = torch.relu(gamma1 @ m2.T + b2)
        codes = hierarchy.codes(x)
        torch.testing.assert_close(codes[0].flatten(1), gamma1, rtol=0, atol=1e-12)
        torch.testing.assert_close(codes[1].flatten(1), gamma2, rtol=0, atol=1e-12)
        torch.testing.assert_close(hierarchy(x).flatten(1), gamma2, rtol=0, atol=1e-12)


def test_orthonormal_layers_give_each_layer_minimiser_check_8(generator):
    """Haar stride-2 layers (orthonormal dictionaries): each layer's ReLU output satisfies the
    KKT conditions of its non-negative energy given the previous layer's output, exactly."""
    first = SparseConv2d(1, 4, 2, stride=2, dtype=DTYPE)
    second = SparseConv2d(4, 16, 2, stride=2, dtype=DTYPE)
    bank = haar_bank()
    separable = torch.zeros(16, 4, 2, 2, dtype=DTYPE)
    for channel in range(4):
        separable[4 * channel:4 * channel + 4, channel] = bank[:, 0]
    with torch.no_grad():
        first.weight.copy_(bank)
        first.bias.copy_(torch.tensor([-0.1, -0.3, 0.0, -0.2], dtype=DTYPE))
        second.weight.copy_(separable)
        second.bias.copy_(-0.05 * torch.arange(16, dtype=DTYPE) / 16)
    hierarchy = HierarchicalSparseCoding(first, second)
    x = torch.randn(3, 1, 8, 8, generator=generator, dtype=DTYPE)
    with torch.no_grad():
        gammas = hierarchy.codes(x)
        previous = x
        for layer, gamma, size in zip((first, second), gammas, (8, 4), strict=True):
            shape = (layer.in_channels, size, size)
            atoms = layer.atoms()
            analysis = explicit_analysis_matrix(lambda v, a=atoms: F.conv2d(v, a, stride=2),
                                                shape)
            dictionary = analysis.T
            torch.testing.assert_close(analysis @ dictionary,
                                       torch.eye(dictionary.shape[1], dtype=DTYPE), rtol=0,
                                       atol=1e-12)
            lam = layer.thresholds().repeat_interleave((size // 2) ** 2)
            codes = gamma.flatten(1) / layer.output_scales().repeat_interleave((size // 2) ** 2)
            gradient = (codes @ dictionary.T - previous.flatten(1)) @ dictionary + lam
            assert bool((codes >= 0).all())
            active = codes > 0
            assert float(gradient[active].abs().max()) <= 1e-12
            assert float(gradient[~active].min()) >= -1e-12
            previous = gamma


# -- gradients --------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["ista", "fista", "lca"])
def test_gradcheck_conv(generator, method):
    x = torch.randn(1, 2, 5, 5, generator=generator, dtype=DTYPE, requires_grad=True)
    weight = torch.randn(3, 2, 3, 3, generator=generator, dtype=DTYPE, requires_grad=True)
    bias = (0.1 * torch.randn(3, generator=generator, dtype=DTYPE)).requires_grad_()
    lipschitz = 4.0  # L is a constant of the layer (computed without gradient)

    def layer(x, weight, bias):
        return sparse_conv2d(x, weight, bias, (2, 2), (1, 1), n_iter=3, method=method,
                             lipschitz=lipschitz)

    assert torch.autograd.gradcheck(layer, (x, weight, bias), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("method", ["ista", "fista", "lca"])
def test_gradcheck_dense(generator, method):
    x = torch.randn(2, 4, generator=generator, dtype=DTYPE, requires_grad=True)
    weight = torch.randn(6, 4, generator=generator, dtype=DTYPE, requires_grad=True)
    bias = (0.1 * torch.randn(6, generator=generator, dtype=DTYPE)).requires_grad_()

    def layer(x, weight, bias):
        return sparse_linear(x, weight, bias, n_iter=3, method=method, lipschitz=3.0)

    assert torch.autograd.gradcheck(layer, (x, weight, bias), eps=1e-6, atol=1e-7)


def test_module_backward_reaches_every_parameter(generator):
    layer = conv_layer(generator, stride=2, padding=1, n_iter=3, method="fista",
                       unit_norm=True)
    x = torch.randn(2, 2, 8, 8, generator=generator, dtype=DTYPE, requires_grad=True)
    layer(x).square().sum().backward()
    for name, parameter in [("x", x), *layer.named_parameters()]:
        assert parameter.grad is not None, name
        assert bool(torch.isfinite(parameter.grad).all()), name
        assert float(parameter.grad.abs().max()) > 0, name


def test_lipschitz_follows_weight_updates(generator):
    layer = conv_layer(generator, n_iter=2)
    shape = (2, 6, 6)

    def exact() -> float:
        with torch.no_grad():
            atoms = layer.atoms()
            analysis = explicit_analysis_matrix(lambda v: F.conv2d(v, atoms), shape)
        return float(torch.linalg.matrix_norm(analysis, ord=2) ** 2)

    before = layer.lipschitz(shape)
    assert before == pytest.approx(exact(), rel=1e-12)
    with torch.no_grad():
        layer.weight[1].copy_(layer.weight[2])  # an in-place update, as an optimizer step
    after = layer.lipschitz(shape)
    assert after == pytest.approx(exact(), rel=1e-12)
    assert abs(after - before) > 1e-3


# -- constraints --------------------------------------------------------------------------------

@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_proper_prior_keeps_biases_nonpositive_after_every_step(generator, optimizer_name):
    layers = {flag: conv_layer(generator, n_iter=1, proper_prior=flag) for flag in (True, False)}
    x = torch.randn(4, 2, 6, 6, generator=generator, dtype=DTYPE)
    max_bias = {}
    for flag, layer in layers.items():
        optimizer = torch.optim.SGD(layer.parameters(), lr=1.0) if optimizer_name == "sgd" \
            else torch.optim.AdamW(layer.parameters(), lr=0.5)
        seen = []
        assert float(layer.bias.detach().max()) <= 0 or not flag
        for _ in range(5):
            loss = -layer(x).sum()  # rewards activity: pushes every bias up
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen.append(float(layer.bias.detach().max()))
        max_bias[flag] = max(seen)
    assert max_bias[True] <= 0.0
    assert max_bias[False] > 0.0  # the same training without the constraint leaves b <= 0


def test_proper_prior_projects_loaded_positive_biases(generator):
    conv = nn.Conv2d(2, 5, 3, dtype=DTYPE)
    with torch.no_grad():
        conv.bias.copy_(torch.tensor([-1.0, 0.5, 0.0, 2.0, -0.25], dtype=DTYPE))
    layer = SparseConv2d(2, 5, 3, proper_prior=True, dtype=DTYPE)
    with pytest.warns(UserWarning, match="loaded 2 positive bias"):
        layer.load_state_dict(conv.state_dict())
    assert layer.bias.tolist() == [-1.0, 0.0, 0.0, 0.0, -0.25]
    with torch.no_grad():
        layer.bias.add_(1.0)
    project_priors(nn.Sequential(layer))
    assert layer.bias.tolist() == [0.0, 0.0, 0.0, 0.0, 0.0]


def test_unit_norm_keeps_unit_atoms_with_separate_scale(generator):
    conv = nn.Conv2d(2, 5, 3, stride=2, dtype=DTYPE)
    layer = SparseConv2d.from_conv(conv, unit_norm=True)
    x = torch.randn(3, 2, 9, 9, generator=generator, dtype=DTYPE)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), F.relu(conv(x)), rtol=0, atol=1e-12)
        torch.testing.assert_close(layer.output_scale,
                                   torch.linalg.vector_norm(conv.weight.flatten(1), dim=1))
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        layer(x).square().sum().backward()
        optimizer.step()
        with torch.no_grad():
            norms = torch.linalg.vector_norm(layer.atoms().flatten(1), dim=1)
            torch.testing.assert_close(norms, torch.ones(5, dtype=DTYPE), rtol=0, atol=1e-12)
            torch.testing.assert_close(layer.output_scales(), layer.output_scale.abs(),
                                       rtol=1e-14, atol=0)
    assert sorted(layer.state_dict()) == ["bias", "output_scale", "weight"]


# -- bad input ---------------------------------------------------------------------------------

def test_zero_filter_is_a_clear_error(generator):
    layer = conv_layer(generator, n_iter=2)
    with torch.no_grad():
        layer.weight[3].zero_()
    x = torch.randn(1, 2, 5, 5, generator=generator, dtype=DTYPE)
    with pytest.raises(ValueError, match=r"zero filter.*output channels \[3\]"):
        layer(x)
    with pytest.raises(ValueError, match="zero filter"):
        layer.thresholds()
    unit = SparseConv2d(2, 5, 3, unit_norm=True, dtype=DTYPE)
    conv = nn.Conv2d(2, 5, 3, dtype=DTYPE)
    with torch.no_grad():
        conv.weight[1].zero_()
    with pytest.raises(ValueError, match="zero filter"):
        unit.load_state_dict(conv.state_dict())


def test_mismatched_state_dict_is_a_clear_error():
    layer = SparseConv2d(3, 8, 3)
    with pytest.raises(ValueError, match=r"'weight' has shape \(8, 3, 5, 5\); SparseConv2d "
                                         r".*expects \(8, 3, 3, 3\)"):
        layer.load_state_dict(nn.Conv2d(3, 8, 5).state_dict())
    with pytest.raises(ValueError, match="has no entry 'bias'"):
        layer.load_state_dict(nn.Conv2d(3, 8, 3, bias=False).state_dict())
    with pytest.raises(ValueError, match=r"'weight' has shape \(4, 6\); SparseLinear"):
        SparseLinear(6, 5).load_state_dict(nn.Linear(6, 4).state_dict())


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "adam"}, "method must be one of 'ista', 'fista', 'lca'; got 'adam'"),
    ({"n_iter": -1}, "n_iter must be an integer >= 0; got -1"),
    ({"n_iter": 1.5}, "n_iter must be an integer >= 0; got 1.5"),
    ({"stride": 0}, "stride must be >= 1"),
    ({"kernel_size": (3,)}, r"kernel_size must be an int or a pair of ints; got \(3,\)"),
])
def test_invalid_arguments(kwargs, message):
    arguments = {"in_channels": 2, "out_channels": 3, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        SparseConv2d(**arguments)


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2, H, W\).*got shape "
                                         r"\(1, 3, 5, 5\)"):
        SparseConv2d(2, 3, 3)(torch.zeros(1, 3, 5, 5))
    with pytest.raises(ValueError, match=r"x must have shape \(\*, 4\)"):
        SparseLinear(4, 3)(torch.zeros(2, 5))


# -- the complete model (A.7) -------------------------------------------------------------------

def test_classifier_outputs_probabilities(generator):
    features = HierarchicalSparseCoding.convolutional([1, 4, 6], 3, stride=2, padding=1,
                                                      n_iter=2, method="fista", dtype=DTYPE,
                                                      generator=generator)
    model = SparseCodingClassifier(features, 10, (1, 8, 8), generator=generator)
    x = torch.rand(5, 1, 8, 8, generator=generator, dtype=DTYPE)
    probabilities = model.predict_proba(x)
    assert probabilities.shape == (5, 10)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(5, dtype=DTYPE), rtol=0,
                               atol=1e-12)
    assert model.head.in_features == 6 * 2 * 2
    features.set_inference(n_iter=0)
    expected = model.head(F.relu(F.conv2d(F.relu(F.conv2d(
        x, features[0].weight, features[0].bias, 2, 1)), features[1].weight, features[1].bias,
        2, 1)).flatten(1))
    assert torch.equal(model(x), expected)


def test_hierarchy_rejects_normalisation_and_pooling():
    with pytest.raises(TypeError, match=r"layer 1 must be a SparseConv2d, SparseLinear or "
                                        r"nn\.Flatten.*got MaxPool2d"):
        HierarchicalSparseCoding(SparseConv2d(1, 2, 3), nn.MaxPool2d(2))
    with pytest.raises(ValueError, match="n_classes must be an integer >= 2; got 1"):
        SparseCodingClassifier([SparseConv2d(1, 2, 3)], 1, (1, 5, 5))


@pytest.mark.parametrize(("n_filters", "channels", "kernel", "stride", "padding", "size"), [
    (5, 2, 3, 1, 1, 10), (5, 2, 3, 2, 1, 11), (8, 3, 4, 2, 0, 12), (6, 2, 3, 3, 2, 13),
    (4, 1, 2, 2, 0, 8)])
def test_fourier_bound_is_an_upper_bound_on_the_step_constant(n_filters, channels, kernel,
                                                             stride, padding, size):
    """L_bound >= ||D||_2^2 (explicit matrix) and within 10%; exact for non-overlapping
    filters (stride = kernel size), where every frequency sees the same orthogonal blocks."""
    generator = torch.Generator().manual_seed(n_filters + size)
    weight = torch.randn(n_filters, channels, kernel, kernel, generator=generator, dtype=DTYPE)
    atoms = weight / torch.linalg.vector_norm(weight.flatten(1), dim=1).view(-1, 1, 1, 1)
    shape = (channels, size, size)
    analysis = explicit_analysis_matrix(
        lambda v: F.conv2d(v, atoms, stride=stride, padding=padding), shape)
    exact = float(torch.linalg.matrix_norm(analysis, ord=2) ** 2)
    bound = fourier_lipschitz_bound(atoms, (stride, stride), (padding, padding), shape)
    assert exact * (1 - 1e-12) <= bound <= 1.1 * exact
    if kernel == stride:
        assert bound == pytest.approx(exact, rel=1e-12)


def test_large_inputs_use_the_fourier_bound(generator):
    layer = SparseConv2d(1, 2, 3, padding=1, n_iter=1, dtype=DTYPE, generator=generator)
    shape = (1, 30, 30)  # 2 * 900 atoms x 900 pixels: above the explicit-matrix limit
    value = layer.lipschitz(shape)
    with torch.no_grad():
        atoms = layer.atoms()
    assert value == fourier_lipschitz_bound(atoms, (1, 1), (1, 1), shape)
    assert value >= ConvDictionary(atoms, 1, 1).lipschitz(shape) * (1 - 1e-9)


def test_multi_layer_ista_matches_numpy_reference(generator):
    """Joint ML-ISTA (Sulam et al. 2018) across a conv, a flatten and a dense layer, against
    a plain numpy implementation with explicit matrices; n_unfold = 0 is the CNN exactly."""
    conv = SparseConv2d(1, 3, 3, stride=2, padding=1, dtype=DTYPE, generator=generator)
    dense = SparseLinear(27, 5, dtype=DTYPE, generator=generator)
    with torch.no_grad():
        dense.bias.copy_(-dense.bias.abs())
    model = HierarchicalSparseCoding(conv, nn.Flatten(), dense, inference="ml_ista",
                                     n_unfold=0)
    x = torch.randn(2, 1, 6, 6, generator=generator, dtype=DTYPE)
    with torch.no_grad():
        layered = F.relu(F.linear(F.relu(F.conv2d(x, conv.weight, conv.bias, 2, 1)).flatten(1),
                                  dense.weight, dense.bias))
        assert torch.equal(model(x), layered)
        model.n_unfold = 3
        output = model(x).numpy()
        d1 = explicit_analysis_matrix(lambda v: F.conv2d(v, conv.atoms(), stride=2, padding=1),
                                      (1, 6, 6)).numpy().T
        d2 = dense.atoms().numpy().T
        s1 = np.repeat(conv.output_scales().numpy(), 9)
        s2 = dense.output_scales().numpy()
        l1 = np.repeat(conv.thresholds().numpy(), 9)
        l2 = dense.thresholds().numpy()
    # the joint modes' certified step: the smallest power of 2**(1/16) above ||D||_2^2
    lip1, lip2 = (2.0 ** (math.ceil(16 * math.log2(np.linalg.norm(d, 2) ** 2)) / 16)
                  for d in (d1, d2))
    for signal, result in zip(x.flatten(1).numpy(), output, strict=True):
        a1 = np.maximum(d1.T @ signal - l1, 0)
        a2 = np.maximum(d2.T @ (s1 * a1) - l2, 0)
        for _ in range(3):
            a1_hat = d2 @ a2 / s1
            a1 = np.maximum(a1_hat - d1.T @ (d1 @ a1_hat - signal) / lip1 - l1 / lip1, 0)
            a2 = np.maximum(a2 - d2.T @ (d2 @ a2 - s1 * a1) / lip2 - l2 / lip2, 0)
        np.testing.assert_allclose(result, s2 * a2, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="inference must be one of 'layered', 'ml_ista', "
                                         "'ml_fista'; got 'x'"):
        HierarchicalSparseCoding(conv, inference="x")


@settings(max_examples=20)
@given(kernel=st.integers(1, 4), stride=st.integers(1, 3), padding=st.integers(0, 2),
       size=st.integers(5, 9), seed=st.integers(0, 2 ** 31 - 1))
def test_relu_layer_is_scaled_unit_atom_code_for_all_geometries(kernel, stride, padding, size,
                                                                seed):
    """For every geometry: the one-shot layer is exactly conv + ReLU, and equals
    ||w|| * ReLU(D^T x - lam) with unit atoms and lam = -b/||w|| (convention 5, check 5)."""
    generator = torch.Generator().manual_seed(seed)
    layer = SparseConv2d(2, 3, kernel, stride, padding, dtype=DTYPE, generator=generator)
    x = torch.randn(2, 2, size, size, generator=generator, dtype=DTYPE)
    with torch.no_grad():
        output = layer(x)
        assert torch.equal(output, F.relu(F.conv2d(x, layer.weight, layer.bias, stride,
                                                   padding)))
        scales = layer.output_scales().view(1, -1, 1, 1)
        code = F.relu(F.conv2d(x, layer.atoms(), stride=stride, padding=padding)
                      - layer.thresholds().view(1, -1, 1, 1))
        torch.testing.assert_close(output, scales * code, rtol=0, atol=1e-12)


# -- the step size: never stale, explicit when asked for -----------------------------------------

def _mutate(layer: nn.Module, how: str, new_weight: torch.Tensor, x: torch.Tensor) -> None:
    if how == "data_copy":
        layer.weight.data.copy_(new_weight)  # does not move weight._version
    elif how == "load_state_dict":
        layer.load_state_dict({**layer.state_dict(), "weight": new_weight})
    elif how == "no_grad_mul":
        with torch.no_grad():
            layer.weight[0].mul_(2)  # a changed atom direction mix: filter 0 is longer only,
            layer.weight[1].add_(new_weight[1])  # filter 1 turns
    else:
        optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
        layer(x).square().sum().backward()
        optimizer.step()


@pytest.mark.parametrize("how", ["data_copy", "load_state_dict", "no_grad_mul", "optimizer"])
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_step_size_is_never_stale_after_a_weight_change(generator, kind, how):
    """Issue 12 section 3: after any kind of weight write, the layer computes what a fresh
    layer with the same state dict computes, and its L is ||D||_2^2 of the new atoms."""
    if kind == "conv":
        layer = conv_layer(generator, padding=1, n_iter=3)
        x = torch.randn(3, 2, 6, 6, generator=generator, dtype=DTYPE)
    else:
        layer = SparseLinear(6, 9, n_iter=3, dtype=DTYPE, generator=generator)
        x = torch.randn(3, 6, generator=generator, dtype=DTYPE)
    new_weight = torch.randn(layer.weight.shape, generator=generator, dtype=DTYPE)
    with torch.no_grad():
        layer(x)  # fills the cache with the old weights' L
    _mutate(layer, how, new_weight, x)
    fresh = copy.deepcopy(layer)
    fresh._lipschitz = type(layer._lipschitz)()  # an empty cache
    with torch.no_grad():
        assert torch.equal(layer(x), fresh(x))
        atoms = layer.atoms()
        if kind == "conv":
            matrix = explicit_analysis_matrix(lambda v: F.conv2d(v, atoms, padding=1),
                                              (2, 6, 6))
            value = layer.lipschitz((2, 6, 6))
        else:
            matrix, value = atoms, layer.lipschitz()
    assert value == pytest.approx(float(torch.linalg.matrix_norm(matrix, ord=2) ** 2),
                                  rel=1e-12)


@pytest.mark.parametrize("method", ["ista", "fista", "lca"])
def test_fixed_step_size_replaces_one_over_l(generator, method):
    """step_size = eta runs the iterations with 1/L replaced by eta; for ISTA/FISTA one step
    from 0 is ||w|| ReLU(eta (D^T x - lam)) (check 14 with the step eta)."""
    eta = 0.05
    layer = conv_layer(generator, padding=1, n_iter=4, method=method, step_size=eta)
    x = torch.randn(2, 2, 6, 6, generator=generator, dtype=DTYPE)
    with torch.no_grad():
        expected = sparse_conv2d(x, layer.weight, layer.bias, (1, 1), (1, 1), 4, method, True,
                                 1 / eta)
        assert torch.equal(layer(x), expected)
        if method != "lca":
            layer.n_iter = 1
            scales = layer.output_scales().view(1, -1, 1, 1)
            one_step = scales * F.relu(eta * (F.conv2d(x, layer.atoms(), padding=1)
                                              - layer.thresholds().view(1, -1, 1, 1)))
            torch.testing.assert_close(layer(x), one_step, rtol=1e-12, atol=1e-14)
    assert "step_size=0.05" in repr(layer)
    with pytest.raises(ValueError, match="step_size"):
        conv_layer(generator, step_size=0.0)


def test_from_dictionary_codes_with_the_given_atoms_and_thresholds(generator):
    """A layer built from (D, lam) minimises 1/2||x - D a||^2 + lam^T a over a >= 0: many
    FISTA steps reach scikit-learn's positive Lasso (alpha = lam / n_features)."""
    from sklearn.linear_model import Lasso

    matrix = torch.randn(12, 8, generator=generator, dtype=DTYPE)
    matrix /= torch.linalg.vector_norm(matrix, dim=0)
    lam = 0.3
    layer = SparseLinear.from_dictionary(matrix, lam, n_iter=3000, method="fista")
    x = torch.randn(12, generator=generator, dtype=DTYPE)
    with torch.no_grad():
        codes = layer(x)
        torch.testing.assert_close(layer.thresholds(), torch.full((8,), lam, dtype=DTYPE))
    lasso = Lasso(alpha=lam / 12, fit_intercept=False, positive=True, tol=1e-12,
                  max_iter=100000).fit(matrix.numpy(), x.numpy())
    np.testing.assert_allclose(codes.numpy(), lasso.coef_, atol=1e-7)
    filters = torch.randn(4, 2, 3, 3, generator=generator, dtype=DTYPE)
    filters /= torch.linalg.vector_norm(filters.flatten(1), dim=1).view(-1, 1, 1, 1)
    conv = SparseConv2d.from_dictionary(filters, torch.arange(4, dtype=DTYPE) / 10, padding=1)
    torch.testing.assert_close(conv.atoms(), filters, rtol=0, atol=1e-15)
    torch.testing.assert_close(conv.thresholds(), torch.arange(4, dtype=DTYPE) / 10)
    with pytest.raises(ValueError, match="atoms must have unit-norm atoms"):
        SparseConv2d.from_dictionary(2 * filters, 0.1)
    with pytest.raises(ValueError, match="lam must be one finite number or 4"):
        SparseConv2d.from_dictionary(filters, [0.1, 0.2])
    with pytest.raises(ValueError, match=r"D must be a matrix"):
        SparseLinear.from_dictionary(filters, 0.1)


@settings(max_examples=25, deadline=None)
@given(kernel=st.integers(1, 4), stride=st.integers(1, 3), padding=st.integers(0, 2),
       size=st.integers(4, 8), seed=st.integers(0, 2 ** 31 - 1))
def test_explicit_synthesis_matrix_is_the_dictionary_matrix(kernel, stride, padding, size, seed):
    """The filters copied into place give exactly ConvDictionary.to_matrix (impulses through
    conv_transpose2d), for every geometry."""
    generator = torch.Generator().manual_seed(seed)
    atoms = torch.randn(3, 2, kernel, kernel, generator=generator, dtype=DTYPE)
    shape = (2, size, size + 1)
    expected = ConvDictionary(atoms, stride, padding).to_matrix(shape)
    got = explicit_synthesis_matrix(atoms, (stride, stride), (padding, padding), shape)
    assert got.shape == expected.shape
    assert torch.equal(got, expected)
