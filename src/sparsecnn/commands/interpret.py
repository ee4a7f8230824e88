"""``sparsecnn interpret``: read a CNN as hierarchical sparse coding (THEORY.md A.4-A.8).

``sparsecnn interpret RUN_DIR`` reads a ``sparsecnn train`` run (its ``config.json`` rebuilds the
model, its ``model.safetensors`` holds the weights, and its dataset's test images are the
inputs).  ``sparsecnn interpret MODEL.safetensors`` loads the weights and an architecture
description,
runs :func:`sparsecnn.interpret.interpret` on inputs (scikit-learn digits for ``1x8x8`` models,
seeded Gaussian images otherwise) and writes ``report.json``, ``report.txt``, ``atoms.png``,
``thresholds.png``, ``gaps.png`` and ``run.json`` to ``--out``.  Without ``MODEL`` it first
trains a small default CNN on the digits for a few seconds and saves it there as well
(``model.safetensors`` + ``architecture.json``).

Architecture description (JSON; ``--architecture``, else the safetensors metadata key
``sparsecnn_architecture``, else ``MODEL`` with suffix ``.json``)::

    {"format": "sparsecnn-architecture/1", "input_shape": [1, 8, 8],
     "layers": [{"type": "conv2d", "in_channels": 1, "out_channels": 16, "kernel_size": 3,
                 "stride": 1, "padding": 1},
                {"type": "relu"}, {"type": "flatten"},
                {"type": "linear", "in_features": 1024, "out_features": 10}]}

Layer types: ``conv2d`` (in_channels, out_channels, kernel_size, stride, padding, bias),
``linear`` (in_features, out_features, bias), ``relu``, ``flatten``, ``maxpool2d`` /
``avgpool2d`` (kernel_size, stride), ``batchnorm2d`` (num_features), ``tanh``, ``sigmoid``.
The model is an ``nn.Sequential`` of these, so the weights are named ``"<index>.weight"`` and
``"<index>.bias"``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import torch
from torch import nn

from ..interpret import interpret
from ..io import OutputExistsError, atomic_directory, write_bytes, write_json

__all__ = ["ARCHITECTURE_FORMAT", "DEFAULT_ARCHITECTURE", "build_from_architecture", "command",
           "load_model", "save_model", "train_default_model"]

ARCHITECTURE_FORMAT = "sparsecnn-architecture/1"
METADATA_KEY = "sparsecnn_architecture"

DEFAULT_ARCHITECTURE: dict[str, Any] = {
    "format": ARCHITECTURE_FORMAT,
    "input_shape": [1, 8, 8],
    "layers": [
        {"type": "conv2d", "in_channels": 1, "out_channels": 16, "kernel_size": 3, "stride": 1,
         "padding": 1},
        {"type": "relu"},
        {"type": "conv2d", "in_channels": 16, "out_channels": 32, "kernel_size": 3,
         "stride": 2, "padding": 1},
        {"type": "relu"},
        {"type": "flatten"},
        {"type": "linear", "in_features": 32 * 4 * 4, "out_features": 10},
    ],
}

_LAYER_ARGUMENTS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "conv2d": (("in_channels", "out_channels", "kernel_size"),
               {"stride": 1, "padding": 0, "bias": True}),
    "linear": (("in_features", "out_features"), {"bias": True}),
    "relu": ((), {}),
    "flatten": ((), {}),
    "tanh": ((), {}),
    "sigmoid": ((), {}),
    "maxpool2d": (("kernel_size",), {"stride": None}),
    "avgpool2d": (("kernel_size",), {"stride": None}),
    "batchnorm2d": (("num_features",), {}),
}

_LAYER_CLASSES = {"conv2d": nn.Conv2d, "linear": nn.Linear, "relu": nn.ReLU,
                  "flatten": nn.Flatten, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
                  "maxpool2d": nn.MaxPool2d, "avgpool2d": nn.AvgPool2d,
                  "batchnorm2d": nn.BatchNorm2d}


def build_from_architecture(architecture: Any) -> nn.Sequential:
    """The ``nn.Sequential`` described by ``architecture`` (format in the module docstring)."""
    if not isinstance(architecture, dict):
        raise ValueError(f"architecture must be a JSON object; got {type(architecture).__name__}")
    layers = architecture.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ValueError("architecture must have a non-empty list 'layers'; got "
                         f"{layers!r}")
    shape = architecture.get("input_shape")
    if not (isinstance(shape, list) and len(shape) >= 1 and all(
            isinstance(s, int) and s > 0 for s in shape)):
        raise ValueError(f"architecture 'input_shape' must be a list of positive integers such "
                         f"as [1, 8, 8]; got {shape!r}")
    modules = []
    for index, spec in enumerate(layers):
        if not isinstance(spec, dict) or spec.get("type") not in _LAYER_ARGUMENTS:
            raise ValueError(
                f"architecture layer {index} must be an object with 'type' in "
                f"{sorted(_LAYER_ARGUMENTS)}; got {spec!r}")
        kind = spec["type"]
        required, optional = _LAYER_ARGUMENTS[kind]
        missing = [key for key in required if key not in spec]
        unknown = sorted(set(spec) - {"type", *required, *optional})
        if missing or unknown:
            raise ValueError(
                f"architecture layer {index} ({kind}) needs keys {list(required)} and accepts "
                f"{sorted(optional)}; missing {missing}, unknown {unknown}")
        arguments = {key: spec[key] for key in required}
        arguments.update({key: spec.get(key, default) for key, default in optional.items()})
        try:
            modules.append(_LAYER_CLASSES[kind](**arguments))
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(f"architecture layer {index} ({kind}) has invalid arguments "
                             f"{arguments}: {error}") from None
    return nn.Sequential(*modules)


def save_model(path: Path, model: nn.Sequential, architecture: dict[str, Any], *,
               overwrite: bool = True) -> None:
    """Write the weights as safetensors (atomically) with the architecture in the metadata."""
    from safetensors.torch import save

    tensors = {key: value.detach().contiguous().cpu() for key, value in
               model.state_dict().items()}
    data = save(tensors, metadata={METADATA_KEY: json.dumps(architecture)})
    write_bytes(path, data, overwrite=overwrite)


def load_model(path: Path, architecture_path: Path | None = None
               ) -> tuple[nn.Sequential, dict[str, Any]]:
    """Load a safetensors model; the architecture comes from ``architecture_path``, the file's
    metadata or ``path`` with suffix ``.json`` (in that order)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"MODEL {path} is not a readable safetensors file (corrupted or "
                         f"truncated?): {error}") from None
    if architecture_path is not None:
        source, text = str(architecture_path), architecture_path.read_text()
    elif METADATA_KEY in metadata:
        source, text = f"{path} metadata", metadata[METADATA_KEY]
    elif path.with_suffix(".json").exists():
        source, text = str(path.with_suffix(".json")), path.with_suffix(".json").read_text()
    else:
        raise ValueError(
            f"no architecture for {path}: pass --architecture FILE.json, or store it in the "
            f"safetensors metadata key {METADATA_KEY!r}, or put it in "
            f"{path.with_suffix('.json')}")
    try:
        architecture = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"architecture from {source} is not valid JSON: {error}") from None
    model = build_from_architecture(architecture)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{key}: file {tuple(tensors[key].shape)}, architecture "
             f"{tuple(expected[key].shape)}" for key in sorted(set(expected) & set(tensors))
             if tensors[key].shape != expected[key].shape]
    if missing or unexpected or wrong:
        raise ValueError(
            f"weights in {path} do not match the architecture from {source}: missing "
            f"{missing}, unexpected {unexpected}, shape mismatches {wrong}")
    model.load_state_dict(tensors)
    return model, architecture


def load_training_run(directory: Path, n_inputs: int
                      ) -> tuple[nn.Module, torch.Tensor, str]:
    """Rebuild the model of a ``sparsecnn train`` run, load its final weights, and take the
    first ``n_inputs`` test images of its dataset."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..data import load_dataset
    from ..training import TrainingConfig, build_model

    config_file, weights_file = directory / "config.json", directory / "model.safetensors"
    for required in (config_file, weights_file):
        if not required.is_file():
            raise ValueError(f"MODEL {directory} is not a finished sparsecnn train run: "
                             f"{required.name} is missing")
    try:
        config = TrainingConfig.from_dict(json.loads(config_file.read_text())["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{config_file} is not a sparsecnn train configuration: {error}") \
            from None
    dataset = load_dataset(config.dataset, seed=config.seed)
    n_classes = int(max(dataset.train_labels.max(), dataset.test_labels.max())) + 1
    model = build_model(config, tuple(dataset.train_images.shape[1:]), n_classes)
    try:
        tensors = load_file(str(weights_file))
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{weights_file} is not a readable safetensors file (corrupted or "
                         f"truncated?): {error}") from None
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:
        raise ValueError(f"weights in {weights_file} do not match the model of "
                         f"{config_file}: {error}") from None
    inputs = dataset.test_images[:n_inputs].to(next(model.parameters()).dtype)
    return model, inputs, f"{config.dataset} test images"


def train_default_model(epochs: int, seed: int, progress: bool = True
                        ) -> tuple[nn.Sequential, dict[str, Any], float]:
    """Train :data:`DEFAULT_ARCHITECTURE` on the digits (AdamW, cross-entropy, batch 64, seeded);
    return the model, its architecture and the test accuracy."""
    from tqdm.auto import tqdm

    from ..data import load_digits_split

    data = load_digits_split(seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_from_architecture(DEFAULT_ARCHITECTURE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    n_train = data.train_images.shape[0]
    for _ in tqdm(range(epochs), desc="train default CNN on digits", unit="epoch",
                  disable=not progress):
        model.train()
        order = torch.randperm(n_train, generator=generator)
        for start in range(0, n_train, 64):
            batch = order[start:start + 64]
            loss = nn.functional.cross_entropy(model(data.train_images[batch]),
                                               data.train_labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(data.test_images).argmax(1) == data.test_labels).double().mean())
    return model, DEFAULT_ARCHITECTURE, accuracy


def _inputs(architecture: dict[str, Any], n_inputs: int, seed: int) -> tuple[torch.Tensor, str]:
    shape = tuple(architecture["input_shape"])
    if shape == (1, 8, 8):
        from ..data import load_digits_split

        return load_digits_split(seed=seed).test_images[:n_inputs], "digits test images"
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((n_inputs, *shape), generator=generator), \
        f"standard normal images of shape {list(shape)} (seed {seed})"


@click.command("interpret")
@click.argument("model_path", metavar="[MODEL]", required=False,
                type=click.Path(exists=True, path_type=Path))
@click.option("--architecture", "architecture_path",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON architecture of MODEL (default: safetensors metadata, then "
              "MODEL.json).")
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
def command(model_path: Path | None, architecture_path: Path | None, out_dir: Path,
            n_inputs: int, epochs: int, max_iter: int, seed: int, device: str,
            overwrite: bool, no_progress: bool) -> None:
    """Read a CNN as hierarchical sparse coding: atoms, thresholds -b/||w||, improper priors,
    coherence, orthogonality gap and the gap between the ReLU code and the true sparse code.

    MODEL is a `sparsecnn train` run directory, or a safetensors file (architecture: see
    --architecture); without it a small CNN is trained on scikit-learn's digits first.
    """
    if out_dir.exists() and not overwrite:
        raise click.ClickException(f"{out_dir} exists; pass --overwrite to replace it")
    if seed < 0:
        raise click.BadParameter(f"--seed must be >= 0; got {seed}")
    try:
        torch_device = torch.device(device)
    except RuntimeError as error:
        raise click.BadParameter(f"--device {device!r}: {error}") from None
    run: dict[str, Any] = {"seed": seed, "n_inputs": n_inputs, "max_iter": max_iter}
    if model_path is None:
        model, architecture, accuracy = train_default_model(epochs, seed, not no_progress)
        run.update(model="default CNN trained on digits", epochs=epochs,
                   test_accuracy=accuracy)
    elif model_path.is_dir():
        try:
            model, inputs, description = load_training_run(model_path, n_inputs)
        except ValueError as error:
            raise click.ClickException(str(error)) from None
        run.update(model=str(model_path))
    else:
        try:
            model, architecture = load_model(model_path, architecture_path)
        except ValueError as error:
            raise click.ClickException(str(error)) from None
        run.update(model=str(model_path))
    if model_path is None or not model_path.is_dir():
        inputs, description = _inputs(architecture, n_inputs, seed)
    run["inputs"] = description
    model = model.to(torch_device)
    inputs = inputs.to(device=torch_device, dtype=next(model.parameters()).dtype)
    try:
        report = interpret(model, inputs, max_iter=max_iter,
                           model_name=run["model"])
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
