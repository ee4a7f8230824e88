"""Checkpoints and finished runs on disk: write and verify a checkpoint, find the latest one,
and load the model of a finished ``sparsecnn train`` run (:func:`load_run`).

Files of a checkpoint::

    checkpoints/epoch-0003/          one directory per epoch, renamed into place complete:
        model.safetensors            model weights
        training_state.safetensors   optimizer tensors and the torch RNG state
        state.json                   epoch, step, config, config hash, optimizer
                                     hyper-parameters and the SHA-256 of both files
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors
from torch import nn

from .. import io
from ..data import DatasetSplit, load_dataset
from .config import TrainingConfig, config_hash
from .models import build_model

__all__ = ["Checkpoint", "CheckpointError", "TrainingRun", "latest_checkpoint",
           "load_checkpoint", "load_run", "optimizer_state", "write_checkpoint"]


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupted, truncated or does not match the configuration."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor],
                                                                   dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_state(checkpoint: Checkpoint) -> dict[str, Any]:
    """The ``optimizer.state_dict()`` stored in ``checkpoint`` (tensors + JSON scalars)."""
    tensors, meta = checkpoint.training_state, checkpoint.state["optimizer"]
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        if not name.startswith("optimizer."):
            continue
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = tensor
    for index, values in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def _checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}"


def write_checkpoint(out_dir: Path, epoch: int, step: int, config: TrainingConfig,
                     model: nn.Module, optimizer: torch.optim.Optimizer) -> Path:
    """Write ``checkpoints/epoch-NNNN/`` of ``out_dir`` (renamed into place complete): the
    model and optimizer tensors bit for bit, the torch RNG state, and ``state.json`` with the
    epoch, step, configuration, its hash and the SHA-256 of both tensor files."""
    model_bytes = save_safetensors({k: v.detach().cpu().contiguous().clone()
                                    for k, v in model.state_dict().items()})
    optimizer_tensors, optimizer_meta = _optimizer_to_files(optimizer)
    optimizer_tensors["rng.torch"] = torch.get_rng_state()
    state_bytes = save_safetensors(optimizer_tensors)
    state = {"epoch": epoch, "global_step": step, "config": config.to_dict(),
             "config_hash": config_hash(config), "optimizer": optimizer_meta,
             "sha256": {"model.safetensors": _sha256(model_bytes),
                        "training_state.safetensors": _sha256(state_bytes)}}
    target = out_dir / "checkpoints" / _checkpoint_name(epoch)
    with io.atomic_directory(target, overwrite=True) as staging:
        io.write_bytes(staging / "model.safetensors", model_bytes)
        io.write_bytes(staging / "training_state.safetensors", state_bytes)
        io.write_json(staging / "state.json", state)
    return target


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint directory of the last finished epoch in ``out_dir``, or ``None``."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return None
    names = sorted(p.name for p in root.iterdir()
                   if p.is_dir() and p.name.startswith("epoch-") and p.name[6:].isdigit())
    return root / names[-1] if names else None


@dataclass
class Checkpoint:
    """A verified checkpoint: its state (JSON), model tensors and training-state tensors."""

    path: Path
    state: dict[str, Any]
    model: dict[str, torch.Tensor]
    training_state: dict[str, torch.Tensor]


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint directory; raise :class:`CheckpointError` (a
    ``ValueError``) naming the file if anything is missing, truncated or corrupted."""
    directory = Path(path)
    hint = (f"; delete {directory} to resume from the previous epoch's checkpoint, or start "
            "again with --overwrite")
    state_file = directory / "state.json"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {directory} has no state.json{hint}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"checkpoint file {state_file} is corrupted or truncated "
                              f"(invalid JSON: {error}){hint}") from None
    required = {"epoch", "global_step", "config", "config_hash", "optimizer", "sha256"}
    if not isinstance(state, dict) or not required <= set(state):
        raise CheckpointError(f"checkpoint file {state_file} is corrupted: expected the keys "
                              f"{sorted(required)}{hint}")
    loaded: dict[str, dict[str, torch.Tensor]] = {}
    for name in ("model.safetensors", "training_state.safetensors"):
        file = directory / name
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {directory} has no {name}{hint}") from None
        expected = state["sha256"].get(name)
        if _sha256(data) != expected:
            raise CheckpointError(
                f"checkpoint file {file} is corrupted or truncated: its SHA-256 does not match "
                f"the one recorded in state.json ({len(data)} bytes on disk){hint}")
        try:
            loaded[name] = load_safetensors(data)
        except (SafetensorError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"checkpoint file {file} cannot be read as safetensors: "
                                  f"{error}{hint}") from None
    return Checkpoint(directory, state, loaded["model.safetensors"],
                      loaded["training_state.safetensors"])


@dataclass(frozen=True)
class TrainingRun:
    """A finished run read back: its configuration, its model with the final weights (eval
    mode) and its dataset split (images in the model's dtype)."""

    config: TrainingConfig
    model: nn.Module
    data: DatasetSplit


def load_run(directory: str | Path, *, seed: int | None = None) -> TrainingRun:
    """Rebuild the model of the ``sparsecnn train`` run in ``directory`` from its
    ``config.json``, load its final ``model.safetensors``, and load its dataset split with
    ``seed`` (default: the run's own seed, i.e. the split it was trained on).

    Raises ``ValueError`` naming the file when the run is unfinished, its configuration
    unreadable or its weights unreadable or not those of the configured model.
    """
    directory = Path(directory)
    config_file, weights_file = directory / "config.json", directory / "model.safetensors"
    for required in (config_file, weights_file):
        if not required.is_file():
            raise ValueError(f"{directory} is not a finished sparsecnn train run: "
                             f"{required.name} is missing")
    try:
        config = TrainingConfig.from_dict(json.loads(config_file.read_text("utf-8"))["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{config_file} is not a sparsecnn train configuration: {error}") \
            from None
    data = load_dataset(config.dataset, seed=config.seed if seed is None else seed)
    model = build_model(config, data.image_shape, data.n_classes)
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
    return TrainingRun(config, model.eval(), data.to(next(model.parameters()).dtype))
