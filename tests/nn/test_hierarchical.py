"""Joint ML-ISTA / ML-FISTA of HierarchicalSparseCoding (docs/theory.md A.6-A.8; Sulam, Aberdam,
Beck, Elad 2020, arXiv 1806.00701): against the recurrence of their ML_ISTA_NET / ML_FISTA_NET
written out here, against explicit-matrix numpy references, and the model's API."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsecnn.nn import HierarchicalSparseCoding, SparseConv2d, SparseLinear

DTYPE = torch.float64
# Sulam et al.'s MNIST network: 6x6 stride 2, 6x6 stride 2, 4x4 stride 1 on 28x28 (fewer
# channels here than their 32/64/512, to keep the test fast)
GEOMETRY = [(1, 4, 6, 2), (4, 8, 6, 2), (8, 16, 4, 1)]


def sulam_log_probabilities(x, weights, biases, head, n_unfold, accelerated):
    """log softmax of the head on Gamma_3 after T unfoldings of Sulam et al.'s recurrence
    (their code, RHO = 1): Gamma_l^+ = ReLU(Gamma_hat_l - W_l^T (W_l Gamma_hat_l -
    Gamma_{l-1}^+) + b_l), Gamma_hat_{l-1} = W_l Gamma_hat_l; ML-FISTA extrapolates Gamma_3."""
    strides = [g[3] for g in GEOMETRY]

    def analysis(signal, index):
        return F.conv2d(signal, weights[index], stride=strides[index])

    def synthesis(codes, index):
        return F.conv_transpose2d(codes, weights[index], stride=strides[index])

    gammas = []
    signal = x
    for index in range(3):
        signal = F.relu(analysis(signal, index) + biases[index].view(1, -1, 1, 1))
        gammas.append(signal)
    t, previous = 1.0, gammas[2]
    for _ in range(n_unfold):
        top = gammas[2]
        if accelerated:
            t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
            top = top + (t - 1) / t_next * (top - previous)
            t = t_next
        previous = gammas[2]
        hats = [None, None, top]
        hats[1] = synthesis(hats[2], 2)
        hats[0] = synthesis(hats[1], 1)
        signal = x
        for index in range(3):
            gradient = analysis(synthesis(hats[index], index) - signal, index)
            signal = F.relu(hats[index] - gradient + biases[index].view(1, -1, 1, 1))
            gammas[index] = signal
    return F.log_softmax(head(gammas[2].flatten(1)), dim=1)


@pytest.mark.parametrize("inference", ["ml_ista", "ml_fista"])
@pytest.mark.parametrize("n_unfold", [0, 1, 3, 6])
def test_unit_filters_and_unit_step_are_sulam_et_al_recurrence(inference, n_unfold):
    """With unit-norm filters and step_size=1 the model is ML_ISTA_NET (ML_FISTA_NET) with the
    same weights: max |delta log p| <= 1e-12 in float64."""
    generator = torch.Generator().manual_seed(n_unfold)
    layers = []
    for in_channels, out_channels, kernel, stride in GEOMETRY:
        weight = torch.randn(out_channels, in_channels, kernel, kernel, generator=generator,
                             dtype=DTYPE)
        weight /= torch.linalg.vector_norm(weight.flatten(1), dim=1).view(-1, 1, 1, 1)
        lam = 0.1 * torch.rand(out_channels, generator=generator, dtype=DTYPE)
        layers.append(SparseConv2d.from_dictionary(weight, lam, stride))
    model = HierarchicalSparseCoding(*layers, inference=inference, n_unfold=n_unfold,
                                     step_size=1.0)
    head = nn.Linear(16, 10, dtype=DTYPE)
    x = torch.rand(5, 1, 28, 28, generator=generator, dtype=DTYPE)
    with torch.no_grad():
        ours = F.log_softmax(head(model(x).flatten(1)), dim=1)
        theirs = sulam_log_probabilities(x, [layer.weight for layer in layers],
                                         [layer.bias for layer in layers], head, n_unfold,
                                         inference == "ml_fista")
    assert float((ours - theirs).abs().max()) <= 1e-12


def _explicit(layer: SparseConv2d, shape: tuple[int, ...]) -> np.ndarray:
    """The synthesis matrix (n_features x n_atoms) of the layer's unit-norm dictionary."""
    eye = torch.eye(math.prod(shape), dtype=DTYPE).view(-1, *shape)
    with torch.no_grad():
        return F.conv2d(eye, layer.atoms(), stride=layer.stride,
                        padding=layer.padding).flatten(1).numpy()


@pytest.mark.parametrize("steps", [None, (0.3, 0.2)])
def test_ml_fista_matches_numpy_reference(steps):
    """ML-FISTA (Sulam et al. Algorithm 3: momentum on the deepest code, t_0 = 1) with 1/L_l or
    given steps, across a conv, a flatten and a dense layer, against explicit matrices."""
    generator = torch.Generator().manual_seed(5)
    conv = SparseConv2d(1, 3, 3, stride=2, padding=1, dtype=DTYPE, generator=generator)
    dense = SparseLinear(27, 5, dtype=DTYPE, generator=generator)
    with torch.no_grad():
        dense.bias.copy_(-dense.bias.abs())
        conv.bias.copy_(-conv.bias.abs())
    model = HierarchicalSparseCoding(conv, nn.Flatten(), dense, inference="ml_fista",
                                     n_unfold=5, step_size=steps)
    x = torch.randn(3, 1, 6, 6, generator=generator, dtype=DTYPE)
    with torch.no_grad():
        output = model(x).numpy()
        d1 = _explicit(conv, (1, 6, 6))
        d2 = dense.atoms().numpy().T
        s1 = np.repeat(conv.output_scales().numpy(), 9)
        s2 = dense.output_scales().numpy()
        l1 = np.repeat(conv.thresholds().numpy(), 9)
        l2 = dense.thresholds().numpy()
    e1, e2 = (1 / grid_point(np.linalg.norm(d1, 2) ** 2),
              1 / grid_point(np.linalg.norm(d2, 2) ** 2)) if steps is None else steps
    for signal, result in zip(x.flatten(1).numpy(), output, strict=True):
        a1 = np.maximum(d1.T @ signal - l1, 0)
        a2 = np.maximum(d2.T @ (s1 * a1) - l2, 0)
        t, previous = 1.0, a2
        for _ in range(5):
            t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
            z = a2 + (t - 1) / t_next * (a2 - previous)
            t, previous = t_next, a2
            a1_hat = d2 @ z / s1
            a1 = np.maximum(a1_hat - e1 * d1.T @ (d1 @ a1_hat - signal) - e1 * l1, 0)
            a2 = np.maximum(z - e2 * d2.T @ (d2 @ z - s1 * a1) - e2 * l2, 0)
        np.testing.assert_allclose(result, s2 * a2, rtol=1e-10, atol=1e-12)


def test_learned_step_size_gets_a_gradient_and_equals_the_fixed_step():
    generator = torch.Generator().manual_seed(1)
    layers = HierarchicalSparseCoding.convolutional((1, 3, 4), 3, stride=[2, 1], padding=1,
                                                    dtype=DTYPE, generator=generator)
    fixed = HierarchicalSparseCoding(*layers, inference="ml_ista", n_unfold=2,
                                     step_size=[0.2, 0.1])
    learned = HierarchicalSparseCoding(*layers, inference="ml_ista", n_unfold=2,
                                       step_size=nn.Parameter(torch.tensor([0.2, 0.1],
                                                                           dtype=DTYPE)))
    assert "step_size" in dict(learned.named_parameters())
    x = torch.randn(2, 1, 8, 8, generator=generator, dtype=DTYPE)
    output = learned(x)
    with torch.no_grad():
        assert torch.equal(output, fixed(x))
    output.sum().backward()
    assert learned.step_size.grad is not None
    assert bool((learned.step_size.grad != 0).all())
    # d output / d eta by central differences on the fixed-step model
    eps = 1e-6
    for index in range(2):
        plus, minus = [0.2, 0.1], [0.2, 0.1]
        plus[index] += eps
        minus[index] -= eps
        with torch.no_grad():
            fixed.step_size = plus
            high = fixed(x).sum()
            fixed.step_size = minus
            low = fixed(x).sum()
        assert float(learned.step_size.grad[index]) == pytest.approx(
            float(high - low) / (2 * eps), rel=1e-6)
    with torch.no_grad():
        learned.step_size[0] = -1.0
    with pytest.raises(ValueError, match="step_size must be finite and > 0"):
        learned(x)


def grid_point(value: float) -> float:
    """The smallest power of 2**(1/16) at or above ``value`` (docs/theory.md A.8, certified
    step), by exact integer powers."""
    k = math.floor(16 * math.log2(value)) - 2
    while 2.0 ** (k / 16) < value * (1 - 1e-13):
        k += 1
    return 2.0 ** (k / 16)


def test_default_step_is_one_over_each_layers_lipschitz_constant_on_the_grid():
    """The default step is 1/L with L the smallest grid point above ||D_l||_2^2 (exact here)."""
    generator = torch.Generator().manual_seed(2)
    model = HierarchicalSparseCoding.convolutional((2, 3, 4), 3, padding=1,
                                                   inference="ml_ista", n_unfold=3,
                                                   dtype=DTYPE, generator=generator)
    assert (model.inference, model.n_unfold) == ("ml_ista", 3)
    first, second = model.sparse_layers
    x = torch.randn(2, 2, 7, 7, generator=generator, dtype=DTYPE)
    explicit = HierarchicalSparseCoding(first, second, inference="ml_ista", n_unfold=3,
                                        step_size=[1 / grid_point(first.lipschitz((2, 7, 7))),
                                                   1 / grid_point(second.lipschitz((3, 7, 7)))])
    with torch.no_grad():
        torch.testing.assert_close(model(x), explicit(x), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize(("build", "message"), [
    (lambda: HierarchicalSparseCoding.convolutional((1, 2, 3), n_iter=2, inference="ml_ista",
                                                    n_unfold=1),
     "sparse layer 0 has n_iter=2; set n_iter=0"),
    (lambda: HierarchicalSparseCoding.convolutional((1, 2, 3), nonneg=False,
                                                    inference="ml_fista"),
     "needs nonneg=True layers; sparse layer 0"),
    (lambda: HierarchicalSparseCoding.convolutional((1, 2, 3), inference="ml_ista",
                                                    step_size=[0.1, 0.2, 0.3]),
     "step_size must be one number or 2"),
    (lambda: HierarchicalSparseCoding.convolutional((1, 2), inference="ml_ista",
                                                    step_size=0.0),
     "step_size"),
    (lambda: HierarchicalSparseCoding.convolutional((1, 2), inference="joint"),
     "inference must be one of"),
])
def test_joint_mode_rejects_inconsistent_settings(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_layer_iterations_switched_on_later_are_an_error():
    model = HierarchicalSparseCoding.convolutional((1, 2, 3), inference="ml_ista", n_unfold=0)
    model.set_inference(n_iter=1)
    with pytest.raises(ValueError, match="n_iter=1"):
        model(torch.zeros(1, 1, 6, 6))
