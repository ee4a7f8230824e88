"""docs/theory.md checks 15-18: template detectors, gates and max-pool tolerance of B.3."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as functional
from hypothesis import given
from hypothesis import strategies as st

from sparsecnn.features import FeatureWorld, construct
from sparsecnn.features.construct import separable_max_pool
from sparsecnn.features.templates import all_binary_patches


def _world(templates: np.ndarray, noise: float, displacement: int = 0,
           image_size: int = 20) -> FeatureWorld:
    objects = [[(j, (0, 0))] for j in range(len(templates))]
    return FeatureWorld.from_templates(templates, objects, image_size=image_size,
                                       displacement=displacement, noise=noise, distractors=0)


def test_check15_exact_detector_on_all_512_patches() -> None:
    """ReLU(<2F - 1, p> - |F|_1 + 1) = 1[p = F] for every F and p in {0,1}^{3x3}."""
    patches = torch.tensor(all_binary_patches(3))  # (512, 3, 3)
    kernels = 2 * patches - 1
    scores = torch.einsum("fij,pij->fp", kernels, patches)
    detector = torch.relu(scores - patches.sum(dim=(1, 2))[:, None] + 1)
    assert torch.equal(detector, torch.eye(512, dtype=detector.dtype))


@pytest.mark.parametrize("seed", [0, 1])
def test_check15_constructed_detector_noise_free(seed: int) -> None:
    """With epsilon = 0 the constructed first stage is the exact detector 1[p = F_j]."""
    world = FeatureWorld(image_size=16, feature_size=3, n_features=6, n_classes=3,
                         features_per_object=2, noise=0.0, distractors=0, seed=seed)
    network = construct(world)
    patches = torch.tensor(all_binary_patches(3)).unsqueeze(1)
    maps = network.detection_maps(patches)[:, :, 0, 0]  # (512, N)
    expected = torch.tensor([[float(np.array_equal(p[0].numpy(), f)) for f in world.templates]
                             for p in patches], dtype=maps.dtype)
    assert torch.allclose(maps, expected, atol=1e-12, rtol=0)
    assert float(expected.sum()) == world.n_features


@pytest.mark.parametrize("noise", [0.01, 0.05, 0.0555])
def test_check16_clipped_ramp_under_noise(noise: float) -> None:
    """k^2 eps < 1/2: exactly 1 on noisy matches, exactly 0 on every binary patch at Hamming
    distance >= 1 plus noise (10^4 random trials per template, plus the worst-case signs)."""
    assert 9 * noise < 0.5
    rng = np.random.default_rng(16)
    world = FeatureWorld(image_size=16, feature_size=3, n_features=5, n_classes=2,
                         features_per_object=2, noise=noise, distractors=0, seed=3)
    network = construct(world)
    patches = all_binary_patches(3)
    for j, template in enumerate(world.templates):
        trials = 10_000
        eta = rng.uniform(-noise, noise, size=(trials, 3, 3))
        worst = -noise * (2 * template - 1)  # lowers the match score by exactly k^2 eps
        matches = np.concatenate([template + eta, (template + worst)[None]])
        others = patches[~np.all(patches == template, axis=(1, 2))]
        chosen = others[rng.integers(len(others), size=trials)]
        hamming = np.abs(chosen - template).sum(axis=(1, 2))
        assert hamming.min() >= 1
        raise_score = noise * (2 * template - 1)  # the worst case for a mismatch
        mismatches = np.concatenate([chosen + eta, others + raise_score])
        h_match = network.detection_maps(torch.tensor(matches).unsqueeze(1))[:, j, 0, 0]
        h_other = network.detection_maps(torch.tensor(mismatches).unsqueeze(1))[:, j, 0, 0]
        # "exactly" up to float64 rounding of the score s (9 terms of size <= 1 + eps: at
        # most 9 * 9 * 2^-52 by the standard sum bound), which the ramp divides by its width
        # theta_hi - theta_lo = 1 - 2 k^2 eps (0.001 at eps = 0.0555)
        tolerance = 9 * 9 * torch.finfo(torch.float64).eps / network.detector_gap
        assert torch.allclose(h_match, torch.ones_like(h_match), atol=tolerance, rtol=0)
        assert torch.allclose(h_other, torch.zeros_like(h_other), atol=tolerance, rtol=0)


def test_check16_real_valued_l1_detector() -> None:
    """The L1 detector ReLU ramp of d_j = sum |p - F_j|: 1 on noisy copies, 0 at distance >=
    Delta (checked against a NumPy L1 distance)."""
    rng = np.random.default_rng(5)
    world = FeatureWorld(image_size=20, feature_size=4, n_features=4, n_classes=2,
                         features_per_object=2, noise=0.01, distractors=0,
                         template_family="real", seed=2)
    network = construct(world)
    for j, template in enumerate(world.templates):
        noisy = template + rng.uniform(-0.01, 0.01, size=(2000, 4, 4))
        h = network.detection_maps(torch.tensor(noisy).unsqueeze(1))[:, j, 0, 0]
        assert torch.allclose(h, torch.ones_like(h), atol=1e-12, rtol=0)
        far = rng.random((2000, 4, 4))
        distance = np.abs(far - template).sum(axis=(1, 2))
        keep = distance >= world.separation
        h_far = network.detection_maps(torch.tensor(far[keep]).unsqueeze(1))[:, j, 0, 0]
        assert keep.sum() > 1000
        assert float(h_far.abs().max()) <= 1e-12


def test_check17_gates_exact_on_binary_inputs() -> None:
    for a, b in itertools.product((0.0, 1.0), repeat=2):
        ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
        assert float(torch.relu(ta + tb - 1)) == float(a and b)
        assert float(ta + tb - torch.relu(ta + tb - 1)) == float(a or b)
        assert float(ta + torch.relu(tb - ta)) == max(a, b)


@given(st.floats(-10, 10), st.floats(-10, 10))
def test_check17_max_gate_for_all_reals(a: float, b: float) -> None:
    ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    assert float(ta + torch.relu(tb - ta)) == pytest.approx(max(a, b), abs=1e-12)


def test_check17_constructed_and_layer_is_logical_and() -> None:
    """The AND convolution of the constructed network on every pattern of {0,1}^m at the
    object's offsets equals the logical AND."""
    world = FeatureWorld(image_size=28, feature_size=3, n_features=6, n_classes=4,
                         features_per_object=3, displacement=1, noise=0.0, distractors=0)
    network = construct(world)
    conv = network.hierarchy[1]
    kernel = world.kernel_extent(2)
    assert conv.dilation[0] > 1  # random offsets lie on a lattice: stored dilated
    for index, configuration in enumerate(world.objects):
        for bits in itertools.product((0.0, 1.0), repeat=len(configuration)):
            maps = torch.zeros((1, world.n_features, *kernel), dtype=torch.float64)
            for bit, (child, (dy, dx)) in zip(bits, configuration, strict=True):
                maps[0, child, dy, dx] = bit
            out = torch.relu(conv(maps))[0, index, 0, 0]
            assert float(out) == float(all(bits))


@pytest.mark.parametrize("delta", [0, 1, 2])
def test_check18_maxpool_tolerance(delta: int) -> None:
    """P_j(u) = 1 iff feature j occurs within ||.||_inf <= delta of u: every displacement in
    [-delta-1, delta+1]^2."""
    world = FeatureWorld(image_size=24, feature_size=3, n_features=4, n_classes=2,
                         features_per_object=2, displacement=delta, noise=0.0, distractors=0)
    network = construct(world)
    pool = network.hierarchy[0]
    j = 2
    canvas = np.zeros((1, 1, 24, 24))
    v = (10, 11)
    canvas[0, 0, v[0]:v[0] + 3, v[1]:v[1] + 3] = world.templates[j]
    pooled = pool(network.detection_maps(torch.tensor(canvas)))[0, j]
    for dy, dx in itertools.product(range(-delta - 1, delta + 2), repeat=2):
        expected = float(max(abs(dy), abs(dx)) <= delta)
        assert float(pooled[v[0] + dy, v[1] + dx]) == pytest.approx(expected, abs=1e-12)
    # the fast path of the forward pass equals nn.MaxPool2d exactly
    maps = network.detection_maps(torch.tensor(canvas))
    reference = functional.max_pool2d(maps, 2 * delta + 1, stride=1, padding=delta)
    assert torch.equal(separable_max_pool(maps, delta), reference)
    noisy = torch.randn(3, 4, 11, 13, dtype=torch.float64)
    assert torch.equal(separable_max_pool(noisy, delta),
                       functional.max_pool2d(noisy, 2 * delta + 1, stride=1, padding=delta))
