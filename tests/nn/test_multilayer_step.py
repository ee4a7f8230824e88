"""The joint ML-ISTA operators and their certified step (docs/theory.md A.8, certified step):
the fast forms of a convolution against conv2d/conv_transpose2d, the perturbation bounds
against the explicit operator's norm, and the grid step against independently computed
norms along a simulated training run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparsecnn.nn import SparseConv2d
from sparsecnn.nn.lipschitz import (
    GRID_RATIO,
    fourier_lipschitz_bound,
    grid_index,
    grid_lipschitz,
    lipschitz_method,
    schur_norm_bound,
    tap_norm_bound,
)
from sparsecnn.nn.multilayer import Stage, conv_form

DTYPE = torch.float64


def explicit_matrix(filters: torch.Tensor, stride: int, padding: int,
                    shape: tuple[int, int, int]) -> np.ndarray:
    """``D^T`` (atoms x features) of the correlation, column by column from impulses."""
    eye = torch.eye(math.prod(shape), dtype=DTYPE).view(-1, *shape)
    return F.conv2d(eye, filters, stride=stride, padding=padding).flatten(1).numpy().T


def grid_point(value: float) -> float:
    """Smallest power of 2**(1/16) at or above ``value``, by integer powers."""
    k = math.floor(16 * math.log2(value)) - 2
    while 2.0 ** (k / 16) < value * (1 - 1e-13):
        k += 1
    return 2.0 ** (k / 16)


@pytest.mark.parametrize(("channels", "kernel", "stride", "padding", "size", "form"), [
    (3, 4, 1, 0, 4, "full"), (2, 6, 2, 0, 12, "polyphase"), (1, 6, 3, 0, 12, "polyphase"),
    (2, 3, 2, 1, 7, "conv"), (2, 3, 1, 1, 5, "conv"), (8, 4, 2, 0, 8, "conv")])
def test_stage_forms_are_the_convolution_and_its_adjoint(channels, kernel, stride, padding,
                                                         size, form):
    generator = torch.Generator().manual_seed(kernel * 10 + stride)
    layer = SparseConv2d(channels, 5, kernel, stride=stride, padding=padding, dtype=DTYPE,
                         generator=generator)
    x = torch.randn(3, channels, size, size, generator=generator, dtype=DTYPE)
    weight = layer.effective_weight().detach()
    assert conv_form(layer, x.shape) == form
    stage = Stage.build(layer, weight, layer.bias.detach(), weight, 0.7, tuple(x.shape))
    expected = F.conv2d(x, 0.7 * weight, 0.7 * layer.bias.detach(), stride, padding)
    torch.testing.assert_close(stage.analysis(x), expected, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(stage.layer_forward(x), F.relu(F.conv2d(
        x, weight, layer.bias.detach(), stride, padding)), rtol=1e-13, atol=1e-13)
    codes = torch.randn(expected.shape, generator=generator, dtype=DTYPE)
    synthesized = stage.synthesis(codes)
    assert synthesized.shape == x.shape
    # adjoint of the bias-free correlation: <D^T x, a> = <x, D a>
    plain = F.conv2d(x, weight, None, stride, padding)
    assert float((plain * codes).sum()) == pytest.approx(float((x * synthesized).sum()),
                                                         rel=1e-12)


@pytest.mark.parametrize(("channels", "n_filters", "kernel", "stride", "padding", "size"), [
    (1, 4, 6, 2, 0, 14), (3, 5, 3, 1, 1, 6), (2, 3, 4, 2, 1, 9), (4, 6, 4, 1, 0, 4)])
def test_perturbation_bounds_are_above_the_operator_norm(channels, n_filters, kernel, stride,
                                                         padding, size):
    """Schur's test and the sum of the polyphase taps' Frobenius norms bound ||D||_2 of the
    explicit (cropped, strided) operator of arbitrary filters from above."""
    generator = torch.Generator().manual_seed(size)
    filters = torch.randn(n_filters, channels, kernel, kernel, generator=generator,
                          dtype=DTYPE)
    norm = np.linalg.norm(explicit_matrix(filters, stride, padding, (channels, size, size)), 2)
    assert schur_norm_bound(filters) >= norm * (1 - 1e-12)
    assert tap_norm_bound(filters, (stride, stride)) >= norm * (1 - 1e-12)
    dense = filters.flatten(1)
    assert tap_norm_bound(dense, None) >= np.linalg.norm(dense.numpy(), 2)
    assert schur_norm_bound(dense) >= np.linalg.norm(dense.numpy(), 2) * (1 - 1e-12)


def test_grid_index_brackets_the_value():
    for value in (1e-3, 0.5, 1.0, 2.0, math.pi, GRID_RATIO ** 7, 1e4):
        k = grid_index(value)
        assert GRID_RATIO ** (k - 1) < value <= GRID_RATIO ** k
    assert GRID_RATIO ** grid_index(GRID_RATIO ** 5) == GRID_RATIO ** 5


def _unit(filters: torch.Tensor) -> torch.Tensor:
    return filters / torch.linalg.vector_norm(filters.flatten(1), dim=1).view(
        -1, *(1,) * (filters.ndim - 1))


@pytest.mark.parametrize(("kind", "filters_shape", "stride", "padding", "signal"), [
    ("dense", (12, 20), None, None, ()),
    ("exact", (4, 2, 3, 3), (2, 2), (1, 1), (2, 9, 9)),
    ("fourier", (3, 1, 4, 4), (2, 2), (0, 0), (1, 40, 40))])
def test_grid_step_is_certified_and_history_free_along_a_training_run(
        kind, filters_shape, stride, padding, signal):
    """Along 12 small random updates: L is the grid point above an independently computed V
    (numpy spectral norm; Fourier bound for large layers), hence >= ||D||_2^2; the bracket,
    not a full computation, decides most steps; a fresh computation on the last weights (no
    history) gives the same L."""
    generator = torch.Generator().manual_seed(len(filters_shape) + len(signal))
    atoms = _unit(torch.randn(filters_shape, generator=generator, dtype=DTYPE))
    if stride is not None:
        method = lipschitz_method(filters_shape, stride, padding, signal)
        assert method == kind
    anchor, full = None, 0
    for _ in range(12):
        atoms = _unit(atoms + 2e-5 * torch.randn(filters_shape, generator=generator,
                                                 dtype=DTYPE))
        value, anchor, computed = grid_lipschitz(atoms, stride, padding, signal, anchor)
        full += int(computed)
        if kind == "dense":
            reference = np.linalg.norm(atoms.numpy(), 2) ** 2
        elif kind == "exact":
            reference = np.linalg.norm(explicit_matrix(atoms, stride[0], padding[0], signal),
                                       2) ** 2
        else:
            reference = fourier_lipschitz_bound(atoms, stride, padding, signal)
        assert value == pytest.approx(grid_point(reference), rel=1e-14)
        assert reference <= value <= reference * GRID_RATIO * (1 + 1e-12)
    assert full < 12
    if kind == "fourier":  # the bound's V is above ||D||_2^2 (one SVD: it is large)
        norm2 = np.linalg.norm(explicit_matrix(atoms, stride[0], padding[0], signal), 2) ** 2
        assert value >= norm2
    assert grid_lipschitz(atoms, stride, padding, signal, None)[0] == value


@pytest.mark.parametrize("step", [None, 0.8])
def test_joint_model_gradients_match_finite_differences(step):
    """gradcheck (float64) of the unrolled ML-ISTA output w.r.t. the input and every weight and
    bias, through the matrix-product, polyphase and strided-convolution forms (the step 1/L is
    a constant of the weights, as in docs/theory.md A.8.3)."""
    from torch.func import functional_call

    from sparsecnn.nn import HierarchicalSparseCoding

    generator = torch.Generator().manual_seed(11)
    model = HierarchicalSparseCoding(
        SparseConv2d(1, 3, 4, stride=2, dtype=DTYPE, generator=generator),
        SparseConv2d(3, 4, 2, stride=2, padding=1, dtype=DTYPE, generator=generator),
        SparseConv2d(4, 5, 2, dtype=DTYPE, generator=generator),
        inference="ml_ista", n_unfold=2, step_size=step)
    x = torch.rand(2, 1, 8, 8, generator=generator, dtype=DTYPE)
    forms = [conv_form(layer, shape) for layer, shape in zip(
        model.sparse_layers, [(2, 1, 8, 8), (2, 3, 3, 3), (2, 4, 2, 2)], strict=True)]
    assert forms == ["polyphase", "conv", "full"]
    names = [name for name, _ in model.named_parameters()]
    with torch.no_grad():  # biases below zero so that some codes are active, some not
        for name, value in model.named_parameters():
            if name.endswith("bias"):
                value.copy_(-0.05 * torch.rand(value.shape, generator=generator, dtype=DTYPE))
    params = [p.detach().clone().requires_grad_() for p in model.parameters()]
    if step is None:
        model(x)  # L of these weights, computed once: held constant below

    def run(inputs, *values):
        return functional_call(model, dict(zip(names, values, strict=True)), (inputs,))

    assert float(run(x, *params).detach().abs().sum()) > 0
    assert torch.autograd.gradcheck(run, (x.clone().requires_grad_(), *params), eps=1e-6,
                                    atol=1e-7, fast_mode=True)
