"""The independent reference matcher of the feature world (docs/theory.md B.1, [P2]).

Plain exact template matching written without the network: a window I[u:u+k] of a clean
(noise-free) image is an *occurrence* of F_j when it equals F_j; for real-valued templates a
window whose L1 distance sum |I[u:u+k] - F_j| is below the world's separation Delta without being
an exact copy is a *near occurrence* and makes the image ambiguous.  Binary windows are compared
through integer codes (bit j*k + i of the code is pixel (j, i)), real-valued ones through their
L1 distance.

Configurations (objects, parts) are found on the sparse list of occurrences, straight from the
definition: O = ((c_1, o_1), ..., (c_m, o_m)) occurs at anchor u with tolerance delta if every
child c_r has an occurrence v_r with ||v_r - (u + o_r)||_inf <= delta.  An occurrence of a
configuration is therefore a box of anchors, the intersection over r of the child boxes shifted
by -o_r and grown by delta, clipped to the anchor domain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Occurrences", "configuration_occurrences", "template_occurrences"]

EXACT_TOLERANCE = 1e-6


@dataclass
class Occurrences:
    """A ragged list of occurrences: image index, item id and anchor box per entry.

    The anchor box is ``[low_y, high_y] x [low_x, high_x]`` (inclusive); a template occurrence
    is a single point.
    """

    image: np.ndarray
    item: np.ndarray
    low_y: np.ndarray
    high_y: np.ndarray
    low_x: np.ndarray
    high_x: np.ndarray

    def __len__(self) -> int:
        return len(self.image)

    def select(self, mask: np.ndarray) -> Occurrences:
        return Occurrences(self.image[mask], self.item[mask], self.low_y[mask],
                           self.high_y[mask], self.low_x[mask], self.high_x[mask])

    @classmethod
    def points(cls, image: np.ndarray, item: np.ndarray, y: np.ndarray,
               x: np.ndarray) -> Occurrences:
        return cls(image.astype(np.int64), item.astype(np.int64), y.astype(np.int64),
                   y.astype(np.int64), x.astype(np.int64), x.astype(np.int64))


def _binary_codes(clean: np.ndarray, k: int) -> np.ndarray:
    """Integer code of every k x k window of binary images ``clean`` (n, H, W).

    Bit ``row * k + col`` of a window's code is its pixel (row, col); built separably (row codes
    first, then stacked), 2k shifted ORs instead of k^2.
    """
    _, height, width = clean.shape
    out_h, out_w = height - k + 1, width - k + 1
    dtype = np.int64 if k * k > 31 else np.int32
    bits = clean.astype(dtype)
    rows = bits[:, :, :out_w].copy()
    for col in range(1, k):
        rows |= bits[:, :, col:col + out_w] << col
    codes = rows[:, :out_h].copy()
    for row in range(1, k):
        codes |= rows[:, row:row + out_h] << (row * k)
    return codes


def _template_codes(templates: np.ndarray) -> np.ndarray:
    k = templates.shape[-1]
    weights = (np.int64(1) << np.arange(k * k, dtype=np.int64)).reshape(k, k)
    return (templates.astype(np.int64) * weights).sum(axis=(1, 2))


@dataclass
class _CodeTable:
    """Template lookup by the low ``bits`` bits of a window code, verified on the full code."""

    table: np.ndarray
    codes: np.ndarray
    bits: int


_TABLES: dict[bytes, _CodeTable] = {}


def _code_table(templates: np.ndarray) -> _CodeTable | None:
    key = templates.tobytes() + bytes(templates.shape)
    if key not in _TABLES:
        codes = _template_codes(templates)
        bits = min(templates.shape[-1] ** 2, 20)
        low = codes & ((1 << bits) - 1)
        if len(np.unique(low)) < len(low):  # two templates share their low bits
            return None
        table = np.zeros(1 << bits, dtype=np.int32)
        table[low] = np.arange(1, len(codes) + 1)
        _TABLES[key] = _CodeTable(table, codes, bits)
    return _TABLES[key]


def template_occurrences(clean: np.ndarray, templates: np.ndarray, *, binary: bool,
                         separation: float = 1.0) -> tuple[Occurrences, np.ndarray]:
    """Exact occurrences of every template in clean images, and images with near occurrences.

    Args:
        clean: (n, H, W) noise-free images.
        templates: (N, k, k) templates.
        binary: compare integer codes (exact Hamming matching) instead of L1 distances.
        separation: Delta; a real-valued window with 0 < d_j < Delta is a near occurrence.

    Returns:
        The occurrences (one point per matching window) and a boolean (n,) mask of images that
        hold a near occurrence (always False for binary templates: Hamming distance >= 1 is
        the separation).
    """
    n = clean.shape[0]
    k = templates.shape[-1]
    near = np.zeros(n, dtype=bool)
    if binary:
        codes = _binary_codes(clean, k)
        template_codes = _template_codes(templates)
        table = _code_table(templates)
        flat = codes.ravel()
        if table is not None:
            candidate = table.table[flat & ((1 << table.bits) - 1)]
            index = np.flatnonzero(candidate)
            item = candidate[index].astype(np.int64) - 1
            keep = template_codes[item] == flat[index]
            index, item = index[keep], item[keep]
        else:
            order = np.argsort(template_codes)
            sorted_codes = template_codes[order]
            position = np.searchsorted(sorted_codes, flat).clip(0, len(sorted_codes) - 1)
            index = np.flatnonzero(sorted_codes[position] == flat)
            item = order[position[index]]
        image, y, x = np.unravel_index(index, codes.shape)
        return Occurrences.points(image, item, y, x), near
    height, width = clean.shape[1:]
    out_h, out_w = height - k + 1, width - k + 1
    images, items, ys, xs = [], [], [], []
    for j, template in enumerate(templates):
        distance = np.zeros((n, out_h, out_w), dtype=np.float64)
        for row in range(k):
            for col in range(k):
                distance += np.abs(clean[:, row:row + out_h, col:col + out_w]
                                   - template[row, col])
        exact = distance <= EXACT_TOLERANCE
        near |= ((distance < separation) & ~exact).any(axis=(1, 2))
        image, y, x = np.nonzero(exact)
        images.append(image)
        items.append(np.full(len(image), j))
        ys.append(y)
        xs.append(x)
    return Occurrences.points(np.concatenate(images), np.concatenate(items),
                              np.concatenate(ys), np.concatenate(xs)), near


def _join(current: tuple[np.ndarray, ...], other: tuple[np.ndarray, ...]
          ) -> tuple[np.ndarray, ...]:
    """All pairs (current entry, other entry) of the same image, with boxes intersected."""
    image_c = current[0]
    order = np.argsort(other[0], kind="stable")
    other = tuple(array[order] for array in other)
    starts = np.searchsorted(other[0], image_c, side="left")
    ends = np.searchsorted(other[0], image_c, side="right")
    counts = ends - starts
    total = int(counts.sum())
    left = np.repeat(np.arange(len(image_c)), counts)
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    right = starts[left] + offsets
    low_y = np.maximum(current[1][left], other[1][right])
    high_y = np.minimum(current[2][left], other[2][right])
    low_x = np.maximum(current[3][left], other[3][right])
    high_x = np.minimum(current[4][left], other[4][right])
    keep = (low_y <= high_y) & (low_x <= high_x)
    return (image_c[left][keep], low_y[keep], high_y[keep], low_x[keep], high_x[keep])


def configuration_occurrences(children: Occurrences,
                              configurations: list[list[tuple[int, tuple[int, int]]]],
                              tolerance: int, domain: tuple[int, int]) -> Occurrences:
    """Occurrences (anchor boxes) of every configuration given its children's occurrences.

    A configuration ((c_1, o_1), ..., (c_m, o_m)) occurs at u iff for every r some occurrence
    v_r of c_r satisfies ||v_r - (u + o_r)||_inf <= tolerance; anchors are restricted to
    ``0 <= u < domain``.
    """
    results = []
    for index, configuration in enumerate(configurations):
        current: tuple[np.ndarray, ...] | None = None
        for child, (offset_y, offset_x) in configuration:
            mask = children.item == child
            entries = (children.image[mask],
                       children.low_y[mask] - offset_y - tolerance,
                       children.high_y[mask] - offset_y + tolerance,
                       children.low_x[mask] - offset_x - tolerance,
                       children.high_x[mask] - offset_x + tolerance)
            current = entries if current is None else _join(current, entries)
            if len(current[0]) == 0:
                break
        assert current is not None
        image, low_y, high_y, low_x, high_x = current
        low_y, high_y = np.maximum(low_y, 0), np.minimum(high_y, domain[0] - 1)
        low_x, high_x = np.maximum(low_x, 0), np.minimum(high_x, domain[1] - 1)
        keep = (low_y <= high_y) & (low_x <= high_x)
        results.append(Occurrences(image[keep], np.full(int(keep.sum()), index, dtype=np.int64),
                                   low_y[keep], high_y[keep], low_x[keep], high_x[keep]))
    return Occurrences(*(np.concatenate([getattr(r, name) for r in results])
                         for name in ("image", "item", "low_y", "high_y", "low_x", "high_x")))
