"""Drawing a world from its seed: the templates F_1..F_N and the configuration hierarchy.

docs/theory.md B.1: templates of one family are redrawn until each is isolated (alone on the
background it matches only its own window); children of a configuration sit on a grid whose
spacing k + 2 delta + GAP keeps displaced features of one configuration from overlapping;
configurations of one level are pairwise distinct (B.1(iv)) and the hierarchy is redrawn until
no object's rendering contains another object.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .hierarchy import GAP, Configuration, normalize_configuration
from .templates import bar_templates, binary_templates, natural_templates, real_templates
from .well_posedness import check_objects_exclusive, isolation_problem

if TYPE_CHECKING:
    from .world import FeatureWorld

__all__ = ["draw_configurations", "draw_hierarchy", "draw_templates"]


def draw_templates(family: str, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """N isolated k x k templates of ``family`` (float64 holding float32-exact values)."""
    for _ in range(200):
        if family == "binary":
            if k * k < 1 or (k == 1 and n > 1):
                raise ValueError(f"n_features={n} binary templates of feature_size=1 cannot "
                                 f"be pairwise distinct (only one non-empty 1x1 template)")
            templates = binary_templates(n, k, rng)
        elif family == "bars":
            templates = bar_templates(n, k)
        elif family == "real":
            templates = real_templates(n, k, rng)
        else:
            templates = natural_templates(n, k, rng)
        # the sampler renders in float32: keep only values it can represent
        templates = templates.astype(np.float32).astype(np.float64)
        if isolation_problem(templates, 1.0) is None:
            return templates
        if family == "bars":
            break  # bars are deterministic: redrawing cannot help
    problem = isolation_problem(templates, 1.0)
    raise ValueError(f"could not draw {n} {family!r} templates of size {k} "
                     f"that never match each other: {problem}")


def draw_configurations(rng: np.random.Generator, count: int, n_children: int, size: int,
                        spacing: tuple[int, int], what: str) -> list[Configuration]:
    """``count`` distinct configurations of ``size`` children on a grid of ``spacing``."""
    grid = max(1, math.ceil(math.sqrt(size + 1))) if size > 1 else 1
    cells = [(r, c) for r in range(grid) for c in range(grid)]
    configs: list[Configuration] = []
    keys: set[tuple] = set()
    for _ in range(2000 * count):
        chosen = rng.choice(len(cells), size=size, replace=False)
        children = rng.choice(n_children, size=size, replace=size > n_children)
        configuration = normalize_configuration(
            [(int(j), (cells[c][0] * spacing[0], cells[c][1] * spacing[1]))
             for j, c in zip(children, chosen, strict=True)], what)
        key = tuple(sorted(configuration))
        if key not in keys:
            keys.add(key)
            configs.append(configuration)
            if len(configs) == count:
                return configs
    raise ValueError(f"cannot draw {count} distinct {what} configurations of {size} children "
                     f"from {n_children} child types: two would be identical (B.1(iv)); "
                     f"use more features or more children per configuration")


def draw_hierarchy(world: FeatureWorld, rng: np.random.Generator
                   ) -> tuple[list[list[Configuration]], np.ndarray]:
    """The configurations of every level (objects last) and the class of each object.

    Sets ``world.hierarchy`` and ``world.object_classes`` before each exclusivity check: the
    check reads the one and names the classes from the other in its error, which is caught here
    to redraw.
    """
    k = world.feature_size
    n_objects = world.n_classes * world.variants_per_class
    classes = np.repeat(np.arange(world.n_classes), world.variants_per_class)
    last_error: Exception | None = None
    for _ in range(50):
        hierarchy = []
        extent = (k, k)
        n_children = world.n_features
        for level in range(world.levels - 1):
            top = level == world.levels - 2
            delta = world.displacement[level]
            spacing = (extent[0] + 2 * delta + GAP, extent[1] + 2 * delta + GAP)
            count = n_objects if top else world.n_parts
            size = world.features_per_object if level == 0 else world.parts_per_object
            name = "object" if top else f"level-{level + 2} part"
            configs = draw_configurations(rng, count, n_children, size, spacing, name)
            hierarchy.append(configs)
            span = (max(o[0] for c in configs for _, o in c),
                    max(o[1] for c in configs for _, o in c))
            extent = (span[0] + extent[0] + 2 * delta, span[1] + extent[1] + 2 * delta)
            n_children = count
        try:
            world.hierarchy = hierarchy
            world.object_classes = classes
            check_objects_exclusive(world)
            return hierarchy, classes
        except ValueError as error:
            last_error = error
    raise ValueError(f"could not draw objects that never contain each other: {last_error}")
