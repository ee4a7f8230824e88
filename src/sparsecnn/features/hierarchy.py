"""The configuration hierarchy of a feature world and its flattening into sampling tables.

docs/theory.md B.1: a level-l configuration ((c_1, o_1), ..., (c_m, o_m)) places level-(l-1)
children at offsets o_r >= 0 from its anchor; ``hierarchy[l - 2]`` lists the level-l
configurations (the last level holds the objects).  Anchor domains shrink level by level:
D_1 = (H - k + 1, W - k + 1) window positions and D_l = D_(l-1) - K_l + 1, with K_l the kernel
(span + 1) of level l.  For sampling, each object is expanded into its leaves (level-1 features)
and level-2 nodes with their nominal offsets and the displacement slot that moves each of them
at every configuration level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .world import FeatureWorld

__all__ = [
    "GAP",
    "Configuration",
    "ObjectTables",
    "anchor_domain",
    "build_object_tables",
    "expand_object",
    "kernel_extent",
    "normalize_configuration",
]

GAP = 1  # empty pixels kept between features of one object (and around distractors)

Configuration = list[tuple[int, tuple[int, int]]]
Hierarchy = Sequence[Sequence[Configuration]]
# an expanded node: (id or level, offset (y, x) from the object anchor, displacement slots)
Node = tuple[int, tuple[int, int], list[int]]


def normalize_configuration(configuration: Any, name: str) -> Configuration:
    """``[(child, (dy, dx)), ...]`` as ints, shifted so that the smallest offsets are 0."""
    try:
        entries = [(int(child), (int(offset[0]), int(offset[1])))
                   for child, offset in configuration]
    except (TypeError, ValueError, IndexError):
        raise TypeError(f"{name} must be a list of (child_id, (dy, dx)); "
                        f"got {configuration!r}") from None
    if not entries:
        raise ValueError(f"{name} must have at least one child")
    low_y = min(o[0] for _, o in entries)
    low_x = min(o[1] for _, o in entries)
    return [(c, (o[0] - low_y, o[1] - low_x)) for c, o in entries]


def kernel_extent(hierarchy: Hierarchy, level: int) -> tuple[int, int]:
    """K_l = (span + 1) of the level-``level`` configurations (level >= 2)."""
    configs = hierarchy[level - 2]
    return (max(o[0] for c in configs for _, o in c) + 1,
            max(o[1] for c in configs for _, o in c) + 1)


def anchor_domain(hierarchy: Hierarchy, feature_size: int, canvas: Sequence[int],
                  level: int) -> tuple[int, int]:
    """D_level on a canvas (H, W): D_1 = (H - k + 1, W - k + 1), D_l = D_(l-1) - K_l + 1."""
    size = (canvas[0] - feature_size + 1, canvas[1] - feature_size + 1)
    for current in range(2, level + 1):
        kernel = kernel_extent(hierarchy, current)
        size = (size[0] - kernel[0] + 1, size[1] - kernel[1] + 1)
    return size


def expand_object(hierarchy: Hierarchy, levels: int, object_index: int
                  ) -> tuple[list[Node], list[Node], list[Node]]:
    """Leaves (feature, nominal offset, displacement slots), level-2 nodes (part, offset,
    slots) and all intermediate nodes (level, offset, slots) of an object.

    The slot list holds, per configuration level t (0 = level 2), the index of the
    displacement draw applying to this node (-1 if none)."""
    leaves: list[Node] = []
    parts: list[Node] = []
    nodes: list[Node] = []
    counters = [0] * (levels - 1)

    def visit(level: int, index: int, offset: tuple[int, int], slots: list[int]) -> None:
        for child, (dy, dx) in hierarchy[level - 2][index]:
            child_slots = list(slots)
            child_slots[level - 2] = counters[level - 2]
            counters[level - 2] += 1
            position = (offset[0] + dy, offset[1] + dx)
            if level == 2:
                leaves.append((child, position, child_slots))
            else:
                if level == 3:
                    parts.append((child, position, child_slots))
                nodes.append((level - 1, position, child_slots))
                visit(level - 1, child, position, child_slots)

    visit(levels, object_index, (0, 0), [-1] * (levels - 1))
    return leaves, parts, nodes


@dataclass
class ObjectTables:
    """Per-object lookup tables for vectorized sampling (padded with -1)."""

    leaf_ids: np.ndarray        # (n_objects, n_leaves)
    leaf_offsets: np.ndarray    # (n_objects, n_leaves, 2)
    leaf_slots: np.ndarray      # (n_objects, n_leaves, levels - 1): displacement slot per level
    part_ids: np.ndarray        # (n_objects, n_parts)  (levels >= 3, else width 0)
    part_offsets: np.ndarray    # (n_objects, n_parts, 2)
    part_slots: np.ndarray      # (n_objects, n_parts, levels - 1)
    anchor_low: np.ndarray      # (n_objects, 2)
    anchor_high: np.ndarray     # (n_objects, 2)
    n_slots: list[int] = field(default_factory=list)  # displacement slots per level


def build_object_tables(world: FeatureWorld) -> ObjectTables:
    """The tables of every object of ``world``, with the anchor range u in [low, high] where
    the object fits the canvas under any displacement: every node at offset o of level l with
    reach r (sum of the tolerances displacing it) needs r <= u + o <= D_l - 1 - r."""
    expanded = [expand_object(world.hierarchy, world.levels, o) for o in range(world.n_objects)]
    n_objects = world.n_objects
    n_leaves = max(len(leaves) for leaves, _, _ in expanded)
    n_parts = max(len(parts) for _, parts, _ in expanded)
    t = world.levels - 1
    leaf_ids = np.full((n_objects, n_leaves), -1, dtype=np.int64)
    leaf_offsets = np.zeros((n_objects, n_leaves, 2), dtype=np.int64)
    leaf_slots = np.zeros((n_objects, n_leaves, t), dtype=np.int64)
    part_ids = np.full((n_objects, n_parts), -1, dtype=np.int64)
    part_offsets = np.zeros((n_objects, n_parts, 2), dtype=np.int64)
    part_slots = np.zeros((n_objects, n_parts, t), dtype=np.int64)
    low = np.zeros((n_objects, 2), dtype=np.int64)
    high = np.zeros((n_objects, 2), dtype=np.int64)
    n_slots = [0] * t
    top_domain = np.array(world.domain(world.levels))
    for o, (leaves, parts, nodes) in enumerate(expanded):
        bounds_low = [np.zeros(2, dtype=np.int64)]
        bounds_high = [top_domain - 1]
        items = [(1, offset, slots) for _, offset, slots in leaves] + nodes
        for level, offset, slots in items:
            domain = np.array(world.domain(level))
            reach = sum(world.displacement[i] for i in range(t) if slots[i] >= 0)
            offset_array = np.array(offset)
            bounds_low.append(reach - offset_array)
            bounds_high.append(domain - 1 - offset_array - reach)
        low[o] = np.max(bounds_low, axis=0)
        high[o] = np.min(bounds_high, axis=0)
        if np.any(low[o] > high[o]):
            raise ValueError(f"objects cannot fit the canvas: object {o} with displacement "
                             f"{world.displacement} needs more than image_size="
                             f"{world.image_size}")
        for s, (child, offset, slots) in enumerate(leaves):
            leaf_ids[o, s], leaf_offsets[o, s], leaf_slots[o, s] = child, offset, slots
        for s, (child, offset, slots) in enumerate(parts):
            part_ids[o, s], part_offsets[o, s], part_slots[o, s] = child, offset, slots
        for level in range(t):
            used = [slots[level] for _, _, slots in leaves + parts if slots[level] >= 0]
            n_slots[level] = max(n_slots[level], max(used, default=-1) + 1)
    return ObjectTables(leaf_ids, leaf_offsets, np.maximum(leaf_slots, 0), part_ids,
                        part_offsets, np.maximum(part_slots, 0), low, high, n_slots)
