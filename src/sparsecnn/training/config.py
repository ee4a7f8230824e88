"""What determines a training run: :class:`TrainingConfig`, its validation and its hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch

from .._checks import check_choice, check_positive_float, check_positive_int

__all__ = ["DTYPES", "OPTIMIZERS", "TrainingConfig", "config_differences", "config_hash"]

OPTIMIZERS = ("adamw", "sgd")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that determines a training run (and its hash).

    ``model`` names a builder in :data:`MODELS`: ``"cnn"`` (plain convolutions + ReLU + linear
    head: layered thresholding + logistic regression, docs/theory.md A.6-A.7) or ``"sparse"``
    (:class:`sparsecnn.nn.SparseCodingClassifier`, layered inference with ``n_iter`` steps of
    ``method`` per layer) or ``"ml_ista"`` (the same classifier with ``n_iter`` unfoldings of
    the joint multi-layer ISTA of Sulam et al. 2018, from layered thresholding).
    ``channels`` and ``strides`` give the hidden convolutional layers (3x3 kernels, padding 1).
    ``proper_prior`` projects every hidden bias onto ``b <= 0`` after every step.
    """

    dataset: str = "digits"
    model: str = "cnn"
    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "adamw"
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    seed: int = 0
    channels: tuple[int, ...] = (32, 64)
    strides: tuple[int, ...] = (1, 2)
    proper_prior: bool = False
    n_iter: int = 0
    method: str = "ista"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        # Read the registry at validation time, not import time: register_model may add
        # builders after this module is imported (and the registry's module imports this one).
        from .models import MODELS

        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"dataset must be 'digits' or a file path; got {self.dataset!r}")
        check_choice(self.model, "model", tuple(MODELS))
        check_positive_int(self.epochs, "epochs")
        check_positive_int(self.batch_size, "batch_size")
        check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        check_positive_float(self.learning_rate, "learning_rate")
        check_positive_float(self.weight_decay, "weight_decay", allow_zero=True)
        check_positive_float(self.momentum, "momentum", allow_zero=True)
        check_positive_int(self.seed, "seed", minimum=0)
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "strides", tuple(self.strides))
        if not self.channels or len(self.channels) != len(self.strides):
            raise ValueError(f"channels and strides must be non-empty and of equal length; got "
                             f"channels={self.channels!r}, strides={self.strides!r}")
        for value in (*self.channels, *self.strides):
            check_positive_int(value, "channels/strides entry")
        check_positive_int(self.n_iter, "n_iter", minimum=0)
        check_choice(self.method, "method", ("ista", "fista", "lca"))
        check_choice(self.dtype, "dtype", tuple(DTYPES))

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["channels"] = list(self.channels)
        values["strides"] = list(self.strides)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training configuration field(s) {unknown}; expected a "
                             f"subset of {sorted(known)}")
        return cls(**values)


def config_hash(config: TrainingConfig) -> str:
    """SHA-256 of the configuration's canonical JSON."""
    text = json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_differences(saved: dict[str, Any], current: TrainingConfig) -> list[str]:
    """One line per field whose value in ``saved`` (a :meth:`TrainingConfig.to_dict`) differs
    from ``current``'s; empty when they agree."""
    now = current.to_dict()
    keys = sorted(set(saved) | set(now))
    return [f"{key}: checkpoint has {saved.get(key)!r}, this run has {now.get(key)!r}"
            for key in keys if saved.get(key) != now.get(key)]
