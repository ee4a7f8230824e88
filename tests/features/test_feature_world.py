"""The feature world (docs/theory.md B.1): sampling, ground truth, reference matcher, validation."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecnn.features import BLOCK_SIZE, FeatureWorld, WellPosednessWarning, preset


def _brute_force_occurrences(image: np.ndarray, templates: np.ndarray) -> set:
    """Every (template, y, x) whose window equals the template, by a plain double loop."""
    k = templates.shape[-1]
    found = set()
    for y in range(image.shape[0] - k + 1):
        for x in range(image.shape[1] - k + 1):
            for j, template in enumerate(templates):
                if np.array_equal(image[y:y + k, x:x + k], template):
                    found.add((j, y, x))
    return found


@pytest.fixture(scope="module")
def world() -> FeatureWorld:
    return preset("default")


def test_sample_shapes_and_dtypes(world: FeatureWorld) -> None:
    sample = world.sample(37, seed=2)
    assert sample.images.shape == (37, 1, 28, 28)
    assert sample.images.dtype == torch.float32
    assert sample.labels.shape == (37,) and sample.labels.dtype == torch.int64
    assert len(sample.truth) == 37
    assert float(sample.images.min()) >= 0 and float(sample.images.max()) <= 1
    assert set(sample.truth.image(0)) == {"label", "object", "anchor", "features", "parts"}


def test_same_seed_same_draw_other_seed_other_draw(world: FeatureWorld) -> None:
    first, second = world.sample(300, seed=4), world.sample(300, seed=4)
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.labels, second.labels)
    other = world.sample(300, seed=5)
    assert not torch.equal(first.images, other.images)


@pytest.mark.parametrize("n_shards", [2, 3, 7])
def test_shards_concatenate_bit_identically(world: FeatureWorld, n_shards: int) -> None:
    n = BLOCK_SIZE + 301
    full = world.sample(n, seed=9)
    shards = [world.sample(n, seed=9, shard=i, n_shards=n_shards) for i in range(n_shards)]
    assert torch.equal(torch.cat([s.images for s in shards]), full.images)
    assert torch.equal(world.sample(n, seed=9, workers=2).images, full.images)
    assert torch.equal(torch.cat([s.labels for s in shards]), full.labels)
    for name in full.truth.FIELDS:
        joined = np.concatenate([getattr(s.truth, name) for s in shards])
        assert np.array_equal(joined, getattr(full.truth, name)), name


def test_ground_truth_renders_the_clean_image_and_noise_is_bounded(world: FeatureWorld) -> None:
    sample = world.sample(400, seed=1, keep_clean=True)
    clean = world.render(sample.truth.feature_ids, sample.truth.feature_positions)
    assert sample.clean is not None
    assert np.array_equal(clean, sample.clean[:, 0].numpy())
    assert float((sample.images - sample.clean).abs().max()) <= world.noise + 1e-7
    # the object's features sit within delta of anchor + offset
    delta = world.displacement[0]
    for i in range(len(sample)):
        obj = world.objects[sample.truth.object_index[i]]
        placed = [(j, tuple(p)) for j, p, d in zip(sample.truth.feature_ids[i],
                                                   sample.truth.feature_positions[i],
                                                   sample.truth.is_distractor[i], strict=True)
                  if j >= 0 and not d]
        assert len(placed) == len(obj)
        anchor = sample.truth.anchor[i]
        for (child, offset), (j, position) in zip(obj, placed, strict=True):
            assert child == j
            assert max(abs(position[a] - anchor[a] - offset[a]) for a in (0, 1)) <= delta


def test_reference_matcher_agrees_with_brute_force(world: FeatureWorld) -> None:
    """Every accepted image holds exactly the pasted template occurrences (B.1(ii)) and a
    complete object of its own class only (B.1(iii)), checked by a plain double loop."""
    sample = world.sample(25, seed=3, keep_clean=True)
    assert sample.clean is not None
    for i in range(len(sample)):
        image = sample.clean[i, 0].numpy().astype(np.float64)
        found = _brute_force_occurrences(image, world.templates)
        ids = sample.truth.feature_ids[i]
        pasted = {(int(j), int(p[0]), int(p[1]))
                  for j, p in zip(ids, sample.truth.feature_positions[i], strict=True) if j >= 0}
        assert found == pasted
        # objects by brute force over all anchors, straight from the definition in B.1
        delta = world.displacement[0]
        present = set()
        for index, configuration in enumerate(world.objects):
            for u in itertools.product(range(-12, 28), repeat=2):
                if all(any(j == child and max(abs(y - u[0] - o[0]), abs(x - u[1] - o[1]))
                           <= delta for j, y, x in found) for child, o in configuration):
                    present.add(int(world.object_classes[index]))
                    break
        assert present == {int(sample.labels[i])}


def test_rejected_draws_are_counted() -> None:
    """Distractors that complete another object are rejected, and counted."""
    crowded = FeatureWorld(image_size=20, feature_size=3, n_features=3, n_classes=3,
                           features_per_object=1, displacement=0, noise=0.0, distractors=3)
    sample = crowded.sample(200, seed=0)
    assert sample.n_rejected > 0
    assert sample.rejections["other_object"] > 0
    assert np.array_equal(crowded.reference_labels(
        crowded.render(sample.truth.feature_ids, sample.truth.feature_positions)).sum(1),
        np.ones(200))


def test_explicit_world_and_config_round_trip(world: FeatureWorld) -> None:
    rebuilt = FeatureWorld.from_config(world.config())
    assert np.array_equal(rebuilt.templates, world.templates)
    assert rebuilt.objects == world.objects
    assert torch.equal(rebuilt.sample(50, seed=1).images, world.sample(50, seed=1).images)


@pytest.mark.parametrize("name", ["default", "stroke-digits", "natural-textures"])
def test_presets_are_well_posed(name: str) -> None:
    world = preset(name)
    assert world.zero_error_guaranteed
    sample = world.sample(64, seed=0)
    assert set(sample.labels.tolist()) <= set(range(world.n_classes))
    if name == "stroke-digits":
        assert world.n_classes == 10
    if name == "natural-textures":
        assert world.template_family == "real" or world.template_family == "natural"
        assert not np.all((world.templates == 0) | (world.templates == 1))


@pytest.mark.parametrize("family", ["binary", "bars", "real", "natural"])
def test_template_families(family: str) -> None:
    world = FeatureWorld(image_size=32, feature_size=5, n_features=4, n_classes=3,
                         features_per_object=2, noise=0.005, distractors=1,
                         template_family=family, seed=1)
    assert world.templates.shape == (4, 5, 5)
    flat = world.templates.reshape(4, -1)
    assert len({row.tobytes() for row in flat}) == 4
    assert world.templates.min() >= 0 and world.templates.max() <= 1
    if family in ("binary", "bars"):
        assert np.all((world.templates == 0) | (world.templates == 1))


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"feature_size": 1, "n_features": 2}, ValueError, "cannot be pairwise distinct"),
    ({"feature_size": 2, "n_features": 9}, ValueError, "n_features must be <= 7"),
    ({"image_size": 8}, ValueError, "objects cannot fit the canvas"),
    ({"template_family": "wavy"}, ValueError, "template_family must be one of"),
    ({"displacement": [1, 1]}, ValueError, "displacement must have levels - 1 = 1"),
    ({"noise": -0.1}, ValueError, "noise must be a finite number >= 0; got -0.1"),
    ({"n_classes": 1}, ValueError, "n_classes must be an integer >= 2; got 1"),
    ({"feature_size": 2.5}, TypeError, "feature_size must be an integer >= 1; got 2.5"),
    ({"image_size": (28,)}, ValueError,
     r"image_size must be an integer >= 1 or a pair \(height, width\) of such integers"),
    ({"image_size": (0, 28)}, ValueError, r"image_size must be an integer >= 1 or a pair"),
    ({"template_family": "bars", "n_features": 30, "feature_size": 3}, ValueError,
     "cannot be pairwise"),
])
def test_bad_configurations_raise(options: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        FeatureWorld(**options)


def test_identical_objects_of_two_classes_raise() -> None:
    templates = np.zeros((2, 3, 3))
    templates[0, :, 1] = 1
    templates[1, 1, :] = 1
    objects = [[(0, (0, 0)), (1, (0, 5))], [(1, (0, 5)), (0, (0, 0))]]
    with pytest.raises(ValueError, match=r"identical configurations \(B.1\(iv\)\)"):
        FeatureWorld.from_templates(templates, objects, image_size=20)


def test_contained_object_raises() -> None:
    templates = np.zeros((2, 3, 3))
    templates[0, :, 1] = 1
    templates[1, 1, :] = 1
    objects = [[(0, (0, 0))], [(0, (0, 0)), (1, (0, 5))]]
    with pytest.raises(ValueError, match="contains a complete configuration of object 0"):
        FeatureWorld.from_templates(templates, objects, image_size=20)


def test_identical_templates_raise() -> None:
    templates = np.ones((2, 3, 3))
    with pytest.raises(ValueError, match="templates 0 and 1 are identical"):
        FeatureWorld.from_templates(templates, [[(0, (0, 0))], [(1, (0, 0))]], image_size=20)


def test_noise_warning_and_assumption_report() -> None:
    with pytest.warns(WellPosednessWarning, match=r"feature_size\*\*2 \* noise = 0.54"):
        world = FeatureWorld(noise=0.06)
    assert world.assumptions["i"] is False
    assert not world.zero_error_guaranteed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert FeatureWorld(noise=0.05).assumptions == {"i": True, "ii": True, "iii": True,
                                                        "iv": True}


def test_sample_argument_errors(world: FeatureWorld) -> None:
    with pytest.raises(ValueError, match="shard and n_shards must be given together"):
        world.sample(10, shard=1)
    with pytest.raises(ValueError, match=r"shard must be in \[0, n_shards=2\); got 2"):
        world.sample(10, shard=2, n_shards=2)
    with pytest.raises(ValueError, match="n must be an integer >= 0; got -1"):
        world.sample(-1)


@settings(max_examples=8)
@given(n=st.integers(0, 1200), n_shards=st.integers(1, 5))
def test_sharding_law_for_any_split(n: int, n_shards: int) -> None:
    """For every n and shard count, shards concatenate to the unsharded draw."""
    world = _SHARED_WORLD
    full = world.sample(n, seed=11)
    shards = [world.sample(n, seed=11, shard=i, n_shards=n_shards) for i in range(n_shards)]
    assert sum(len(s) for s in shards) == n
    assert torch.equal(torch.cat([s.images for s in shards]), full.images)
    assert np.array_equal(np.concatenate([s.truth.anchor for s in shards]), full.truth.anchor)


_SHARED_WORLD = FeatureWorld(image_size=20, n_classes=3, features_per_object=2, distractors=1)


def test_close_real_templates_raise() -> None:
    """Real-valued templates closer than the separation Delta = 1 (L1) cannot be told apart."""
    rng = np.random.default_rng(0)
    first = rng.uniform(0.2, 0.8, size=(4, 4))
    templates = np.stack([first, first + 0.01])
    with pytest.raises(ValueError, match="templates are not well separated"):
        FeatureWorld.from_templates(templates, [[(0, (0, 0))], [(1, (0, 0))]], image_size=20,
                                    noise=0.0)


def test_drawn_objects_are_redrawn_when_one_contains_another(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    from sparsecnn.features import random_world

    draw = random_world.draw_configurations
    containing: list[list] = []

    def first_object_inside_the_second(*args: object) -> list:
        configurations = draw(*args)
        if not containing:
            # the second object is the first plus one feature: it holds a complete first object
            first = configurations[0]
            configurations[1] = [*first, (first[0][0], (0, 40))]
            containing.append(configurations[1])
        return configurations

    monkeypatch.setattr(random_world, "draw_configurations", first_object_inside_the_second)
    world = FeatureWorld(image_size=28, n_classes=2, seed=1)
    assert containing and containing[0] not in world.objects
    clean = world.sample(20, seed=0, keep_clean=True).clean
    assert world.reference_labels(clean).sum(1).max() == 1
