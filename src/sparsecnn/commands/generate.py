"""``sparsecnn generate``: write a feature-world dataset (docs/theory.md B.1, [P2])."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._limits import OptionError, require_disk, require_memory, require_replaceable

if TYPE_CHECKING:
    from ..features import FeatureWorld


@click.command("generate")
@click.option("--preset", "preset_name", default="default", show_default=True,
              type=click.Choice(["default", "stroke-digits", "natural-textures"]),
              help="World to draw from.")
@click.option("--n", "n_images", default=2000, show_default=True, type=click.IntRange(min=1),
              help="Number of images (of the whole draw when sharding).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Sampling seed.")
@click.option("--world-seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the world (templates and objects).")
@click.option("--shard", default=None, type=click.IntRange(min=0),
              help="Write only shard i of --n-shards (shards concatenate bit-identically).")
@click.option("--n-shards", default=None, type=click.IntRange(min=1))
@click.option("--image-size", default=None, type=click.IntRange(min=4), help="Override H = W.")
@click.option("--noise", default=None, type=click.FloatRange(min=0), help="Override epsilon.")
@click.option("--distractors", default=None, type=click.IntRange(min=0),
              help="Override the maximum number of distractors.")
@click.option("--displacement", default=None, type=click.IntRange(min=0),
              help="Override delta.")
@click.option("--out", default=None, type=click.Path(path_type=Path),
              help="Output directory [default: runs/generate-<preset>].")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
def command(preset_name: str, n_images: int, seed: int, world_seed: int, shard: int | None,
            n_shards: int | None, image_size: int | None, noise: float | None,
            distractors: int | None, displacement: int | None, out: Path | None,
            overwrite: bool) -> None:
    """Generate feature-world images with labels and full ground truth.

    Writes images-*.safetensors and truth-*.safetensors parts (written as they are drawn, so
    memory stays bounded), manifest.json (world config, seed, counts, sha256 of every file)
    and preview.png.  Every image passed the reference matcher: exactly one complete object and
    no unintended template occurrence.
    """
    from ..features import preset
    from ..features.dataset_files import image_bytes, write_dataset
    from ..features.figures import sample_grid_figure

    if (shard is None) != (n_shards is None):
        raise OptionError("--shard and --n-shards must be given together")
    if shard is not None and n_shards is not None and shard >= n_shards:
        raise OptionError(f"--shard must be in [0, --n-shards={n_shards}); got {shard}")
    overrides = {key: value for key, value in {"image_size": image_size, "noise": noise,
                                               "distractors": distractors,
                                               "displacement": displacement}.items()
                 if value is not None}
    out = out or Path("runs") / f"generate-{preset_name}"
    require_replaceable(out, overwrite)
    try:
        world = preset(preset_name, seed=world_seed, **overrides)
    except (TypeError, ValueError) as error:
        raise OptionError(str(error)) from error
    _check_resources(world, n_images, shard, n_shards, out, image_bytes(world))
    manifest = write_dataset(out, world, seed, n_images, shard=shard, n_shards=n_shards,
                             overwrite=overwrite, progress=True,
                             preview=lambda sample: sample_grid_figure(world, sample))
    click.echo(f"wrote {manifest['n_images']} images of {world!r} to {out} in "
               f"{len(manifest['parts'])} part(s) ({manifest['n_rejected']} draws rejected by "
               f"the reference matcher)")


def _check_resources(world: FeatureWorld, n_images: int, shard: int | None,
                     n_shards: int | None, out: Path, per_image: int) -> None:
    """Refuse, before drawing anything, what cannot fit the canvas, the memory or the disk."""
    from ..features.hierarchy import GAP
    from ..features.sampling import BLOCK_SIZE

    k = world.feature_size
    out_h, out_w = world.window_domain
    # distractors are placed at least k + GAP apart from every other feature: more than this
    # many can never be placed, and each one costs time and memory in every draw
    room = -(-out_h // (k + GAP)) * -(-out_w // (k + GAP))
    if world.distractors > room:
        raise OptionError(f"--distractors {world.distractors}: at most {room} features fit "
                          f"apart on a {world.image_size[0]}x{world.image_size[1]} canvas")
    height, width = world.image_size
    candidates = BLOCK_SIZE + BLOCK_SIZE // 4 + 8  # one draw round of a block (sampling.py)
    n_slots = world._tables.leaf_ids.shape[1] + world.distractors
    # measured peak of one round: about (3 + 0.75 n_features) float32 images per candidate
    # (noise, clean, kept images, the matcher's correlation maps) plus the slot tables
    per_block = candidates * (4 * height * width * (3 + 0.75 * world.n_features)
                              + 200 * n_slots)
    require_memory(per_block, f"one block of {BLOCK_SIZE} {height}x{width} images with "
                   f"{world.distractors} distractors", "--image-size/--distractors")
    count = n_images if n_shards is None or shard is None else \
        (shard + 1) * n_images // n_shards - shard * n_images // n_shards
    require_disk(count * per_image * 1.01 + 2**20, out,
                 f"--n {n_images}: {count} images of {per_image} bytes")
