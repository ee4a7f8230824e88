"""The feature world: an image model of classification by feature extraction.

docs/theory.md B.1 ([P2] Nandakumar, Tagade, Liu, arXiv 2307.00919; definitions [reconstructed]).

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

This module holds the world's definition (its parameters, templates and configurations, its
geometry and serialisation); the checks of B.1 live in :mod:`.well_posedness`, the random
drawing of a world in :mod:`.random_world`, the vectorised, deterministic sampler in
:mod:`.sampling` and the ready-made worlds in :mod:`.presets`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._checks import check_int_pair
from .hierarchy import (
    Configuration,
    anchor_domain,
    build_object_tables,
    kernel_extent,
    normalize_configuration,
)
from .random_world import draw_hierarchy, draw_templates
from .samples import FeatureSample, GroundTruth
from .sampling import BLOCK_SIZE, render, sample_range
from .templates import TEMPLATE_FAMILIES, is_binary
from .well_posedness import (
    WellPosednessWarning,
    assumption_problems,
    find_objects,
    validate_world,
)

# FeatureSample, GroundTruth, WellPosednessWarning, BLOCK_SIZE and Configuration stay importable
# from here, where they were first defined (sparsecnn.features.world.X keeps working).
__all__ = [
    "BLOCK_SIZE",
    "Configuration",
    "FeatureSample",
    "FeatureWorld",
    "GroundTruth",
    "WellPosednessWarning",
]


def _check_int(value: Any, name: str, minimum: int) -> int:
    # not _checks.check_positive_int: that raises ValueError for a non-integer, and the world's
    # tested contract is TypeError for a wrong type, ValueError for a wrong value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


class FeatureWorld:
    """The image model of docs/theory.md B.1 with templates, hierarchy, noise and distractors.

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
        self.image_size = check_int_pair(image_size, "image_size", minimum=1)
        self.seed = _check_int(seed, "seed", 0)
        self.levels = _check_int(levels, "levels", 2)
        self.distractors = _check_int(distractors, "distractors", 0)
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
        self.displacement = tuple(_check_int(d, "displacement", 0) for d in deltas)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x7EA7]))

        if templates is not None:
            self._init_explicit(templates, objects, object_classes, parts)
        else:
            if template_family not in TEMPLATE_FAMILIES:
                raise ValueError(f"template_family must be one of {TEMPLATE_FAMILIES}; "
                                 f"got {template_family!r}")
            self.template_family = template_family
            self.feature_size = _check_int(feature_size, "feature_size", 1)
            self.n_features = _check_int(n_features, "n_features", 1)
            self.n_classes = _check_int(n_classes, "n_classes", 2)
            self.features_per_object = _check_int(features_per_object, "features_per_object", 1)
            self.variants_per_class = _check_int(variants_per_class, "variants_per_class", 1)
            self.n_parts = self.n_features if n_parts is None else _check_int(n_parts, "n_parts", 1)
            self.parts_per_object = _check_int(parts_per_object, "parts_per_object", 1)
            if self.feature_size > min(self.image_size):
                raise ValueError(f"feature_size must be <= image_size {self.image_size}; "
                                 f"got {self.feature_size}")
            self.templates = draw_templates(self.template_family, self.n_features,
                                            self.feature_size, rng)
            self.hierarchy, self.object_classes = draw_hierarchy(self, rng)
        self.templates.setflags(write=False)
        validate_world(self)
        self._tables = build_object_tables(self)

    # ------------------------------------------------------------------ construction
    def _init_explicit(self, templates: Any, objects: Any, object_classes: Any,
                       parts: Any) -> None:
        """Templates, hierarchy and classes from explicit arguments, checked and normalised."""
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
        self.hierarchy = [[normalize_configuration(c, f"configuration {i} of level {level + 2}")
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

    # ------------------------------------------------------------------ geometry
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
        """Objects (class variants) of the world."""
        return len(self.objects)

    @property
    def window_domain(self) -> tuple[int, int]:
        """Positions of k x k windows: (H - k + 1, W - k + 1)."""
        return (self.image_size[0] - self.feature_size + 1,
                self.image_size[1] - self.feature_size + 1)

    def kernel_extent(self, level: int) -> tuple[int, int]:
        """Kernel (span + 1) of the AND convolution of configuration level ``level`` (>= 2)."""
        return kernel_extent(self.hierarchy, level)

    def domain(self, level: int) -> tuple[int, int]:
        """Anchor domain of level ``level``: D_1 = windows, D_l = D_(l-1) - K_l + 1."""
        return anchor_domain(self.hierarchy, self.feature_size, self.image_size, level)

    @property
    def detector_norm(self) -> float:
        """||K_j||_1 bound on how much an L-inf perturbation rho moves a detector score: k^2."""
        return float(self.feature_size ** 2)

    # ------------------------------------------------------------------ well-posedness
    def assumption_problems(self) -> dict[str, str]:
        """Which of B.1(i)-(iv) fail, with the reason (empty dict: all hold)."""
        return assumption_problems(self)

    @property
    def assumptions(self) -> dict[str, bool]:
        """Whether B.1(i)-(iv) hold: (ii) and (iii) are enforced per image by the reference
        matcher, (iv) is validated at construction."""
        problems = self.assumption_problems()
        return {"i": "i" not in problems, "ii": True, "iii": "iii" not in problems, "iv": True}

    @property
    def zero_error_guaranteed(self) -> bool:
        """Whether B.1(i)-(iv) all hold, so that the zero-error guarantee of B.2 applies."""
        return all(self.assumptions.values())

    def reference_labels(self, clean: np.ndarray | torch.Tensor) -> np.ndarray:
        """Classes found in clean images by the reference matcher, as a (n, C) boolean array."""
        array = clean.numpy() if isinstance(clean, torch.Tensor) else np.asarray(clean)
        if array.ndim == 4:
            array = array[:, 0]
        found = find_objects(self, array)
        present = np.zeros((len(array), self.n_classes), dtype=bool)
        present[found.image, self.object_classes[found.item]] = True
        return present

    # ------------------------------------------------------------------ sampling
    def render(self, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Clean images (n, H, W) float32 with template ``ids[i, s]`` (-1: none) pasted at
        window position ``positions[i, s]``."""
        return render(self, ids, positions)

    def sample(self, n: int, seed: int = 0, *, shard: int | None = None,
               n_shards: int | None = None, keep_clean: bool = False,
               progress: bool = False, workers: int = 1) -> FeatureSample:
        """Draw ``n`` images; with ``shard=i, n_shards=s`` only images [i*n//s, (i+1)*n//s).

        Every image passed the reference matcher (exactly one complete object, the intended
        one, and no template occurrence other than the pasted ones).  The draw is a function
        of (world seed, ``seed``) only: shards concatenate bit-identically to the full draw.
        ``workers`` > 1 draws blocks in that many threads (same result: blocks are independent).
        """
        n = _check_int(n, "n", 0)
        seed = _check_int(seed, "seed", 0)
        if (shard is None) != (n_shards is None):
            raise ValueError(f"shard and n_shards must be given together; got shard={shard!r}, "
                             f"n_shards={n_shards!r}")
        if n_shards is None:
            start, stop = 0, n
        else:
            n_shards = _check_int(n_shards, "n_shards", 1)
            shard = _check_int(shard, "shard", 0)
            if shard >= n_shards:
                raise ValueError(f"shard must be in [0, n_shards={n_shards}); got {shard}")
            start, stop = shard * n // n_shards, (shard + 1) * n // n_shards
        workers = _check_int(workers, "workers", 1)
        return sample_range(self, seed, start, stop, keep_clean=keep_clean, progress=progress,
                            workers=workers)

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
        """The world :meth:`config` describes (its B.1 warnings were given when it was made)."""
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
