"""The vectorised sampler of a feature world: draw, render, check, assemble.

docs/theory.md B.1, generation: sample an object (its class follows), an anchor u where everything
fits, an independent displacement in [-delta_l, delta_l]^2 for every child at every level, paste
the templates on the zero background, add up to ``distractors`` extra features at random free
places, then add noise eta ~ U[-epsilon, epsilon] per pixel and clip to [0, 1] (clipping never
increases |eta|).  Draws the reference matcher rejects (B.1(ii)-(iii)) are resampled and counted.

Images come in blocks of ``BLOCK_SIZE``; block b is drawn from
``SeedSequence([world seed, sample seed, b])``, so any shard of a draw is a slice of the same
blocks and shards concatenate bit-identically to the unsharded draw.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .hierarchy import GAP
from .samples import FeatureSample, GroundTruth
from .well_posedness import match_images

if TYPE_CHECKING:
    from .world import FeatureWorld

__all__ = ["BLOCK_SIZE", "UnsamplableWorldError", "accept_images", "draw_block", "draw_round",
           "render", "sample_range"]

BLOCK_SIZE = 512
MAX_ROUNDS = 200  # draw rounds per block before the world is declared unsamplable
DISTRACTOR_TRIES = 8  # placements proposed per distractor before it is dropped


class UnsamplableWorldError(ValueError, RuntimeError):
    """The reference matcher rejects almost every draw: the world's configuration leaves no
    room for well-posed images.  A ``ValueError`` (the world is the bad input); also a
    ``RuntimeError``, what it was before it had its own type."""


def draw_round(world: FeatureWorld, rng: np.random.Generator, count: int
               ) -> dict[str, np.ndarray]:
    """``count`` candidate images as placements: object, anchor, template ids and window
    positions per slot (objects' leaves, then distractors), validity, level-2 node positions,
    and the uniform [0, 1) draws that become the noise."""
    tables = world._tables
    height, width = world.image_size
    k = world.feature_size
    out_h, out_w = world.window_domain
    objects = rng.integers(world.n_objects, size=count)
    anchor = rng.integers(tables.anchor_low[objects], tables.anchor_high[objects] + 1)
    draws = [rng.integers(-delta, delta + 1, size=(count, max(slots, 1), 2))
             for delta, slots in zip(world.displacement, tables.n_slots, strict=True)]
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
    n_distractors = world.distractors
    ids = np.concatenate([leaf_ids, rng.integers(world.n_features,
                                                 size=(count, n_distractors))], axis=1)
    is_distractor = np.zeros(ids.shape, dtype=bool)
    is_distractor[:, leaf_ids.shape[1]:] = True
    if n_distractors:
        wanted = rng.integers(0, n_distractors + 1, size=count)
        active = np.arange(n_distractors)[None, :] < wanted[:, None]
        placed = np.zeros((count, n_distractors, 2), dtype=np.int64)
        pending = active.copy()
        reach = k + GAP
        for _ in range(DISTRACTOR_TRIES):
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
    if world.noise > 0:
        noise = rng.random((count, height, width), dtype=np.float32)
    return {"objects": objects, "anchor": anchor, "ids": ids, "positions": positions,
            "valid": valid, "is_distractor": is_distractor & valid,
            "part_positions": part_positions, "noise": noise}


def render(world: FeatureWorld, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Clean images (n, H, W) float32 with template ``ids[i, s]`` (-1: none) pasted at
    window position ``positions[i, s]``."""
    count = len(ids)
    k = world.feature_size
    clean = np.zeros((count, *world.image_size), dtype=np.float32)
    templates = world.templates.astype(np.float32)
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


def accept_images(world: FeatureWorld, clean: np.ndarray, draw: dict[str, np.ndarray]
                  ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Reference check of B.1(ii)-(iii); returns the accepted mask and rejection reasons."""
    count = len(clean)
    found, near, occurrences = match_images(world, clean)
    out_h, out_w = world.window_domain
    n = world.n_features
    # (image, template, y, x) as one integer key, to compare pasted and found occurrences
    found_keys = ((found.image * n + found.item) * out_h + found.low_y) * out_w + found.low_x
    valid = draw["valid"]
    image_index = np.broadcast_to(np.arange(count)[:, None], valid.shape)
    pasted_keys = (((image_index * n + draw["ids"]) * out_h + draw["positions"][..., 0])
                   * out_w + draw["positions"][..., 1])[valid]
    missing = np.zeros(count, dtype=bool)
    missing[image_index[valid][~np.isin(pasted_keys, found_keys)]] = True
    extra = np.bincount(found.image, minlength=count) != valid.sum(1)
    unintended = missing | extra | near
    pairs = np.unique(occurrences.image * world.n_objects + occurrences.item)
    image, item = np.divmod(pairs, world.n_objects)
    intended = item == draw["objects"][image]
    has_intended = np.zeros(count, dtype=bool)
    has_intended[image[intended]] = True
    has_other = np.zeros(count, dtype=bool)
    has_other[image[~intended]] = True
    if world.exclusive_objects:
        object_problem = has_other | ~has_intended
    else:
        object_problem = ~has_intended
    accepted = ~unintended & ~object_problem
    reasons = {"unintended_template_occurrence": unintended,
               "other_object": ~unintended & has_other & world.exclusive_objects,
               "missing_object": ~unintended & ~has_intended}
    return accepted, reasons


def draw_block(world: FeatureWorld, seed: int, block: int, keep_clean: bool) -> dict[str, Any]:
    """The ``BLOCK_SIZE`` accepted images of block ``block``, with the rejection counts."""
    rng = np.random.default_rng(np.random.SeedSequence([world.seed, seed, block]))
    parts: list[dict[str, np.ndarray]] = []
    have = 0
    rejected: dict[str, int] = {}
    total_rejected = 0
    for _ in range(MAX_ROUNDS):
        remaining = BLOCK_SIZE - have
        # oversample by a quarter (+8) so that one round usually fills the block
        draw = draw_round(world, rng, remaining + remaining // 4 + 8)
        clean = render(world, draw["ids"], draw["positions"])
        accepted, reasons = accept_images(world, clean, draw)
        index = np.flatnonzero(accepted)[:remaining]
        # count rejections only up to the last image kept, so counts do not depend on the
        # oversampling
        considered = index[-1] + 1 if len(index) == remaining else len(accepted)
        total_rejected += int((~accepted[:considered]).sum())
        for name, mask in reasons.items():
            rejected[name] = rejected.get(name, 0) + int(mask[:considered].sum())
        if len(index):
            if world.noise > 0:
                images = draw["noise"][index]
                images *= np.float32(2 * world.noise)
                images -= np.float32(world.noise)
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
        raise UnsamplableWorldError(f"the reference matcher rejected almost every draw "
                                    f"({rejected}); the world's objects, distractors and "
                                    f"canvas leave no room for well-posed images")
    merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    merged["n_rejected"] = total_rejected
    merged["rejections"] = rejected
    return merged


def sample_range(world: FeatureWorld, seed: int, start: int, stop: int, *,
                 keep_clean: bool = False, progress: bool = False, workers: int = 1
                 ) -> FeatureSample:
    """Images [start, stop) of the draw ``seed``: the blocks covering them, sliced.

    ``workers`` > 1 draws blocks in that many threads (same result: blocks are independent).
    """
    blocks = range(start // BLOCK_SIZE, -(-stop // BLOCK_SIZE)) if stop > start else range(0)
    results: Iterable[tuple[int, dict[str, Any]]]
    if workers > 1 and len(blocks) > 1:
        from concurrent.futures import ThreadPoolExecutor

        executor = ThreadPoolExecutor(max_workers=workers)
        results = executor.map(lambda b: (b, draw_block(world, seed, b, keep_clean)), blocks)
    else:
        executor = None
        results = ((b, draw_block(world, seed, b, keep_clean)) for b in blocks)
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
    return _assemble(world, pieces, start, stop, n_rejected, rejections, keep_clean)


def _assemble(world: FeatureWorld, pieces: list[dict[str, np.ndarray]], start: int, stop: int,
              n_rejected: int, rejections: dict[str, int], keep_clean: bool) -> FeatureSample:
    """The block slices as one :class:`FeatureSample` (torch images, numpy ground truth)."""
    height, width = world.image_size
    n_slots = world._tables.leaf_ids.shape[1] + world.distractors
    n_part_slots = world._tables.part_ids.shape[1]
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
    labels = world.object_classes[objects]
    part_ids = world._tables.part_ids[objects]
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
