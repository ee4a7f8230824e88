"""Well-posedness of a feature world (docs/theory.md B.1(i)-(iv)) and the reference matcher on it.

(i) k^2 epsilon < Delta/2 with Delta = 1 (the separation of the templates); (ii) no window
other than a pasted one matches a template; (iii) no image holds a complete configuration of
another class; (iv) objects of different classes are distinct configurations.  At construction
a world checks that its templates are isolated (alone on the background, a template matches
only its own window), that its objects fit the canvas and are distinct (iv), and that no
object's canonical rendering contains another object; (i) and a disabled (iii) are reported as
:class:`WellPosednessWarning`.  Per image, (ii) and (iii) are enforced by :func:`match_images`
(the independent reference matcher of :mod:`.reference`).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from .hierarchy import anchor_domain, expand_object
from .reference import Occurrences, configuration_occurrences, template_occurrences
from .templates import is_binary

if TYPE_CHECKING:
    from .world import FeatureWorld

__all__ = [
    "BINARY_FAMILIES",
    "WellPosednessWarning",
    "assumption_problems",
    "check_objects_exclusive",
    "find_objects",
    "isolation_problem",
    "match_images",
    "template_distances",
    "validate_world",
]

BINARY_FAMILIES = ("binary", "bars")


class WellPosednessWarning(UserWarning):
    """An assumption of B.1 fails, so the zero-error guarantee of B.2 does not hold."""


def template_distances(templates: np.ndarray) -> np.ndarray:
    """The (N, N) matrix of L1 distances sum |F_i - F_j| between templates."""
    flat = templates.reshape(len(templates), -1)
    return np.abs(flat[:, None] - flat[None]).sum(-1)


def isolation_problem(templates: np.ndarray, separation: float) -> str | None:
    """Why a template alone on the background would match another window (or None)."""
    k = templates.shape[-1]
    n = len(templates)
    distances = template_distances(templates)
    for i in range(n):
        for j in range(i + 1, n):
            if distances[i, j] == 0:
                return f"templates {i} and {j} are identical (they must be pairwise distinct)"
    canvas = np.zeros((n, 3 * k, 3 * k))
    canvas[:, k:2 * k, k:2 * k] = templates
    found, near = template_occurrences(canvas, templates, binary=is_binary(templates),
                                       separation=separation)
    wrong = (found.item != found.image) | (found.low_y != k) | (found.low_x != k)
    if wrong.any() or len(found) != n:
        index = int(np.flatnonzero(wrong)[0]) if wrong.any() else 0
        return (f"template {int(found.image[index])} alone on the background also matches "
                f"template {int(found.item[index])} at a shifted window")
    if near.any():
        return (f"template {int(np.flatnonzero(near)[0])} alone on the background is within "
                f"L1 distance {separation} of a template at a shifted window")
    return None


def match_images(world: FeatureWorld, clean: np.ndarray
                 ) -> tuple[Occurrences, np.ndarray, Occurrences]:
    """The reference matcher on clean images (n, H, W) of any size: template occurrences,
    the images holding a near (non-exact) occurrence, and object occurrences (anchor boxes)."""
    found, near = template_occurrences(clean, world.templates,
                                       binary=world.template_family in BINARY_FAMILIES,
                                       separation=world.separation)
    occurrences = found
    for level in range(2, world.levels + 1):
        domain = anchor_domain(world.hierarchy, world.feature_size, clean.shape[1:], level)
        occurrences = configuration_occurrences(occurrences, world.hierarchy[level - 2],
                                                world.displacement[level - 2], domain)
    return found, near, occurrences


def find_objects(world: FeatureWorld, clean: np.ndarray) -> Occurrences:
    """Object occurrences (anchor boxes) in clean images by the reference matcher."""
    return match_images(world, clean)[2]


def check_objects_exclusive(world: FeatureWorld) -> None:
    """No object's canonical rendering (no displacement) contains another object."""
    n_objects = len(world.hierarchy[-1])
    nodes = [expand_object(world.hierarchy, world.levels, o) for o in range(n_objects)]
    k = world.feature_size
    size_y = max(max(p[1][0] for p in leaves) for leaves, _, _ in nodes)
    size_x = max(max(p[1][1] for p in leaves) for leaves, _, _ in nodes)
    pad = 2 * k + 2 * sum(world.displacement)
    canvas = np.zeros((n_objects, size_y + k + 2 * pad, size_x + k + 2 * pad))
    for index, (leaves, _, _) in enumerate(nodes):
        for feature, (y, x), _ in leaves:
            canvas[index, pad + y:pad + y + k, pad + x:pad + x + k] = world.templates[feature]
    found = find_objects(world, canvas)
    for image, item in zip(found.image, found.item, strict=True):
        if image != item:
            raise ValueError(
                f"object {image} (class {world.object_classes[image]}) contains a complete "
                f"configuration of object {item} (class {world.object_classes[item]}): its "
                f"images can never satisfy B.1(iii)")


def validate_world(world: FeatureWorld) -> None:
    """Raise on a world that cannot be sampled well-posed; warn on B.1(i)/(iii) failures.

    Called from ``FeatureWorld.__init__`` only: the warnings' ``stacklevel`` points at the
    caller of the constructor.
    """
    problem = isolation_problem(world.templates, 1.0)
    if problem is not None:
        raise ValueError(f"templates are not well separated: {problem}")
    for level in range(2, world.levels + 1):
        size = world.domain(level)
        if min(size) < 1:
            raise ValueError(f"objects cannot fit the canvas: level-{level} configurations "
                             f"span {world.kernel_extent(level)} anchor positions but only "
                             f"{world.domain(level - 1)} are available in an image of size "
                             f"{world.image_size}")
    keys: dict[tuple, int] = {}
    for index, configuration in enumerate(world.objects):
        key = tuple(sorted(configuration))
        if key in keys and world.object_classes[keys[key]] != world.object_classes[index]:
            raise ValueError(f"objects {keys[key]} and {index} of classes "
                             f"{world.object_classes[keys[key]]} and "
                             f"{world.object_classes[index]} are identical configurations "
                             f"(B.1(iv))")
        keys.setdefault(key, index)
    check_objects_exclusive(world)
    for text in assumption_problems(world).values():
        warnings.warn(text, WellPosednessWarning, stacklevel=3)


def assumption_problems(world: FeatureWorld) -> dict[str, str]:
    """Which of B.1(i)-(iv) fail, with the reason (empty dict: all hold)."""
    problems = {}
    k2e = world.feature_size ** 2 * world.noise
    if k2e >= world.separation / 2:
        distances = template_distances(world.templates)
        distances[np.diag_indices(world.n_features)] = np.inf
        i, j = np.unravel_index(np.argmin(distances), distances.shape)
        problems["i"] = (
            f"feature_size**2 * noise = {k2e:.4g} >= {world.separation / 2:.4g} (half the "
            f"separation {world.separation:.4g}): a noisy window can be confused with a "
            f"template at distance {world.separation:.4g} (closest pair: templates {i} and "
            f"{j} at L1 distance {distances[i, j]:.4g}); the zero-error guarantee "
            f"(B.1(i)) does not hold")
    if not world.exclusive_objects:
        problems["iii"] = ("exclusive_objects=False: images may contain a complete object of "
                           "another class; the zero-error guarantee (B.1(iii)) does not hold")
    return problems
