"""The ``stroke-digits`` preset draws digits a person reads: every clean glyph, read as a
seven-segment display from its pixels alone, is its own label's digit and no other's."""

from __future__ import annotations

import numpy as np
import pytest

from sparsecnn.features import certify, construct, preset

# the standard seven-segment encoding: a top, b upper right, c lower right, d bottom,
# e lower left, f upper left, g middle
SEVEN_SEGMENT = {0: "abcdef", 1: "bc", 2: "abdeg", 3: "abcdg", 4: "bcfg", 5: "acdfg",
                 6: "acdefg", 7: "abc", 8: "abcdefg", 9: "abcdfg"}
# segment -> its two junctions (row, column) on the 3 x 2 grid
SEGMENTS = {"a": ((0, 0), (0, 1)), "b": ((0, 1), (1, 1)), "c": ((1, 1), (2, 1)),
            "d": ((2, 0), (2, 1)), "e": ((1, 0), (2, 0)), "f": ((0, 0), (1, 0)),
            "g": ((1, 0), (1, 1))}


def read_segments(image: np.ndarray, top: int, left: int, pitch: int) -> str | None:
    """The lit segments when the top-left junction is at (top, left) and junctions are
    ``pitch`` apart; ``None`` unless every segment's interior is fully lit or fully dark (one
    joint pixel in the middle of each segment may be dark)."""
    lit = ""
    for name, ((r1, c1), (r2, c2)) in SEGMENTS.items():
        rows = np.linspace(top + r1 * pitch, top + r2 * pitch, pitch + 1).astype(int)
        cols = np.linspace(left + c1 * pitch, left + c2 * pitch, pitch + 1).astype(int)
        if rows.max() >= image.shape[0] or cols.max() >= image.shape[1]:
            return None
        # the end pixels are junction centres shared with other segments: read the interior
        on = image[rows[1:-1], cols[1:-1]] > 0.5
        if on.sum() >= pitch - 2:
            lit += name
        elif on.any():
            return None
    return lit


def readings(image: np.ndarray, pitch: int) -> set[int]:
    """The digits of the readings that cover the most segments (a reader takes the whole
    glyph, not the "1" inside an "8")."""
    # a "1" lights only the right column: its empty left column may lie beyond the border
    image = np.pad(image, pitch)
    rows, cols = np.nonzero(image > 0.5)
    best, found = 0, set()
    # the top junction row is at most one pitch below the top-most lit pixel (an upward
    # overhang), the left junction column within one pitch of the left-most one
    for top in range(rows.min(), rows.min() + pitch + 1):
        for left in range(max(cols.min() - pitch, 0), cols.min() + pitch + 1):
            segments = read_segments(image, top, left, pitch)
            digits = {d for d, s in SEVEN_SEGMENT.items() if segments == s}
            if not digits:
                continue
            covered = len(segments or "")  # segments have equal lengths
            if covered > best:
                best, found = covered, digits
            elif covered == best:
                found |= digits
    return found


def test_every_clean_glyph_reads_as_its_digit_and_no_other() -> None:
    world = preset("stroke-digits", noise=0.0, distractors=0)
    sample = world.sample(60, seed=3)
    pitch = world.feature_size + 1  # junction spacing: stroke size plus the one-pixel joint
    labels = sample.labels.numpy()
    assert set(labels.tolist()) == set(range(10))
    for digit in range(10):
        image = sample.images[int(np.flatnonzero(labels == digit)[0]), 0].numpy()
        assert readings(image, pitch) == {digit}


@pytest.mark.parametrize("seed", [0, 1])
def test_default_preset_stays_well_posed_with_zero_error(seed: int) -> None:
    world = preset("stroke-digits", seed=seed)
    assert world.zero_error_guaranteed and world.assumption_problems() == {}
    certificate = certify(construct(world), world, world.sample(150, seed=seed))
    assert certificate.error_rate == 0.0
