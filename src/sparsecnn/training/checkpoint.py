"""Checkpoints and finished runs on disk: write and verify a checkpoint, find the latest one,
and load the model of a finished ``sparsecnn train`` run (:func:`load_run`).

Files of a checkpoint::

    checkpoints/epoch-0003/          one directory per epoch, renamed into place complete:
        model.safetensors            model weights (the run's description in the metadata)
        training_state.safetensors   optimizer tensors and the torch RNG state
        metrics.jsonl                the metrics records of epochs 1..3
        state.json                   epoch, step, config, config hash, optimizer
                                     hyper-parameters and the SHA-256 of the three files above

The metrics travel inside the checkpoint directory, so the weights of an epoch and its metrics
appear together in one rename or not at all: a kill at any instant loses neither.  A
checkpoint is read back only after :func:`validate_state` has checked ``state.json`` (types,
ranges, and consistency with the directory name, the configuration and its hash) and every
file's SHA-256.
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
           "load_checkpoint", "load_run", "optimizer_state", "validate_state",
           "write_checkpoint"]

_FILES = ("model.safetensors", "training_state.safetensors", "metrics.jsonl")


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
                     model: nn.Module, optimizer: torch.optim.Optimizer,
                     metrics: list[dict[str, Any]], *,
                     model_metadata: dict[str, str] | None = None) -> Path:
    """Write ``checkpoints/epoch-NNNN/`` of ``out_dir`` (renamed into place complete): the
    model and optimizer tensors bit for bit, the torch RNG state, the metrics records of
    epochs ``1..epoch`` and ``state.json`` with the epoch, step, configuration, its hash and
    the SHA-256 of the three files."""
    model_bytes = save_safetensors({k: v.detach().cpu().contiguous().clone()
                                    for k, v in model.state_dict().items()},
                                   metadata=model_metadata)
    optimizer_tensors, optimizer_meta = _optimizer_to_files(optimizer)
    optimizer_tensors["rng.torch"] = torch.get_rng_state()
    state_bytes = save_safetensors(optimizer_tensors)
    metrics_bytes = "".join(json.dumps(m, allow_nan=False) + "\n" for m in metrics
                            ).encode("utf-8")
    contents = dict(zip(_FILES, (model_bytes, state_bytes, metrics_bytes), strict=True))
    state = {"epoch": epoch, "global_step": step, "config": config.to_dict(),
             "config_hash": config_hash(config), "optimizer": optimizer_meta,
             "sha256": {name: _sha256(data) for name, data in contents.items()}}
    target = out_dir / "checkpoints" / _checkpoint_name(epoch)
    with io.atomic_directory(target, overwrite=True) as staging:
        for name, data in contents.items():
            io.write_bytes(staging / name, data)
        io.write_json(staging / "state.json", state)
    return target


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint directory of the last finished epoch in ``out_dir``, or ``None``."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return None
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and _epoch_of(p.name))
    return root / names[-1] if names else None


def _epoch_of(name: str) -> int | None:
    """The epoch of a checkpoint directory name ``epoch-NNNN`` (``None`` for other names)."""
    digits = name[6:]
    if name.startswith("epoch-") and len(digits) >= 4 and digits.isascii() and digits.isdigit():
        return int(digits)
    return None


@dataclass
class Checkpoint:
    """A verified checkpoint: its state (JSON), model tensors, training-state tensors and the
    metrics records of the epochs up to its own."""

    path: Path
    state: dict[str, Any]
    model: dict[str, torch.Tensor]
    training_state: dict[str, torch.Tensor]
    metrics: list[dict[str, Any]]

    @property
    def config(self) -> TrainingConfig:
        return TrainingConfig.from_dict(self.state["config"])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(
        c in "0123456789abcdef" for c in value)


def validate_state(state: Any, directory: Path) -> list[str]:
    """The problems of a checkpoint's ``state.json`` (empty when it is sound).

    Schema: ``epoch`` an integer >= 1 equal to the directory's ``epoch-NNNN`` and at most the
    configured ``epochs``; ``global_step`` an integer >= ``epoch`` (an epoch takes at least one
    step); ``config`` a valid :class:`TrainingConfig` whose :func:`config_hash` is
    ``config_hash``; ``optimizer`` one parameter group whose ``lr``, ``weight_decay`` (and
    ``momentum`` for SGD) are the configuration's, and a SHA-256 for each checkpoint file.
    """
    if not isinstance(state, dict):
        return [f"expected a JSON object; got {type(state).__name__}"]
    required = {"epoch", "global_step", "config", "config_hash", "optimizer", "sha256"}
    missing = sorted(required - set(state))
    if missing:
        return [f"expected the keys {sorted(required)}; missing {missing}"]
    problems = []
    epoch, step = state["epoch"], state["global_step"]
    if not _is_int(epoch) or epoch < 1:
        problems.append(f"'epoch' must be an integer >= 1; got {epoch!r}")
    elif _epoch_of(directory.name) is not None and _epoch_of(directory.name) != epoch:
        problems.append(f"'epoch' is {epoch} but the directory is {directory.name}")
    if not _is_int(step) or (_is_int(epoch) and step < max(epoch, 1)) or step < 0:
        problems.append(f"'global_step' must be an integer >= epoch; got {step!r}")
    config = None
    try:
        config = TrainingConfig.from_dict(state["config"])
    except (TypeError, ValueError, AttributeError) as error:
        problems.append(f"'config' is not a training configuration ({error})")
    if config is not None:
        if state["config_hash"] != config_hash(config):
            problems.append("'config_hash' is not the hash of 'config'")
        if _is_int(epoch) and epoch > config.epochs:
            problems.append(f"'epoch' {epoch} is beyond the configured {config.epochs} epochs")
    problems += _optimizer_problems(state["optimizer"], config)
    hashes = state["sha256"]
    if not isinstance(hashes, dict) or not all(_is_sha256(hashes.get(n)) for n in _FILES):
        problems.append(f"'sha256' must map each of {list(_FILES)} to a SHA-256 hex digest")
    return problems


def _optimizer_problems(meta: Any, config: TrainingConfig | None) -> list[str]:
    groups = meta.get("param_groups") if isinstance(meta, dict) else None
    if not (isinstance(groups, list) and len(groups) == 1 and isinstance(groups[0], dict)
            and isinstance(meta.get("scalars", {}), dict)):
        return ["'optimizer' must hold one parameter group ('param_groups') and 'scalars'"]
    if config is None:
        return []
    expected = {"lr": config.learning_rate, "weight_decay": config.weight_decay}
    if config.optimizer == "sgd":
        expected["momentum"] = config.momentum
    # the optimizer's own copy would silently override the configuration on resume
    return [f"optimizer '{key}' is {groups[0].get(key)!r} but the configuration says {value!r}"
            for key, value in expected.items() if groups[0].get(key) != value]


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint directory; raise :class:`CheckpointError` (a
    ``ValueError``) naming the file if anything is missing, truncated, corrupted or
    inconsistent (:func:`validate_state`)."""
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
    problems = validate_state(state, directory)
    if problems:
        raise CheckpointError(f"checkpoint file {state_file} is corrupted: "
                              + "; ".join(problems) + hint)
    contents: dict[str, bytes] = {}
    for name in _FILES:
        file = directory / name
        try:
            contents[name] = file.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {directory} has no {name}{hint}") from None
        if _sha256(contents[name]) != state["sha256"][name]:
            raise CheckpointError(
                f"checkpoint file {file} is corrupted or truncated: its SHA-256 does not match "
                f"the one recorded in state.json ({len(contents[name])} bytes on disk){hint}")
    loaded: dict[str, dict[str, torch.Tensor]] = {}
    for name in _FILES[:2]:
        try:
            loaded[name] = load_safetensors(contents[name])
        except (SafetensorError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"checkpoint file {directory / name} cannot be read as "
                                  f"safetensors: {error}{hint}") from None
    try:
        metrics = [json.loads(line) for line in
                   contents["metrics.jsonl"].decode("utf-8").splitlines()]
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint file {directory / 'metrics.jsonl'} is not JSON "
                              f"lines: {error}{hint}") from None
    if [m.get("epoch") if isinstance(m, dict) else None for m in metrics] != \
            list(range(1, state["epoch"] + 1)):
        raise CheckpointError(f"checkpoint file {directory / 'metrics.jsonl'} must hold one "
                              f"record per epoch 1..{state['epoch']}{hint}")
    return Checkpoint(directory, state, loaded["model.safetensors"],
                      loaded["training_state.safetensors"], metrics)


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
