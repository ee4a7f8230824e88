"""The architecture JSON format of a plain ``nn.Sequential`` CNN, and its safetensors files.

The description (JSON; :func:`load_model` reads it from ``architecture_path``, else the
safetensors metadata key ``sparsecnn_architecture``, else the weights' path with suffix
``.json``)::

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

A model written by ``sparsecnn train`` (any registered model, not only ``nn.Sequential``)
carries instead the metadata key ``sparsecnn_training_model``::

    {"format": "sparsecnn-training-model/1", "config": {...TrainingConfig...},
     "input_shape": [1, 8, 8], "n_classes": 10}

from which :func:`load_model` rebuilds it with :func:`~sparsecnn.training.build_model`, so the
file is readable on its own, without its run directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from ..io import write_bytes

__all__ = ["ARCHITECTURE_FORMAT", "DEFAULT_ARCHITECTURE", "METADATA_KEY",
           "TRAINING_METADATA_KEY", "build_from_architecture", "load_model", "save_model",
           "training_metadata"]

ARCHITECTURE_FORMAT = "sparsecnn-architecture/1"
METADATA_KEY = "sparsecnn_architecture"
TRAINING_FORMAT = "sparsecnn-training-model/1"
TRAINING_METADATA_KEY = "sparsecnn_training_model"

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


def training_metadata(config: Any, input_shape: tuple[int, ...], n_classes: int
                      ) -> dict[str, str]:
    """The safetensors metadata that makes a ``train`` model file readable on its own."""
    return {TRAINING_METADATA_KEY: json.dumps({
        "format": TRAINING_FORMAT, "config": config.to_dict(),
        "input_shape": [int(s) for s in input_shape], "n_classes": int(n_classes)})}


def _build_from_training(text: str, source: str) -> tuple[nn.Module, dict[str, Any]]:
    from .config import TrainingConfig
    from .models import build_model

    try:
        description = json.loads(text)
        if not isinstance(description, dict) or description.get("format") != TRAINING_FORMAT:
            raise ValueError(f"expected an object with format {TRAINING_FORMAT!r}")
        shape, n_classes = description["input_shape"], description["n_classes"]
        if not (isinstance(shape, list) and len(shape) == 3 and all(
                isinstance(v, int) and v > 0 for v in shape)):
            raise ValueError(f"'input_shape' must be [channels, height, width]; got {shape!r}")
        if not (isinstance(n_classes, int) and n_classes >= 2):
            raise ValueError(f"'n_classes' must be an integer >= 2; got {n_classes!r}")
        config = TrainingConfig.from_dict(description["config"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"the training description in {source} is invalid: {error}") from None
    return build_model(config, tuple(shape), n_classes), description


def load_model(path: Path, architecture_path: Path | None = None
               ) -> tuple[nn.Module, dict[str, Any]]:
    """Load a safetensors model; the architecture comes from ``architecture_path``, the file's
    metadata (a ``train`` model's description, else an architecture) or ``path`` with suffix
    ``.json`` (in that order).  The returned description always has ``input_shape``."""
    path = Path(path)
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
    elif TRAINING_METADATA_KEY in metadata:
        source, text = f"{path} metadata", metadata[TRAINING_METADATA_KEY]
    elif METADATA_KEY in metadata:
        source, text = f"{path} metadata", metadata[METADATA_KEY]
    elif path.with_suffix(".json").exists():
        source, text = str(path.with_suffix(".json")), path.with_suffix(".json").read_text()
    else:
        raise ValueError(
            f"no architecture for {path}: pass --architecture FILE.json, or store it in the "
            f"safetensors metadata key {METADATA_KEY!r}, or put it in "
            f"{path.with_suffix('.json')}")
    if architecture_path is None and TRAINING_METADATA_KEY in metadata:
        model, architecture = _build_from_training(text, source)
    else:
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
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:  # e.g. a sparse layer's constraint on its weights
        raise ValueError(f"weights in {path} cannot be loaded: {error}") from None
    return model.eval(), architecture
