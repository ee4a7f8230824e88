"""``sparsecnn interpret``: read a CNN as hierarchical sparse coding (docs/theory.md A.4-A.8).

``sparsecnn interpret RUN_DIR`` reads a ``sparsecnn train`` run (its ``config.json`` rebuilds the
model, its ``model.safetensors`` holds the weights, and its dataset's test images are the
inputs).  ``sparsecnn interpret MODEL.safetensors`` loads the weights and an architecture
description,
runs :func:`sparsecnn.interpret.interpret` on inputs (scikit-learn digits for ``1x8x8`` models,
seeded Gaussian images otherwise) and writes ``report.json``, ``report.txt``, ``atoms.png``,
``thresholds.png``, ``gaps.png`` and ``run.json`` to ``--out``.  Without ``MODEL`` it first
trains a small default CNN on the digits for a few seconds and saves it there as well
(``model.safetensors`` + ``architecture.json``).

``--data NAME|PATH`` picks the input images instead (any dataset
:func:`sparsecnn.data.load_dataset` reads; its test images must have the model's input shape).

The architecture description is documented in :mod:`sparsecnn.training.architecture`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click
import torch

from ..interpret import interpret
from ..io import OutputExistsError, atomic_directory, write_json
from ..training import load_model, load_run, save_model, train_default_model
from ._data import data_option, load_data_option
from ._limits import require_memory, require_replaceable

__all__ = ["command"]


def _inputs(architecture: dict[str, Any], n_inputs: int, seed: int) -> tuple[torch.Tensor, str]:
    shape = tuple(architecture["input_shape"])
    if shape == (1, 8, 8):
        from ..data import load_digits_split

        return load_digits_split(seed=seed).test_images[:n_inputs], "digits test images"
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((n_inputs, *shape), generator=generator), \
        f"standard normal images of shape {list(shape)} (seed {seed})"


def _check_memory(model: torch.nn.Module, shape: list[int], n_inputs: int) -> None:
    """Refuse an input shape whose activations cannot fit: the inputs plus, per layer, the
    sparse-coding working set (about 6 code-sized arrays: FISTA's iterates, momentum, gradient
    and the ReLU codes) scaled by the layer's channel growth (stride ignored: an upper
    bound)."""
    itemsize = next(model.parameters()).element_size()
    growth = 0.0
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            growth += 6 * module.out_channels / module.in_channels
    per_input = itemsize * math.prod(shape)
    require_memory(n_inputs * per_input * (2 + growth),
                   f"{n_inputs} input(s) of shape {list(shape)}", "--n-inputs/input_shape")


@click.command("interpret")
@click.argument("model_path", metavar="[MODEL]", required=False,
                type=click.Path(exists=True, path_type=Path))
@click.option("--architecture", "architecture_path",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON architecture of MODEL (default: safetensors metadata, then "
              "MODEL.json).")
@data_option(None, " Its test images are the inputs. Default: the run's dataset; for a "
             "model file, digits for 1x8x8 models, else seeded Gaussian images.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              default=Path("runs/interpret"), show_default=True)
@click.option("--n-inputs", type=click.IntRange(min=1), default=16, show_default=True,
              help="Inputs used for the sparse-coding gap.")
@click.option("--epochs", type=click.IntRange(min=1), default=15, show_default=True,
              help="Training epochs of the default CNN (no MODEL given).")
@click.option("--max-iter", type=click.IntRange(min=1), default=500, show_default=True,
              help="FISTA iterations for the optimal sparse codes.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing --out directory.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def command(model_path: Path | None, architecture_path: Path | None, data_name: str | None,
            out_dir: Path,
            n_inputs: int, epochs: int, max_iter: int, seed: int, device: str,
            overwrite: bool, no_progress: bool) -> None:
    """Read a CNN as hierarchical sparse coding: atoms, thresholds -b/||w||, improper priors,
    coherence, orthogonality gap and the gap between the ReLU code and the true sparse code.

    MODEL is a `sparsecnn train` run directory, or a safetensors file (architecture: see
    --architecture); without it a small CNN is trained on scikit-learn's digits first.
    """
    require_replaceable(out_dir, overwrite)
    if seed < 0:
        raise click.BadParameter(f"--seed must be >= 0; got {seed}")
    try:
        torch_device = torch.device(device)
    except RuntimeError as error:
        raise click.BadParameter(f"--device {device!r}: {error}") from None
    run: dict[str, Any] = {"seed": seed, "n_inputs": n_inputs, "max_iter": max_iter}
    # read --data before any training, so a missing dataset fails at once
    data = None if data_name is None else load_data_option(data_name, seed=seed)
    if model_path is None:
        model, architecture, accuracy = train_default_model(epochs, seed, not no_progress)
        run.update(model="default CNN trained on digits", epochs=epochs,
                   test_accuracy=accuracy)
    elif model_path.is_dir():
        try:
            training_run = load_run(model_path)
        except ValueError as error:
            raise click.ClickException(str(error)) from None
        model = training_run.model
        inputs = training_run.data.test_images[:n_inputs]
        description = f"{training_run.config.dataset} test images"
        run.update(model=str(model_path))
    else:
        try:
            model, architecture = load_model(model_path, architecture_path)
        except ValueError as error:
            raise click.ClickException(str(error)) from None
        run.update(model=str(model_path))
    if data is not None:
        expected = tuple(architecture["input_shape"]) if model_path is None or \
            not model_path.is_dir() else tuple(inputs.shape[1:])
        if data.image_shape != expected:
            raise click.BadParameter(
                f"the model takes images of shape {list(expected)}; {data_name!r} has "
                f"{list(data.image_shape)}", param_hint="--data")
        inputs, description = data.test_images[:n_inputs], f"{data_name} test images"
    elif model_path is None or not model_path.is_dir():
        _check_memory(model, architecture["input_shape"], n_inputs)
        inputs, description = _inputs(architecture, n_inputs, seed)
    run["inputs"] = description
    model = model.to(torch_device)
    inputs = inputs.to(device=torch_device, dtype=next(model.parameters()).dtype)
    try:
        report = interpret(model, inputs, max_iter=max_iter, model_name=run["model"],
                           verbose=not no_progress)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    run["layers"] = [layer.name for layer in report.layers]
    try:
        with atomic_directory(out_dir, overwrite=overwrite) as staging:
            report.write_files(staging)
            write_json(staging / "run.json", run)
            if model_path is None:
                save_model(staging / "model.safetensors", model.cpu(), architecture)
                write_json(staging / "architecture.json", architecture)
    except OutputExistsError as error:
        raise click.ClickException(str(error)) from None
    click.echo(report.table())
    if "test_accuracy" in run:
        click.echo(f"default CNN test accuracy on digits: {run['test_accuracy']:.4f}")
    click.echo(f"wrote {', '.join([*report.file_names(), 'run.json'])} to {out_dir}")
