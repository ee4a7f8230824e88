"""Ready-made feature worlds: the default binary world, stroke digits, natural textures.

``"default"`` is docs/theory.md B.3's 28x28 example (6 binary 3x3 templates, 4 classes of 3
features); ``"stroke-digits"`` draws the digits 0-9 as seven-segment glyphs whose 3 x 2
junctions are 8 stroke templates (7 x 7: centre plus arms); ``"natural-textures"`` uses
natural image patches as real-valued templates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .hierarchy import GAP
from .world import FeatureWorld

__all__ = ["PRESETS", "preset", "stroke_templates"]

# Each stroke template is the centre pixel of a 7 x 7 window plus the arms that leave it (left,
# right, up, down): a seven-segment junction.  Every stroke passes through the centre, so a
# window shifted off a pasted stroke never reproduces another template (B.1(ii)).
_STROKE_SIZE = 7
_STROKES = {"H": "lr", "V": "ud", "TL": "rd", "TR": "ld", "BL": "ur", "BR": "ul",
            "LT": "udr", "RT": "udl"}
# Digits on the 3 x 2 grid of seven-segment junctions (rows top/middle/bottom, columns
# left/right): a segment is the arms of its two junctions, so the glyph reads as a
# seven-segment digit with one-pixel joints (docs/guide/feature-world.md shows them).
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


def stroke_templates() -> tuple[list[str], np.ndarray]:
    """The stroke names and their binary ``7 x 7`` templates (centre plus arms)."""
    names = list(_STROKES)
    k, centre = _STROKE_SIZE, _STROKE_SIZE // 2
    templates = np.zeros((len(names), k, k))
    for index, name in enumerate(names):
        template = templates[index]
        template[centre, centre] = 1.0
        for arm in _STROKES[name]:
            if arm == "l":
                template[centre, :centre] = 1.0
            elif arm == "r":
                template[centre, centre:] = 1.0
            elif arm == "u":
                template[:centre, centre] = 1.0
            else:
                template[centre:, centre] = 1.0
    return names, templates


def _stroke_digits(seed: int, **options: Any) -> FeatureWorld:
    names, templates = stroke_templates()
    # no displacement by default: jittered junctions no longer line up into segments and the
    # digits stop reading as digits; k^2 noise = 49 * 0.008 = 0.39 < 1/2 (B.1(i))
    settings = {"image_size": 32, "displacement": 0, "noise": 0.008, "distractors": 2}
    settings.update(options)
    delta = settings["displacement"]
    delta = delta if isinstance(delta, int) else delta[0]
    # the grid spacing of FeatureWorld's drawn configurations: displaced strokes never touch
    spacing = _STROKE_SIZE + 2 * delta + GAP
    objects = [[(names.index(stroke), (row * spacing, col * spacing))
                for (row, col), stroke in _GLYPHS[digit].items()] for digit in range(10)]
    world = FeatureWorld.from_templates(templates, objects, seed=seed, **settings)
    world.template_family = "bars"
    return world


# keyword defaults of the presets drawn by FeatureWorld itself (options override them)
_DRAWN_SETTINGS: dict[str, dict[str, Any]] = {
    "default": {"image_size": 28, "feature_size": 3, "n_features": 6, "n_classes": 4,
                "features_per_object": 3, "displacement": 1, "noise": 0.04, "distractors": 2,
                "template_family": "binary"},
    "natural-textures": {"image_size": 32, "feature_size": 6, "n_features": 8, "n_classes": 6,
                         "features_per_object": 3, "displacement": 1, "noise": 0.005,
                         "distractors": 1, "template_family": "natural"},
}


def _drawn(name: str) -> Callable[..., FeatureWorld]:
    def make(seed: int, **options: Any) -> FeatureWorld:
        return FeatureWorld(seed=seed, **{**_DRAWN_SETTINGS[name], **options})
    return make


PRESETS: dict[str, Callable[..., FeatureWorld]] = {
    "default": _drawn("default"), "stroke-digits": _stroke_digits,
    "natural-textures": _drawn("natural-textures")}


def preset(name: str, seed: int = 0, **options: Any) -> FeatureWorld:
    """A ready-made world: ``"default"`` (docs/theory.md B.3's 28x28 example),
    ``"stroke-digits"`` (the digits 0-9 as seven-segment glyphs of 8 stroke templates) or
    ``"natural-textures"`` (natural image patch templates); ``options`` override the preset's
    keywords."""
    if name not in PRESETS:
        raise ValueError(f"preset name must be one of {tuple(PRESETS)}; got {name!r}")
    return PRESETS[name](seed, **options)
