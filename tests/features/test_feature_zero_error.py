"""docs/theory.md checks 19-21 and the certificate: zero error with margin >= 1, negative controls,
three-level hierarchies, certified radius."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch

from sparsecnn.features import (
    FeatureWorld,
    WellPosednessWarning,
    certified_radius,
    certify,
    construct,
    preset,
    worst_case_perturbation,
)

N_IMAGES = 1000
GRID = list(itertools.product([0, 1, 2], [0.0, 0.04], [4, 10], [0, 3]))


def _zero_error(world: FeatureWorld, seed: int = 0, n_images: int = N_IMAGES) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", WellPosednessWarning)
        world.sample(1)
    sample = world.sample(n_images, seed=seed, keep_clean=True)
    assert len(sample) == n_images
    # the labels are what the reference matcher finds in the clean image (one class each)
    assert sample.clean is not None
    present = world.reference_labels(sample.clean)
    assert np.array_equal(present.sum(1), np.ones(len(sample)))
    assert np.array_equal(present.argmax(1), sample.labels.numpy())
    result = certify(construct(world), world, sample)
    assert result.error_rate == 0.0
    assert float(result.margin.min()) >= 1 - 1e-9


@pytest.mark.parametrize(("delta", "noise", "n_classes", "distractors"), GRID)
def test_check19_zero_error_grid(delta: int, noise: float, n_classes: int,
                                 distractors: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", WellPosednessWarning)
        world = FeatureWorld(image_size=28, feature_size=3, n_features=6, n_classes=n_classes,
                             features_per_object=3, displacement=delta, noise=noise,
                             distractors=distractors, seed=delta + 10 * n_classes)
    _zero_error(world, seed=distractors)


@pytest.mark.parametrize(("name", "options"), [
    ("stroke-digits", {}),
    ("natural-textures", {}),
    ("default", {"template_family": "bars", "feature_size": 5, "image_size": 32,
                 "noise": 0.015}),
    ("default", {"template_family": "real", "feature_size": 4, "noise": 0.01,
                 "image_size": 32}),
    ("default", {"variants_per_class": 2, "n_features": 8, "image_size": 32}),
])
def test_check19_zero_error_other_families(name: str, options: dict) -> None:
    """Beyond check 19's grid (which has >= 1000 images each): other template families."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", WellPosednessWarning)
        world = preset(name, **options)
    _zero_error(world, n_images=300)


@pytest.mark.parametrize(("displacement", "noise", "distractors"), [
    ((1, 1), 0.04, 2), ((0, 2), 0.0, 3), ((2, 0), 0.04, 0)])
def test_check21_three_level_hierarchy(displacement: tuple, noise: float,
                                       distractors: int) -> None:
    world = FeatureWorld(levels=3, image_size=44, feature_size=3, n_features=6, n_classes=5,
                         features_per_object=2, n_parts=6, parts_per_object=2,
                         displacement=displacement, noise=noise, distractors=distractors)
    network = construct(world)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in network.hierarchy) == 2
    assert world.parts and len(world.parts[0]) == 6
    _zero_error(world)
    sample = world.sample(20, seed=1)
    assert (sample.truth.part_ids >= 0).all()


def test_check20_negative_control_close_templates_with_large_noise() -> None:
    """Two templates at Hamming distance 1 and k^2 eps >= 1/2: warned, and errors occur."""
    first = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=float)
    second = first.copy()
    second[1, 1] = 1
    objects = [[(0, (0, 0))], [(1, (0, 0))]]
    with pytest.warns(WellPosednessWarning, match=r"zero-error guarantee \(B.1\(i\)\)"):
        world = FeatureWorld.from_templates(np.stack([first, second]), objects, image_size=16,
                                            displacement=0, noise=0.25, distractors=0)
    with pytest.warns(WellPosednessWarning, match="clipped ramp has no room"):
        network = construct(world)
    result = certify(network, world, n=N_IMAGES)
    assert result.error_rate > 0
    assert result.radius == 0.0
    # control: the same templates with k^2 eps < 1/2 make no error
    calm = FeatureWorld.from_templates(np.stack([first, second]), objects, image_size=16,
                                       displacement=0, noise=0.05, distractors=0)
    assert certify(construct(calm), calm, n=N_IMAGES).error_rate == 0.0


def test_check20_negative_control_distractors_complete_other_objects() -> None:
    """Without B.1(iii) (distractors may complete another class's object) errors occur; the
    same world with the reference check makes none."""
    options = {"image_size": 24, "feature_size": 3, "n_features": 4, "n_classes": 4,
               "features_per_object": 1, "displacement": 1, "noise": 0.04, "distractors": 3}
    with pytest.warns(WellPosednessWarning, match=r"B.1\(iii\)"):
        loose = FeatureWorld(exclusive_objects=False, **options)
    assert certify(construct(loose), loose, n=N_IMAGES).error_rate > 0
    strict = FeatureWorld(**options)
    assert certify(construct(strict), strict, n=N_IMAGES).error_rate == 0.0


@pytest.fixture(scope="module")
def certified() -> tuple:
    world = preset("default")
    network = construct(world)
    sample = world.sample(400, seed=7)
    return world, network, sample


def test_certified_radius_formula(certified: tuple) -> None:
    world, network, _ = certified
    k2, k2e = 9, 9 * world.noise
    leaves, variants = 3, 1
    assert certified_radius(network) == pytest.approx((1 - 2 * k2e) / (k2 * (leaves + variants)),
                                                      rel=1e-12)


@pytest.mark.parametrize("kind", ["uniform", "sign", "worst"])
def test_predictions_stable_inside_radius(certified: tuple, kind: str) -> None:
    world, network, sample = certified
    radius = certify(network, world, sample).radius
    rho = 0.999 * radius
    generator = torch.Generator().manual_seed(3)
    if kind == "uniform":
        delta = (torch.rand(sample.images.shape, generator=generator, dtype=torch.float64)
                 * 2 - 1) * rho
    elif kind == "sign":
        delta = torch.sign(torch.rand(sample.images.shape, generator=generator,
                                      dtype=torch.float64) - 0.5) * rho
    else:
        delta = worst_case_perturbation(world, sample.images, sample.truth, rho)
    assert float(delta.abs().max()) <= rho
    perturbed = certify(network, world, sample.images.double() + delta, sample.labels)
    assert perturbed.error_rate == 0.0
    assert float(perturbed.margin.min()) > 0


def test_predictions_change_beyond_radius(certified: tuple) -> None:
    world, network, sample = certified
    radius = certify(network, world, sample).radius
    rho = 1.05 * (network.detector_gap + 9 * world.noise) / 9
    assert rho > radius
    delta = worst_case_perturbation(world, sample.images, sample.truth, rho)
    perturbed = certify(network, world, sample.images.double() + delta, sample.labels)
    assert float(perturbed.margin.max()) <= 0
    assert perturbed.error_rate > 0


def test_certify_argument_errors(certified: tuple) -> None:
    world, network, sample = certified
    with pytest.raises(TypeError, match="network must be a ConstructedNetwork"):
        certify(torch.nn.Linear(2, 2), world)
    with pytest.raises(ValueError, match="labels must be given"):
        certify(network, world, sample.images)
    with pytest.raises(ValueError, match=r"images must have shape \(n, 1, H, W\)"):
        certify(network, world, sample.images[:, 0], sample.labels)
    with pytest.raises(TypeError, match="world must be a FeatureWorld"):
        construct("default")  # type: ignore[arg-type]


def test_four_level_hierarchy_any_number_of_levels() -> None:
    world = FeatureWorld(levels=4, image_size=90, n_features=5, n_classes=3,
                         features_per_object=2, parts_per_object=2, n_parts=4, displacement=1,
                         distractors=1)
    network = construct(world)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in network.hierarchy) == 3
    _zero_error(world, n_images=200)
