"""``sparsecnn generate``: write a feature-world dataset (docs/theory.md B.1, [P2])."""

from __future__ import annotations

from pathlib import Path

import click

from ..io import OutputExistsError


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

    Writes images.safetensors, truth.safetensors, manifest.json (world config, seed, counts,
    sha256 of every file) and preview.png.  Every image passed the reference matcher: exactly
    one complete object and no unintended template occurrence.
    """
    from ..features import preset
    from ..features.dataset_files import save_dataset
    from ..features.figures import sample_grid_figure
    from ..io import write_bytes

    if (shard is None) != (n_shards is None):
        raise click.BadParameter("--shard and --n-shards must be given together")
    overrides = {key: value for key, value in {"image_size": image_size, "noise": noise,
                                               "distractors": distractors,
                                               "displacement": displacement}.items()
                 if value is not None}
    out = out or Path("runs") / f"generate-{preset_name}"
    if out.exists() and not overwrite:
        raise click.ClickException(f"{out} exists; pass --overwrite to replace it")
    try:
        world = preset(preset_name, seed=world_seed, **overrides)
    except (TypeError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    sample = world.sample(n_images, seed, shard=shard, n_shards=n_shards, progress=True)
    try:
        save_dataset(out, sample, world, seed=seed, n_total=n_images, shard=shard,
                     n_shards=n_shards, overwrite=overwrite)
    except OutputExistsError as error:
        raise click.ClickException(str(error)) from error
    write_bytes(out / "preview.png", sample_grid_figure(world, sample))
    click.echo(f"wrote {len(sample)} images of {world!r} to {out} "
               f"({sample.n_rejected} draws rejected by the reference matcher)")
