"""The feature world: an image model of classification by feature extraction.

THEORY.md B.1 ([P2] Nandakumar, Tagade, Liu, arXiv 2307.00919; definitions [reconstructed]).

* Level-1 features are k x k templates F_1..F_N; F_j *occurs at u* if I[u:u+k] = F_j + eta,
  ||eta||_inf <= epsilon.
* A level-l feature (l >= 2) is a configuration ((c_1, o_1), ..., (c_m, o_m)) of level-(l-1)
  features with offsets o_r >= 0; it occurs at anchor u with tolerance delta_l if every child
  c_r occurs within ||v_r - (u + o_r)||_inf <= delta_l.  Level 2 holds *objects* when
  ``levels=2`` (features -> objects) and *parts* when ``levels=3`` (features -> parts ->
  objects).  Classes are OR over their objects (variants), objects AND over their children.
* Generation: sample a class and one of its objects, an anchor u where everything fits, an
  independent displacement in [-delta_l, delta_l]^2 for every child at every level, paste the
  templates on the zero background, add up to ``distractors`` extra features at random places,
  then add noise eta ~ U[-epsilon, epsilon] per pixel and clip to [0, 1] (clipping never
  increases |eta|).
* Well-posedness B.1(i)-(iv): (i) k^2 epsilon < Delta/2 with Delta = 1 (the Hamming separation
  of binary templates; real-valued templates are validated to be >= 1 in L1 from every other
  window, and images with a closer window are rejected); (ii) pasted features never overlap
  and no window other than a pasted one matches a template; (iii) no image holds a complete
  configuration of another class; (iv) objects of different classes are distinct
  configurations.  (ii) and (iii) are enforced per image by the independent reference matcher
  (:mod:`.reference`); rejected draws are resampled and counted.

Sampling is vectorized and deterministic: images come in blocks of ``BLOCK_SIZE``; block b is
drawn from ``SeedSequence([world seed, sample seed, b])``, so any shard of a draw is a slice of
the same blocks and shards concatenate bit-identically to the unsharded draw.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .reference import Occurrences, configuration_occurrences, template_occurrences
from .templates import (
    TEMPLATE_FAMILIES,
    bar_templates,
    binary_templates,
    is_binary,
    natural_templates,
    real_templates,
)

__all__ = [
    "BLOCK_SIZE",
    "PRESETS",
    "Configuration",
    "FeatureSample",
    "FeatureWorld",
    "GroundTruth",
    "WellPosednessWarning",
    "preset",
]

BLOCK_SIZE = 512
GAP = 1  # empty pixels kept between features of one object (and around distractors)

Configuration = list[tuple[int, tuple[int, int]]]


class WellPosednessWarning(UserWarning):
    """An assumption of B.1 fails, so the zero-error guarantee of B.2 does not hold."""


def _int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _pair(value: Any, name: str, minimum: int) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an integer or a pair (height, width); got {value!r}")
        return (_int(value[0], name, minimum), _int(value[1], name, minimum))
    number = _int(value, name, minimum)
    return (number, number)


@dataclass
class GroundTruth:
    """Ground truth of generated images (numpy arrays, one row per image).

    ``feature_ids[i, s]`` is the template id pasted in slot s of image i (-1: empty slot),
    ``feature_positions[i, s]`` its window position (y, x) (top-left pixel), ``is_distractor``
    marks the extra features; ``anchor`` is the object anchor u, ``object_index`` the object
    (variant) drawn, ``part_ids``/``part_anchors`` the level-2 nodes of three-level worlds.
    """

    labels: np.ndarray
    object_index: np.ndarray
    anchor: np.ndarray
    feature_ids: np.ndarray
    feature_positions: np.ndarray
    is_distractor: np.ndarray
    part_ids: np.ndarray
    part_anchors: np.ndarray

    FIELDS = ("labels", "object_index", "anchor", "feature_ids", "feature_positions",
              "is_distractor", "part_ids", "part_anchors")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: Any) -> GroundTruth:
        return GroundTruth(*(getattr(self, name)[index] for name in self.FIELDS))

    def image(self, index: int) -> dict[str, Any]:
        """The ground truth of one image as plain Python values."""
        ids = self.feature_ids[index]
        keep = ids >= 0
        features = [{"id": int(j), "position": [int(p[0]), int(p[1])], "distractor": bool(d)}
                    for j, p, d in zip(ids[keep], self.feature_positions[index][keep],
                                       self.is_distractor[index][keep], strict=True)]
        parts = [{"id": int(j), "anchor": [int(p[0]), int(p[1])]}
                 for j, p in zip(self.part_ids[index], self.part_anchors[index], strict=True)
                 if j >= 0]
        return {"label": int(self.labels[index]), "object": int(self.object_index[index]),
                "anchor": [int(a) for a in self.anchor[index]], "features": features,
                "parts": parts}

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: np.ascontiguousarray(getattr(self, name)) for name in self.FIELDS}

    @classmethod
    def concatenate(cls, parts: Sequence[GroundTruth]) -> GroundTruth:
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in cls.FIELDS))


@dataclass
class FeatureSample:
    """Images drawn from a :class:`FeatureWorld` with their labels and ground truth.

    ``images`` (n, 1, H, W) float32 in [0, 1], ``labels`` (n,) int64 (torch tensors),
    ``truth`` a :class:`GroundTruth`; ``clean`` the noise-free images when requested;
    ``n_rejected`` draws the reference matcher rejected (over the blocks generated), by reason.
    """

    images: torch.Tensor
    labels: torch.Tensor
    truth: GroundTruth
    n_rejected: int
    rejections: dict[str, int]
    start: int
    stop: int
    clean: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: slice) -> FeatureSample:
        """The images ``index`` (a slice) with their labels and ground truth."""
        if not isinstance(index, slice):
            raise TypeError(f"index must be a slice; got {type(index).__name__}")
        start, stop, _ = index.indices(len(self))
        return FeatureSample(images=self.images[index], labels=self.labels[index],
                             truth=self.truth[index], n_rejected=self.n_rejected,
                             rejections=self.rejections, start=self.start + start,
                             stop=self.start + max(stop, start),
                             clean=None if self.clean is None else self.clean[index])


@dataclass
class _Tables:
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


class FeatureWorld:
    """The image model of THEORY.md B.1 with templates, hierarchy, noise and distractors.

    Args:
        image_size: H (= W) or (H, W).
        feature_size: k, the template side.
        n_features: N, the number of level-1 templates.
        n_classes: C.
        features_per_object: m, children of each level-2 configuration (the objects when
            ``levels=2``, the parts when ``levels=3``).
        variants_per_class: objects per class (OR over variants).
        levels: 2 (features -> objects) or more (features -> parts -> ... -> objects).
        displacement: delta, one value for every level or one per configuration level
            (``levels - 1`` values; the first is the tolerance of level 2).
        noise: epsilon, the L-infinity bound of the additive noise.
        distractors: maximum number of extra features per image (uniform in 0..distractors).
        template_family: ``"binary"``, ``"bars"``, ``"real"`` or ``"natural"``.
        seed: draws templates and configurations; also part of every sampling seed.
        n_parts: configurations at each intermediate level (default ``n_features``).
        parts_per_object: children of configurations above level 2 (default 2).
        exclusive_objects: enforce B.1(iii) per image (``False`` only for negative controls).
        templates, objects, object_classes, parts: explicit world (see :meth:`from_templates`).
    """

    def __init__(self, *, image_size: int | tuple[int, int] = 28, feature_size: int = 3,
                 n_features: int = 6, n_classes: int = 4, features_per_object: int = 3,
                 variants_per_class: int = 1, levels: int = 2,
                 displacement: int | Sequence[int] = 1, noise: float = 0.04,
                 distractors: int = 2, template_family: str = "binary", seed: int = 0,
                 n_parts: int | None = None, parts_per_object: int = 2,
                 exclusive_objects: bool = True, templates: Any = None,
                 objects: Sequence[Configuration] | None = None,
                 object_classes: Sequence[int] | None = None,
                 parts: Sequence[Sequence[Configuration]] | None = None) -> None:
        self.image_size = _pair(image_size, "image_size", 1)
        self.seed = _int(seed, "seed", 0)
        self.levels = _int(levels, "levels", 2)
        self.distractors = _int(distractors, "distractors", 0)
        self.exclusive_objects = bool(exclusive_objects)
        # Delta: binary windows differ from a template by Hamming (= L1) distance >= 1; real
        # templates are validated to be >= 1 (L1) from every other window of an isolated
        # template, and the reference matcher rejects images with a window closer than that.
        self.separation = 1.0
        try:
            noise = float(noise)
        except (TypeError, ValueError):
            raise TypeError(f"noise must be a real number >= 0; got {noise!r}") from None
        if not math.isfinite(noise) or noise < 0:
            raise ValueError(f"noise must be a finite number >= 0; got {noise!r}")
        self.noise = noise
        if isinstance(displacement, (int, np.integer)) and not isinstance(displacement, bool):
            deltas = [int(displacement)] * (self.levels - 1)
        elif isinstance(displacement, (list, tuple)):
            deltas = list(displacement)
        else:
            raise TypeError(f"displacement must be an integer or a sequence of {self.levels - 1} "
                            f"integers; got {displacement!r}")
        if len(deltas) != self.levels - 1:
            raise ValueError(f"displacement must have levels - 1 = {self.levels - 1} values "
                             f"(one per configuration level); got {displacement!r}")
        self.displacement = tuple(_int(d, "displacement", 0) for d in deltas)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x7EA7]))

        if templates is not None:
            self._init_explicit(templates, objects, object_classes, parts)
        else:
            if template_family not in TEMPLATE_FAMILIES:
                raise ValueError(f"template_family must be one of {TEMPLATE_FAMILIES}; "
                                 f"got {template_family!r}")
            self.template_family = template_family
            self.feature_size = _int(feature_size, "feature_size", 1)
            self.n_features = _int(n_features, "n_features", 1)
            self.n_classes = _int(n_classes, "n_classes", 2)
            self.features_per_object = _int(features_per_object, "features_per_object", 1)
            self.variants_per_class = _int(variants_per_class, "variants_per_class", 1)
            self.n_parts = self.n_features if n_parts is None else _int(n_parts, "n_parts", 1)
            self.parts_per_object = _int(parts_per_object, "parts_per_object", 1)
            if self.feature_size > min(self.image_size):
                raise ValueError(f"feature_size must be <= image_size {self.image_size}; "
                                 f"got {self.feature_size}")
            self.templates = self._draw_templates(rng)
            self.hierarchy, self.object_classes = self._draw_hierarchy(rng)
        self.templates.setflags(write=False)
        self._validate()
        self._tables = self._build_tables()

    # ------------------------------------------------------------------ construction
    def _init_explicit(self, templates: Any, objects: Any, object_classes: Any,
                       parts: Any) -> None:
        array = np.asarray(templates, dtype=np.float64)
        if array.ndim != 3 or array.shape[1] != array.shape[2] or len(array) == 0:
            raise ValueError(f"templates must have shape (n_features, k, k); "
                             f"got {array.shape}")
        if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 1:
            raise ValueError("templates must have finite values in [0, 1]")
        if objects is None or len(objects) == 0:
            raise ValueError("objects must be given with templates: a list of configurations "
                             "[(child_id, (dy, dx)), ...]")
        self.templates = array.astype(np.float32).astype(np.float64)
        self.template_family = "binary" if is_binary(self.templates) else "real"
        self.feature_size = array.shape[1]
        self.n_features = len(array)
        hierarchy = [list(level) for level in (parts or [])] + [list(objects)]
        if len(hierarchy) != self.levels - 1:
            raise ValueError(f"levels={self.levels} needs {self.levels - 2} intermediate "
                             f"level(s) in parts; got {len(hierarchy) - 1}")
        self.hierarchy = [[self._normalize(c, f"configuration {i} of level {level + 2}")
                           for i, c in enumerate(configs)]
                          for level, configs in enumerate(hierarchy)]
        n_children = self.n_features
        for level, configs in enumerate(self.hierarchy):
            for index, configuration in enumerate(configs):
                for child, _ in configuration:
                    if not 0 <= child < n_children:
                        raise ValueError(f"configuration {index} of level {level + 2} refers to "
                                         f"child {child}; expected ids in [0, {n_children})")
            n_children = len(configs)
        classes = (np.arange(len(objects)) if object_classes is None
                   else np.asarray(object_classes, dtype=np.int64))
        if classes.shape != (len(objects),):
            raise ValueError(f"object_classes must have one class per object ({len(objects)}); "
                             f"got shape {classes.shape}")
        uniques = np.unique(classes)
        if classes.min() < 0 or not np.array_equal(uniques, np.arange(len(uniques))):
            raise ValueError(f"object_classes must use every class 0..C-1; got {sorted(uniques)}")
        self.object_classes = classes
        self.n_classes = len(uniques)
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2; got {self.n_classes}")
        counts = np.bincount(classes)
        self.variants_per_class = int(counts.max())
        sizes = {len(c) for c in self.hierarchy[0]}
        self.features_per_object = max(sizes)
        self.n_parts = len(self.hierarchy[0]) if self.levels >= 3 else self.n_features
        self.parts_per_object = max(len(c) for c in self.hierarchy[-1])

    @staticmethod
    def _normalize(configuration: Any, name: str) -> Configuration:
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

    @classmethod
    def from_templates(cls, templates: Any, objects: Sequence[Configuration], *,
                       object_classes: Sequence[int] | None = None,
                       parts: Sequence[Sequence[Configuration]] | None = None,
                       **options: Any) -> FeatureWorld:
        """A world from explicit templates (N, k, k) and objects [(child, (dy, dx)), ...].

        ``object_classes[i]`` is the class of object i (default: one object per class);
        ``parts`` lists the intermediate levels' configurations for ``levels >= 3``.
        ``options`` are ``image_size``, ``displacement``, ``noise``, ``distractors``, ``seed``,
        ``exclusive_objects``.
        """
        levels = 2 + (len(parts) if parts else 0)
        return cls(templates=templates, objects=objects, object_classes=object_classes,
                   parts=parts, levels=levels, **options)

    def _draw_templates(self, rng: np.random.Generator) -> np.ndarray:
        k, n = self.feature_size, self.n_features
        for _ in range(200):
            if self.template_family == "binary":
                if k * k < 1 or (k == 1 and n > 1):
                    raise ValueError(f"n_features={n} binary templates of feature_size=1 cannot "
                                     f"be pairwise distinct (only one non-empty 1x1 template)")
                templates = binary_templates(n, k, rng)
            elif self.template_family == "bars":
                templates = bar_templates(n, k)
            elif self.template_family == "real":
                templates = real_templates(n, k, rng)
            else:
                templates = natural_templates(n, k, rng)
            templates = templates.astype(np.float32).astype(np.float64)
            if self._isolation_problem(templates, 1.0) is None:
                return templates
            if self.template_family == "bars":
                break
        problem = self._isolation_problem(templates, 1.0)
        raise ValueError(f"could not draw {n} {self.template_family!r} templates of size {k} "
                         f"that never match each other: {problem}")

    def _draw_configurations(self, rng: np.random.Generator, count: int, n_children: int,
                             size: int, spacing: tuple[int, int], what: str) -> list:
        grid = max(1, math.ceil(math.sqrt(size + 1))) if size > 1 else 1
        cells = [(r, c) for r in range(grid) for c in range(grid)]
        configs: list[Configuration] = []
        keys: set[tuple] = set()
        for _ in range(2000 * count):
            chosen = rng.choice(len(cells), size=size, replace=False)
            children = rng.choice(n_children, size=size, replace=size > n_children)
            configuration = self._normalize(
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

    def _draw_hierarchy(self, rng: np.random.Generator) -> tuple[list, np.ndarray]:
        k = self.feature_size
        n_objects = self.n_classes * self.variants_per_class
        classes = np.repeat(np.arange(self.n_classes), self.variants_per_class)
        last_error: Exception | None = None
        for _ in range(50):
            hierarchy = []
            extent = (k, k)
            n_children = self.n_features
            for level in range(self.levels - 1):
                top = level == self.levels - 2
                delta = self.displacement[level]
                spacing = (extent[0] + 2 * delta + GAP, extent[1] + 2 * delta + GAP)
                count = n_objects if top else self.n_parts
                size = self.features_per_object if level == 0 else self.parts_per_object
                name = "object" if top else f"level-{level + 2} part"
                configs = self._draw_configurations(rng, count, n_children, size, spacing, name)
                hierarchy.append(configs)
                span = (max(o[0] for c in configs for _, o in c),
                        max(o[1] for c in configs for _, o in c))
                extent = (span[0] + extent[0] + 2 * delta, span[1] + extent[1] + 2 * delta)
                n_children = count
            try:
                self.hierarchy = hierarchy
                self._check_objects_exclusive()
                return hierarchy, classes
            except ValueError as error:
                last_error = error
        raise ValueError(f"could not draw objects that never contain each other: {last_error}")

    # ------------------------------------------------------------------ validation
    @property
    def objects(self) -> list[Configuration]:
        """The top-level configurations (one per class variant)."""
        return self.hierarchy[-1]

    @property
    def parts(self) -> list[list[Configuration]]:
        """The intermediate levels' configurations (empty for two-level worlds)."""
        return self.hierarchy[:-1]

    @property
    def n_objects(self) -> int:
        return len(self.objects)

    @property
    def window_domain(self) -> tuple[int, int]:
        """Positions of k x k windows: (H - k + 1, W - k + 1)."""
        return (self.image_size[0] - self.feature_size + 1,
                self.image_size[1] - self.feature_size + 1)

    def kernel_extent(self, level: int) -> tuple[int, int]:
        """Kernel (span + 1) of the AND convolution of configuration level ``level`` (>= 2)."""
        configs = self.hierarchy[level - 2]
        return (max(o[0] for c in configs for _, o in c) + 1,
                max(o[1] for c in configs for _, o in c) + 1)

    def domain(self, level: int) -> tuple[int, int]:
        """Anchor domain of level ``level``: D_1 = windows, D_l = D_(l-1) - K_l + 1."""
        size = self.window_domain
        for current in range(2, level + 1):
            kernel = self.kernel_extent(current)
            size = (size[0] - kernel[0] + 1, size[1] - kernel[1] + 1)
        return size

    @property
    def detector_norm(self) -> float:
        """||K_j||_1 bound on how much an L-inf perturbation rho moves a detector score: k^2."""
        return float(self.feature_size ** 2)

    def _isolation_problem(self, templates: np.ndarray, separation: float) -> str | None:
        """Why a template alone on the background would match another window (or None)."""
        k = templates.shape[-1]
        n = len(templates)
        flat = templates.reshape(n, -1)
        distances = np.abs(flat[:, None] - flat[None]).sum(-1)
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

    def _check_objects_exclusive(self) -> None:
        """No object's canonical rendering (no displacement) contains another object."""
        n_objects = len(self.hierarchy[-1])
        nodes = [self._expand(o) for o in range(n_objects)]
        k = self.feature_size
        size_y = max(max(p[1][0] for p in leaves) for leaves, _, _ in nodes)
        size_x = max(max(p[1][1] for p in leaves) for leaves, _, _ in nodes)
        pad = 2 * k + 2 * sum(self.displacement)
        canvas = np.zeros((n_objects, size_y + k + 2 * pad, size_x + k + 2 * pad))
        for index, (leaves, _, _) in enumerate(nodes):
            for feature, (y, x), _ in leaves:
                canvas[index, pad + y:pad + y + k, pad + x:pad + x + k] = self.templates[feature]
        found = self._find_objects(canvas)
        for image, item in zip(found.image, found.item, strict=True):
            if image != item:
                raise ValueError(
                    f"object {image} (class {self.object_classes[image]}) contains a complete "
                    f"configuration of object {item} (class {self.object_classes[item]}): its "
                    f"images can never satisfy B.1(iii)")

    def _validate(self) -> None:
        problem = self._isolation_problem(self.templates, 1.0)
        if problem is not None:
            raise ValueError(f"templates are not well separated: {problem}")
        for level in range(2, self.levels + 1):
            size = self.domain(level)
            if min(size) < 1:
                raise ValueError(f"objects cannot fit the canvas: level-{level} configurations "
                                 f"span {self.kernel_extent(level)} anchor positions but only "
                                 f"{self.domain(level - 1)} are available in an image of size "
                                 f"{self.image_size}")
        keys: dict[tuple, int] = {}
        for index, configuration in enumerate(self.objects):
            key = tuple(sorted(configuration))
            if key in keys and self.object_classes[keys[key]] != self.object_classes[index]:
                raise ValueError(f"objects {keys[key]} and {index} of classes "
                                 f"{self.object_classes[keys[key]]} and "
                                 f"{self.object_classes[index]} are identical configurations "
                                 f"(B.1(iv))")
            keys.setdefault(key, index)
        self._check_objects_exclusive()
        problems = self.assumption_problems()
        for text in problems.values():
            warnings.warn(text, WellPosednessWarning, stacklevel=3)

    def assumption_problems(self) -> dict[str, str]:
        """Which of B.1(i)-(iv) fail, with the reason (empty dict: all hold)."""
        problems = {}
        k2e = self.feature_size ** 2 * self.noise
        if k2e >= self.separation / 2:
            flat = self.templates.reshape(self.n_features, -1)
            distances = np.abs(flat[:, None] - flat[None]).sum(-1)
            distances[np.diag_indices(self.n_features)] = np.inf
            i, j = np.unravel_index(np.argmin(distances), distances.shape)
            problems["i"] = (
                f"feature_size**2 * noise = {k2e:.4g} >= {self.separation / 2:.4g} (half the "
                f"separation {self.separation:.4g}): a noisy window can be confused with a "
                f"template at distance {self.separation:.4g} (closest pair: templates {i} and "
                f"{j} at L1 distance {distances[i, j]:.4g}); the zero-error guarantee "
                f"(B.1(i)) does not hold")
        if not self.exclusive_objects:
            problems["iii"] = ("exclusive_objects=False: images may contain a complete object of "
                               "another class; the zero-error guarantee (B.1(iii)) does not hold")
        return problems

    @property
    def assumptions(self) -> dict[str, bool]:
        """Whether B.1(i)-(iv) hold: (ii) and (iii) are enforced per image by the reference
        matcher, (iv) is validated at construction."""
        problems = self.assumption_problems()
        return {"i": "i" not in problems, "ii": True, "iii": "iii" not in problems, "iv": True}

    @property
    def zero_error_guaranteed(self) -> bool:
        return all(self.assumptions.values())

    # ------------------------------------------------------------------ hierarchy tables
    def _expand(self, object_index: int) -> tuple[list, list, list]:
        """Leaves (feature, nominal offset, displacement slots), level-2 nodes (part, offset,
        slots) and all intermediate nodes (level, offset, slots) of an object.

        The slot list holds, per configuration level t (0 = level 2), the index of the
        displacement draw applying to this node (-1 if none)."""
        leaves: list = []
        parts: list = []
        nodes: list = []
        counters = [0] * (self.levels - 1)

        def visit(level: int, index: int, offset: tuple[int, int], slots: list[int]) -> None:
            for child, (dy, dx) in self.hierarchy[level - 2][index]:
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

        visit(self.levels, object_index, (0, 0), [-1] * (self.levels - 1))
        return leaves, parts, nodes

    def _build_tables(self) -> _Tables:
        expanded = [self._expand(o) for o in range(self.n_objects)]
        n_leaves = max(len(leaves) for leaves, _, _ in expanded)
        n_parts = max(len(parts) for _, parts, _ in expanded)
        t = self.levels - 1
        leaf_ids = np.full((self.n_objects, n_leaves), -1, dtype=np.int64)
        leaf_offsets = np.zeros((self.n_objects, n_leaves, 2), dtype=np.int64)
        leaf_slots = np.zeros((self.n_objects, n_leaves, t), dtype=np.int64)
        part_ids = np.full((self.n_objects, n_parts), -1, dtype=np.int64)
        part_offsets = np.zeros((self.n_objects, n_parts, 2), dtype=np.int64)
        part_slots = np.zeros((self.n_objects, n_parts, t), dtype=np.int64)
        low = np.zeros((self.n_objects, 2), dtype=np.int64)
        high = np.zeros((self.n_objects, 2), dtype=np.int64)
        n_slots = [0] * t
        top_domain = np.array(self.domain(self.levels))
        for o, (leaves, parts, nodes) in enumerate(expanded):
            bounds_low = [np.zeros(2, dtype=np.int64)]
            bounds_high = [top_domain - 1]
            items = [(1, offset, slots) for _, offset, slots in leaves] + nodes
            for level, offset, slots in items:
                domain = np.array(self.domain(level))
                reach = sum(self.displacement[i] for i in range(t) if slots[i] >= 0)
                offset_array = np.array(offset)
                bounds_low.append(reach - offset_array)
                bounds_high.append(domain - 1 - offset_array - reach)
            low[o] = np.max(bounds_low, axis=0)
            high[o] = np.min(bounds_high, axis=0)
            if np.any(low[o] > high[o]):
                raise ValueError(f"objects cannot fit the canvas: object {o} with displacement "
                                 f"{self.displacement} needs more than image_size="
                                 f"{self.image_size}")
            for s, (child, offset, slots) in enumerate(leaves):
                leaf_ids[o, s], leaf_offsets[o, s], leaf_slots[o, s] = child, offset, slots
            for s, (child, offset, slots) in enumerate(parts):
                part_ids[o, s], part_offsets[o, s], part_slots[o, s] = child, offset, slots
            for level in range(t):
                used = [slots[level] for _, _, slots in leaves + parts if slots[level] >= 0]
                n_slots[level] = max(n_slots[level], max(used, default=-1) + 1)
        return _Tables(leaf_ids, leaf_offsets, np.maximum(leaf_slots, 0), part_ids,
                       part_offsets, np.maximum(part_slots, 0), low, high, n_slots)

    # ------------------------------------------------------------------ reference matcher
    def _find_objects(self, clean: np.ndarray) -> Occurrences:
        """Object occurrences (anchor boxes) in clean images by the reference matcher."""
        occurrences, _ = template_occurrences(clean, self.templates,
                                              binary=self.template_family in ("binary", "bars"),
                                              separation=self.separation)
        for level in range(2, self.levels + 1):
            domain = self._canvas_domain(clean.shape[1:], level)
            occurrences = configuration_occurrences(occurrences, self.hierarchy[level - 2],
                                                    self.displacement[level - 2], domain)
        return occurrences

    def _canvas_domain(self, shape: tuple[int, ...], level: int) -> tuple[int, int]:
        size = (shape[0] - self.feature_size + 1, shape[1] - self.feature_size + 1)
        for current in range(2, level + 1):
            kernel = self.kernel_extent(current)
            size = (size[0] - kernel[0] + 1, size[1] - kernel[1] + 1)
        return size

    def reference_labels(self, clean: np.ndarray | torch.Tensor) -> np.ndarray:
        """Classes found in clean images by the reference matcher, as a (n, C) boolean array."""
        array = clean.numpy() if isinstance(clean, torch.Tensor) else np.asarray(clean)
        if array.ndim == 4:
            array = array[:, 0]
        found = self._find_objects(array)
        present = np.zeros((len(array), self.n_classes), dtype=bool)
        present[found.image, self.object_classes[found.item]] = True
        return present

    # ------------------------------------------------------------------ sampling
    def _draw_round(self, rng: np.random.Generator, count: int) -> dict[str, np.ndarray]:
        tables = self._tables
        height, width = self.image_size
        k = self.feature_size
        out_h, out_w = self.window_domain
        objects = rng.integers(self.n_objects, size=count)
        anchor = rng.integers(tables.anchor_low[objects], tables.anchor_high[objects] + 1)
        draws = [rng.integers(-delta, delta + 1, size=(count, max(slots, 1), 2))
                 for delta, slots in zip(self.displacement, tables.n_slots, strict=True)]
        leaf_ids = tables.leaf_ids[objects]
        positions = anchor[:, None, :] + tables.leaf_offsets[objects]
        part_positions = anchor[:, None, :] + tables.part_offsets[objects]
        for level, draw in enumerate(draws):
            slots = tables.leaf_slots[objects][:, :, level]
            positions = positions + np.take_along_axis(draw, slots[..., None], axis=1)
            if tables.part_ids.shape[1]:
                part_slots = tables.part_slots[objects][:, :, level]
                # parts are displaced by the levels above level 2 only
                if level >= 1:
                    part_positions = part_positions + np.take_along_axis(
                        draw, part_slots[..., None], axis=1)
        valid = leaf_ids >= 0
        n_distractors = self.distractors
        ids = np.concatenate([leaf_ids, rng.integers(self.n_features,
                                                     size=(count, n_distractors))], axis=1)
        is_distractor = np.zeros(ids.shape, dtype=bool)
        is_distractor[:, leaf_ids.shape[1]:] = True
        if n_distractors:
            wanted = rng.integers(0, n_distractors + 1, size=count)
            active = np.arange(n_distractors)[None, :] < wanted[:, None]
            placed = np.zeros((count, n_distractors, 2), dtype=np.int64)
            pending = active.copy()
            reach = k + GAP
            for _ in range(8):
                proposal = np.stack([rng.integers(0, out_h, size=(count, n_distractors)),
                                     rng.integers(0, out_w, size=(count, n_distractors))], -1)
                placed = np.where(pending[..., None], proposal, placed)
                for slot in range(n_distractors):
                    final = active & ~pending
                    final[:, slot] = False
                    others = np.concatenate([positions, placed], axis=1)
                    others_valid = np.concatenate([valid, final], axis=1)
                    difference = np.abs(others - placed[:, slot:slot + 1])
                    clash = ((difference < reach).all(-1) & others_valid).any(-1)
                    pending[:, slot] = pending[:, slot] & clash
                if not pending.any():
                    break
            active &= ~pending
            positions = np.concatenate([positions, placed], axis=1)
            valid = np.concatenate([valid, active], axis=1)
        ids = np.where(valid, ids, -1)
        noise = None
        if self.noise > 0:
            noise = rng.random((count, height, width), dtype=np.float32)
        return {"objects": objects, "anchor": anchor, "ids": ids, "positions": positions,
                "valid": valid, "is_distractor": is_distractor & valid,
                "part_positions": part_positions, "noise": noise}

    def render(self, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Clean images (n, H, W) float32 with template ``ids[i, s]`` (-1: none) pasted at
        window position ``positions[i, s]``."""
        count = len(ids)
        k = self.feature_size
        clean = np.zeros((count, *self.image_size), dtype=np.float32)
        templates = self.templates.astype(np.float32)
        rows = np.arange(k)[:, None]
        cols = np.arange(k)[None, :]
        for slot in range(ids.shape[1]):
            index = np.flatnonzero(ids[:, slot] >= 0)
            if len(index) == 0:
                continue
            y = positions[index, slot, 0][:, None, None] + rows
            x = positions[index, slot, 1][:, None, None] + cols
            clean[index[:, None, None], y, x] = templates[ids[index, slot]]
        return clean

    def _accept(self, clean: np.ndarray, draw: dict[str, np.ndarray]
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Reference check of B.1(ii)-(iii); returns the accepted mask and rejection reasons."""
        count = len(clean)
        binary = self.template_family in ("binary", "bars")
        found, near = template_occurrences(clean, self.templates, binary=binary,
                                           separation=self.separation)
        out_h, out_w = self.window_domain
        n = self.n_features
        found_keys = ((found.image * n + found.item) * out_h + found.low_y) * out_w + found.low_x
        valid = draw["valid"]
        image_index = np.broadcast_to(np.arange(count)[:, None], valid.shape)
        pasted_keys = (((image_index * n + draw["ids"]) * out_h + draw["positions"][..., 0])
                       * out_w + draw["positions"][..., 1])[valid]
        missing = np.zeros(count, dtype=bool)
        missing[image_index[valid][~np.isin(pasted_keys, found_keys)]] = True
        extra = np.bincount(found.image, minlength=count) != valid.sum(1)
        unintended = missing | extra | near
        occurrences = found
        for level in range(2, self.levels + 1):
            occurrences = configuration_occurrences(occurrences, self.hierarchy[level - 2],
                                                    self.displacement[level - 2],
                                                    self.domain(level))
        pairs = np.unique(occurrences.image * self.n_objects + occurrences.item)
        image, item = np.divmod(pairs, self.n_objects)
        intended = item == draw["objects"][image]
        has_intended = np.zeros(count, dtype=bool)
        has_intended[image[intended]] = True
        has_other = np.zeros(count, dtype=bool)
        has_other[image[~intended]] = True
        if self.exclusive_objects:
            object_problem = has_other | ~has_intended
        else:
            object_problem = ~has_intended
        accepted = ~unintended & ~object_problem
        reasons = {"unintended_template_occurrence": unintended,
                   "other_object": ~unintended & has_other & self.exclusive_objects,
                   "missing_object": ~unintended & ~has_intended}
        return accepted, reasons

    def _block(self, seed: int, block: int, keep_clean: bool) -> dict[str, Any]:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, seed, block]))
        parts: list[dict[str, np.ndarray]] = []
        have = 0
        rejected: dict[str, int] = {}
        total_rejected = 0
        for _ in range(200):
            remaining = BLOCK_SIZE - have
            draw = self._draw_round(rng, remaining + remaining // 4 + 8)
            clean = self.render(draw["ids"], draw["positions"])
            accepted, reasons = self._accept(clean, draw)
            index = np.flatnonzero(accepted)[:remaining]
            considered = index[-1] + 1 if len(index) == remaining else len(accepted)
            total_rejected += int((~accepted[:considered]).sum())
            for name, mask in reasons.items():
                rejected[name] = rejected.get(name, 0) + int(mask[:considered].sum())
            if len(index):
                if self.noise > 0:
                    images = draw["noise"][index]
                    images *= np.float32(2 * self.noise)
                    images -= np.float32(self.noise)
                    images += clean[index]
                    np.clip(images, 0, 1, out=images)
                else:
                    images = clean[index]
                part = {"images": images, "objects": draw["objects"][index],
                        "anchor": draw["anchor"][index], "ids": draw["ids"][index],
                        "positions": draw["positions"][index],
                        "is_distractor": draw["is_distractor"][index],
                        "part_positions": draw["part_positions"][index]}
                if keep_clean:
                    part["clean"] = clean[index]
                parts.append(part)
                have += len(index)
            if have == BLOCK_SIZE:
                break
        else:
            raise RuntimeError(f"the reference matcher rejected almost every draw "
                               f"({rejected}); the world's objects, distractors and canvas "
                               f"leave no room for well-posed images")
        merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        merged["n_rejected"] = total_rejected
        merged["rejections"] = rejected
        return merged

    def sample(self, n: int, seed: int = 0, *, shard: int | None = None,
               n_shards: int | None = None, keep_clean: bool = False,
               progress: bool = False, workers: int = 1) -> FeatureSample:
        """Draw ``n`` images; with ``shard=i, n_shards=s`` only images [i*n//s, (i+1)*n//s).

        Every image passed the reference matcher (exactly one complete object, the intended
        one, and no template occurrence other than the pasted ones).  The draw is a function
        of (world seed, ``seed``) only: shards concatenate bit-identically to the full draw.
        ``workers`` > 1 draws blocks in that many threads (same result: blocks are independent).
        """
        n = _int(n, "n", 0)
        seed = _int(seed, "seed", 0)
        if (shard is None) != (n_shards is None):
            raise ValueError(f"shard and n_shards must be given together; got shard={shard!r}, "
                             f"n_shards={n_shards!r}")
        if n_shards is None:
            start, stop = 0, n
        else:
            n_shards = _int(n_shards, "n_shards", 1)
            shard = _int(shard, "shard", 0)
            if shard >= n_shards:
                raise ValueError(f"shard must be in [0, n_shards={n_shards}); got {shard}")
            start, stop = shard * n // n_shards, (shard + 1) * n // n_shards
        blocks = range(start // BLOCK_SIZE, -(-stop // BLOCK_SIZE)) if stop > start else range(0)
        workers = _int(workers, "workers", 1)
        results: Any
        if workers > 1 and len(blocks) > 1:
            from concurrent.futures import ThreadPoolExecutor

            executor = ThreadPoolExecutor(max_workers=workers)
            results = executor.map(lambda b: (b, self._block(seed, b, keep_clean)), blocks)
        else:
            executor = None
            results = ((b, self._block(seed, b, keep_clean)) for b in blocks)
        if progress:
            from tqdm.auto import tqdm

            results = tqdm(results, total=len(blocks), desc="generating", unit="block",
                           leave=False)
        pieces = []
        n_rejected = 0
        rejections: dict[str, int] = {}
        for block, data in results:
            low = max(start - block * BLOCK_SIZE, 0)
            high = min(stop - block * BLOCK_SIZE, BLOCK_SIZE)
            pieces.append({key: value[low:high] for key, value in data.items()
                           if isinstance(value, np.ndarray)})
            n_rejected += data["n_rejected"]
            for name, value in data["rejections"].items():
                rejections[name] = rejections.get(name, 0) + value
        if executor is not None:
            executor.shutdown()
        return self._assemble(pieces, start, stop, n_rejected, rejections, keep_clean)

    def _assemble(self, pieces: list[dict[str, np.ndarray]], start: int, stop: int,
                  n_rejected: int, rejections: dict[str, int], keep_clean: bool
                  ) -> FeatureSample:
        height, width = self.image_size
        n_slots = self._tables.leaf_ids.shape[1] + self.distractors
        n_part_slots = self._tables.part_ids.shape[1]
        if pieces:
            data = {key: np.concatenate([p[key] for p in pieces]) for key in pieces[0]}
        else:
            data = {"images": np.zeros((0, height, width), np.float32),
                    "objects": np.zeros(0, np.int64), "anchor": np.zeros((0, 2), np.int64),
                    "ids": np.zeros((0, n_slots), np.int64),
                    "positions": np.zeros((0, n_slots, 2), np.int64),
                    "is_distractor": np.zeros((0, n_slots), bool),
                    "part_positions": np.zeros((0, n_part_slots, 2), np.int64),
                    "clean": np.zeros((0, height, width), np.float32)}
        objects = data["objects"].astype(np.int64)
        labels = self.object_classes[objects]
        part_ids = self._tables.part_ids[objects]
        truth = GroundTruth(labels=labels, object_index=objects,
                            anchor=data["anchor"].astype(np.int64),
                            feature_ids=data["ids"].astype(np.int64),
                            feature_positions=np.where(data["ids"][..., None] >= 0,
                                                       data["positions"], -1).astype(np.int64),
                            is_distractor=data["is_distractor"],
                            part_ids=part_ids,
                            part_anchors=np.where(part_ids[..., None] >= 0,
                                                  data["part_positions"], -1).astype(np.int64))
        images = torch.from_numpy(np.ascontiguousarray(data["images"])).unsqueeze(1)
        clean = (torch.from_numpy(np.ascontiguousarray(data["clean"])).unsqueeze(1)
                 if keep_clean else None)
        return FeatureSample(images=images, labels=torch.from_numpy(labels), truth=truth,
                             n_rejected=n_rejected, rejections=rejections, start=start,
                             stop=stop, clean=clean)

    # ------------------------------------------------------------------ serialization
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this world exactly (:meth:`from_config`)."""
        return {"image_size": list(self.image_size), "displacement": list(self.displacement),
                "noise": self.noise, "distractors": self.distractors, "seed": self.seed,
                "exclusive_objects": self.exclusive_objects,
                "template_family": self.template_family,
                "templates": self.templates.tolist(),
                "objects": [[[c, list(o)] for c, o in conf] for conf in self.objects],
                "object_classes": self.object_classes.tolist(),
                "parts": [[[[c, list(o)] for c, o in conf] for conf in level]
                          for level in self.parts]}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FeatureWorld:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", WellPosednessWarning)
            world = cls.from_templates(
                np.asarray(config["templates"]), config["objects"],
                object_classes=config["object_classes"], parts=config["parts"] or None,
                image_size=tuple(config["image_size"]), displacement=config["displacement"],
                noise=config["noise"], distractors=config["distractors"], seed=config["seed"],
                exclusive_objects=config["exclusive_objects"])
        world.template_family = config["template_family"]
        return world

    def __repr__(self) -> str:
        return (f"FeatureWorld(image_size={self.image_size}, feature_size={self.feature_size}, "
                f"n_features={self.n_features}, n_classes={self.n_classes}, "
                f"objects={self.n_objects}, levels={self.levels}, "
                f"displacement={self.displacement}, noise={self.noise}, "
                f"distractors={self.distractors}, template_family={self.template_family!r}, "
                f"seed={self.seed})")


# ---------------------------------------------------------------------- presets
_STROKES = {
    "H": [(2, c) for c in range(5)],
    "V": [(r, 2) for r in range(5)],
    "TL": [(2, 2), (2, 3), (2, 4), (3, 2), (4, 2)],
    "TR": [(2, 0), (2, 1), (2, 2), (3, 2), (4, 2)],
    "BL": [(0, 2), (1, 2), (2, 2), (2, 3), (2, 4)],
    "BR": [(0, 2), (1, 2), (2, 2), (2, 1), (2, 0)],
    "LT": [(r, 2) for r in range(5)] + [(2, 3), (2, 4)],
    "RT": [(r, 2) for r in range(5)] + [(2, 0), (2, 1)],
}
# digit-like glyphs on a 3 x 2 grid of stroke cells (seven-segment shapes drawn with corners)
_GLYPHS = {
    0: {(0, 0): "TL", (0, 1): "TR", (1, 0): "V", (1, 1): "V", (2, 0): "BL", (2, 1): "BR"},
    1: {(0, 1): "V", (1, 1): "V", (2, 1): "V"},
    2: {(0, 0): "H", (0, 1): "TR", (1, 0): "TL", (1, 1): "BR", (2, 0): "BL", (2, 1): "H"},
    3: {(0, 0): "H", (0, 1): "TR", (1, 0): "H", (1, 1): "RT", (2, 0): "H", (2, 1): "BR"},
    4: {(0, 0): "V", (0, 1): "V", (1, 0): "BL", (1, 1): "RT", (2, 1): "V"},
    5: {(0, 0): "TL", (0, 1): "H", (1, 0): "BL", (1, 1): "TR", (2, 0): "H", (2, 1): "BR"},
    6: {(0, 0): "TL", (0, 1): "H", (1, 0): "LT", (1, 1): "TR", (2, 0): "BL", (2, 1): "BR"},
    7: {(0, 0): "H", (0, 1): "TR", (1, 1): "V", (2, 1): "V"},
    8: {(0, 0): "TL", (0, 1): "TR", (1, 0): "LT", (1, 1): "RT", (2, 0): "BL", (2, 1): "BR"},
    9: {(0, 0): "TL", (0, 1): "TR", (1, 0): "BL", (1, 1): "RT", (2, 0): "H", (2, 1): "BR"},
}


def _stroke_digits(seed: int, **options: Any) -> FeatureWorld:
    names = list(_STROKES)
    templates = np.zeros((len(names), 5, 5))
    for index, name in enumerate(names):
        for row, col in _STROKES[name]:
            templates[index, row, col] = 1.0
    settings = {"image_size": 32, "displacement": 1, "noise": 0.015, "distractors": 2}
    settings.update(options)
    delta = settings["displacement"]
    delta = delta if isinstance(delta, int) else delta[0]
    spacing = 5 + 2 * delta + GAP
    objects = [[(names.index(stroke), (row * spacing, col * spacing))
                for (row, col), stroke in _GLYPHS[digit].items()] for digit in range(10)]
    world = FeatureWorld.from_templates(templates, objects, seed=seed, **settings)
    world.template_family = "bars"
    return world


def _natural_textures(seed: int, **options: Any) -> FeatureWorld:
    settings = {"image_size": 32, "feature_size": 6, "n_features": 8, "n_classes": 6,
                "features_per_object": 3, "displacement": 1, "noise": 0.005, "distractors": 1,
                "template_family": "natural"}
    settings.update(options)
    return FeatureWorld(seed=seed, **settings)


def _default(seed: int, **options: Any) -> FeatureWorld:
    settings = {"image_size": 28, "feature_size": 3, "n_features": 6, "n_classes": 4,
                "features_per_object": 3, "displacement": 1, "noise": 0.04, "distractors": 2,
                "template_family": "binary"}
    settings.update(options)
    return FeatureWorld(seed=seed, **settings)


PRESETS = {"default": _default, "stroke-digits": _stroke_digits,
           "natural-textures": _natural_textures}


def preset(name: str, seed: int = 0, **options: Any) -> FeatureWorld:
    """A ready-made world: ``"default"`` (THEORY.md B.3's 28x28 example), ``"stroke-digits"``
    (10 digit-like glyphs drawn with 8 stroke templates) or ``"natural-textures"`` (natural
    image patch templates); ``options`` override the preset's keywords."""
    if name not in PRESETS:
        raise ValueError(f"preset name must be one of {tuple(PRESETS)}; got {name!r}")
    return PRESETS[name](seed, **options)
