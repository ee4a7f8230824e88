"""Models and training runs: configure, build, fit, checkpoint, resume and load classifiers.

- ``config``: :class:`TrainingConfig` (what determines a run) and its hash;
- ``models``: :class:`ConvClassifier`, the registry :data:`MODELS`, :func:`small_cnn`;
- ``architecture``: the architecture JSON of a plain ``nn.Sequential`` CNN, save and load;
- ``fit``: the one seeded mini-batch loop (:func:`fit_classifier`) and the recipes on it;
- ``checkpoint``: checkpoint files, :func:`latest_checkpoint`, :func:`load_run`;
- ``metrics``: what a run records per epoch;
- ``distributed``: the data-parallel process group of a run;
- ``run``: :func:`train`, a run with checkpoints, exact resume and data parallelism;
- ``rundir``: the run directory's lock, leftovers and ``--overwrite``.
"""

from .architecture import (
    ARCHITECTURE_FORMAT,
    DEFAULT_ARCHITECTURE,
    build_from_architecture,
    load_model,
    save_model,
)
from .checkpoint import (
    Checkpoint,
    CheckpointError,
    TrainingRun,
    latest_checkpoint,
    load_checkpoint,
    load_run,
)
from .config import DTYPES, OPTIMIZERS, TrainingConfig, config_hash
from .fit import fit_classifier, refit_head, train_classifier, train_default_model
from .metrics import evaluate
from .models import (
    MODELS,
    ConvClassifier,
    ModelBuilder,
    build_model,
    hidden_bias_parameters,
    register_model,
    small_cnn,
)
from .run import TrainingDivergedError, TrainingResult, train

__all__ = [
    "ARCHITECTURE_FORMAT",
    "DEFAULT_ARCHITECTURE",
    "DTYPES",
    "MODELS",
    "OPTIMIZERS",
    "Checkpoint",
    "CheckpointError",
    "ConvClassifier",
    "ModelBuilder",
    "TrainingConfig",
    "TrainingDivergedError",
    "TrainingResult",
    "TrainingRun",
    "build_from_architecture",
    "build_model",
    "config_hash",
    "evaluate",
    "fit_classifier",
    "hidden_bias_parameters",
    "latest_checkpoint",
    "load_checkpoint",
    "load_model",
    "load_run",
    "refit_head",
    "register_model",
    "save_model",
    "small_cnn",
    "train",
    "train_classifier",
    "train_default_model",
]
