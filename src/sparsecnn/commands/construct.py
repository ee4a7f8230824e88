"""``sparsecnn construct``: build, certify and optionally compare the B.3 network ([P2])."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ._limits import OptionError, require_memory, require_replaceable
from ._options import comma_separated


@click.command("construct")
@click.option("--preset", "preset_name", default="default", show_default=True,
              type=click.Choice(["default", "stroke-digits", "natural-textures"]),
              help="World to build the network for.")
@click.option("--world-seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the world (templates and objects).")
@click.option("--levels", default=2, show_default=True, type=click.IntRange(min=2, max=3),
              help="Hierarchy levels of the default world (3: features -> parts -> objects).")
@click.option("--n", "n_images", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Images to certify on.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Sampling seed of the certification images.")
@click.option("--compare", "run_compare", is_flag=True,
              help="Also train the same architecture with Adam and compare (check 22).")
@click.option("--train-sizes", default="100,1000", show_default=True,
              help="Comma-separated training-set sizes for --compare.")
@click.option("--seeds", "train_seeds", default="0,1", show_default=True,
              help="Comma-separated training seeds for --compare.")
@click.option("--steps", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Adam steps per training run.")
@click.option("--learning-rate", default=1e-2, show_default=True,
              type=click.FloatRange(min=0, min_open=True), help="Adam learning rate.")
@click.option("--device", default="cpu", show_default=True, help="Torch device for training.")
@click.option("--out", default=None, type=click.Path(path_type=Path),
              help="Output directory [default: runs/construct-<preset>].")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
def command(preset_name: str, world_seed: int, levels: int, n_images: int, seed: int,
            run_compare: bool, train_sizes: str, train_seeds: str, steps: int,
            learning_rate: float, device: str,
            out: Path | None, overwrite: bool) -> None:
    """Build the zero-error network of docs/theory.md B.3 for a feature world and certify it.

    Writes construct.json (network layers, margins, certified L-inf radius, smallest breaking
    attack, world assumptions; with --compare the trained-vs-constructed metrics),
    network.safetensors and PNG figures.
    """
    from safetensors.torch import save as save_tensors

    from ..features import (
        certify,
        compare,
        construct,
        preset,
        smallest_breaking_perturbation,
    )
    from ..features.dataset_files import image_bytes
    from ..features.figures import (
        accuracy_curve_figure,
        detection_maps_figure,
        filters_figure,
        margin_figure,
        sample_grid_figure,
    )
    from ..io import OutputExistsError, atomic_directory, write_bytes, write_json

    started = time.perf_counter()

    def step(text: str) -> None:
        # the long phases say what they do, on stderr beside the progress bars
        click.echo(f"[{time.perf_counter() - started:5.1f} s] {text}", err=True)

    sizes = list(comma_separated(train_sizes, "--train-sizes", example="100,1000", minimum=1))
    seeds = list(comma_separated(train_seeds, "--seeds", example="0,1", minimum=0))
    out = out or Path("runs") / f"construct-{preset_name}"
    require_replaceable(out, overwrite)
    options = {"levels": levels, "image_size": 44, "features_per_object": 2,
               "parts_per_object": 2} if levels == 3 else {}
    if levels == 3 and preset_name != "default":
        raise click.BadParameter("--levels 3 applies to --preset default only")
    try:
        world = preset(preset_name, seed=world_seed, **options)
    except (TypeError, ValueError) as error:
        raise OptionError(str(error)) from error
    # the comparison draws max(--train-sizes) training images, the certificate --n images
    require_memory(3 * max(max(sizes) if run_compare else 0, n_images) * image_bytes(world),
                   f"drawing {max(max(sizes) if run_compare else 0, n_images)} images",
                   "--n/--train-sizes")
    try:
        with atomic_directory(out, overwrite=overwrite) as staging:
            network = construct(world)
            sample = world.sample(n_images, seed, progress=True)
            step(f"certifying the network on {n_images} images")
            certificate = certify(network, world, sample)
            step("searching the smallest breaking perturbation (200 images)")
            breaking = smallest_breaking_perturbation(network, world, sample[:200])
            report = {
                "world": repr(world), "assumptions": world.assumptions,
                "network": [f"{name}: {module}" for name, module in network.named_modules()
                            if name and not list(module.children())],
                "parameters": sum(p.numel() for p in network.parameters()),
                "certificate": certificate.to_dict(),
                "smallest_breaking_attack": breaking,
                "radius_formula": "(theta_hi - theta_lo) / (k^2 (A + V))",
                "detector_gap": network.detector_gap,
                "leaves_per_object_A": network.leaves_per_object,
                "variants_per_class_V": network.variants_per_class,
            }
            state = {name: tensor.contiguous() for name, tensor in network.state_dict().items()}
            write_bytes(staging / "network.safetensors", save_tensors(state))
            write_bytes(staging / "samples.png", sample_grid_figure(world, sample))
            write_bytes(staging / "margins.png", margin_figure(certificate.margin,
                                                              certificate.radius))
            maps = network.detection_maps(sample.images[:1])[0].float()
            if run_compare:
                step(f"training the same architecture with Adam: {len(sizes) * len(seeds)} "
                     f"runs of {steps} steps (sizes {sizes}, seeds {seeds})")
                result = compare(world, train_sizes=sizes, seeds=seeds, steps=steps,
                                 learning_rate=learning_rate, device=device, progress=True)
                report["compare"] = result.to_dict()
                write_bytes(staging / "filters.png", filters_figure(
                    world.templates, result.learned_filters,
                    next(r for r in result.runs if r.seed == seeds[0]
                         and r.train_size == max(sizes)).filter_similarity))
                write_bytes(staging / "accuracy_vs_size.png", accuracy_curve_figure(
                    result.train_sizes, result.accuracy_table(), result.constructed.accuracy))
                write_bytes(staging / "detection_maps.png", detection_maps_figure(
                    result.example_image, result.constructed_maps.float(),
                    result.trained_maps.float()))
            else:
                write_bytes(staging / "filters.png", filters_figure(world.templates))
                write_bytes(staging / "detection_maps.png", detection_maps_figure(
                    sample.images[0, 0], maps))
            write_json(staging / "construct.json", report)
    except OutputExistsError as error:
        raise click.ClickException(str(error)) from error
    except (TypeError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    margin = certificate.margin
    click.echo(f"{world!r}\nconstructed network: error rate {certificate.error_rate:.4g} on "
               f"{len(margin)} images, min margin {float(margin.min()):.6f}, certified radius "
               f"{certificate.radius:.4g} (smallest breaking attack {breaking:.4g})")
    if run_compare:
        summary = report["compare"]["summary"]["by_train_size"]
        for size, row in summary.items():
            click.echo(f"trained, {size} images: accuracy {row['accuracy_mean']:.3f} "
                       f"+- {row['accuracy_sd']:.3f}, filter cos "
                       f"{row['mean_filter_similarity']:.2f}, binarity "
                       f"{row['binarity']:.2f}, localization {row['localization_exact']:.2f}")
    click.echo(f"wrote {out}")
