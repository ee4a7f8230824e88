"""Training loop with checkpoints, exact resume and data-parallel training (THEORY.md A.7, A.8).

A classifier is trained by minimising the cross-entropy ``-log p(y | Gamma_L(x))`` of the
logistic-regression head over the dictionaries, biases (thresholds) and head (THEORY.md A.7),
with AdamW or SGD.  With ``proper_prior=True`` every hidden bias is projected onto ``b <= 0``
after every optimizer step (THEORY.md A.8.1, check 10), so every prior stays proper.

Files in ``out_dir``::

    config.json                      the configuration and its hash
    metrics.jsonl                    one JSON line per finished epoch
    checkpoints/epoch-0003/          one directory per epoch, renamed into place complete:
        model.safetensors            model weights
        training_state.safetensors   optimizer tensors and the torch RNG state
        state.json                   epoch, step, config, config hash, optimizer
                                     hyper-parameters and the SHA-256 of both files
    model.safetensors                the final weights (written when training ends)

**Exact resume.**  The data order of epoch ``e`` is a permutation drawn from a generator seeded
with ``(seed, e)``, the model is initialised from ``seed``, and a checkpoint holds every tensor
of the model and the optimizer bit for bit (safetensors), so resuming from the checkpoint of
epoch ``e`` replays epochs ``e+1, ...`` exactly: the final weights are bit-identical to those of
an uninterrupted run (same machine, same thread count).  Resuming with a different
configuration is refused with the list of differing fields; a corrupted or truncated checkpoint
raises ``ValueError`` before anything is written.

**Data parallel.**  Under ``torchrun`` (or any initialised ``torch.distributed`` process group;
gloo on CPU) the model is wrapped in ``DistributedDataParallel``.  Every rank draws the same
global batch and takes a contiguous shard; the local loss is the *sum* of its cross-entropies
times ``world_size / global_batch``, so DDP's gradient average equals the gradient of the mean
loss over the global batch: the same update as one process with the same global batch, up to
floating-point summation order.  Rank 0 alone writes files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from . import io
from ._checks import check_choice, check_positive_float, check_positive_int
from .data import DatasetSplit, load_dataset

__all__ = [
    "MODELS",
    "OPTIMIZERS",
    "CheckpointError",
    "ConvClassifier",
    "TrainingConfig",
    "TrainingResult",
    "build_model",
    "config_hash",
    "hidden_bias_parameters",
    "latest_checkpoint",
    "load_checkpoint",
    "register_model",
    "train",
]

OPTIMIZERS = ("adamw", "sgd")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupted, truncated or does not match the configuration."""


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that determines a training run (and its hash).

    ``model`` names a builder in :data:`MODELS`: ``"cnn"`` (plain convolutions + ReLU + linear
    head: layered thresholding + logistic regression, THEORY.md A.6-A.7) or ``"sparse"``
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


# -- models -------------------------------------------------------------------------------------

class ConvClassifier(nn.Module):
    """Layered thresholding + logistic regression (THEORY.md A.6-A.7): hidden layers
    ``Gamma_l = ReLU(conv(Gamma_{l-1}, W_l) + b_l)`` (3x3, padding 1, no normalisation, no
    pooling), then ``softmax(W Gamma_L + c0)``; ``forward`` returns the logits."""

    def __init__(self, in_channels: int, image_size: tuple[int, int], channels: tuple[int, ...],
                 strides: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        height, width = image_size
        previous = in_channels
        for out_channels, stride in zip(channels, strides, strict=True):
            layers += [nn.Conv2d(previous, out_channels, 3, stride=stride, padding=1), nn.ReLU()]
            height = (height + 2 - 3) // stride + 1
            width = (width + 2 - 3) // stride + 1
            previous = out_channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(previous * height * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


ModelBuilder = Callable[[TrainingConfig, tuple[int, ...], int], nn.Module]


def _build_cnn(config: TrainingConfig, image_shape: tuple[int, ...], n_classes: int
               ) -> nn.Module:
    return ConvClassifier(image_shape[0], (image_shape[1], image_shape[2]), config.channels,
                          config.strides, n_classes)


def _build_sparse(config: TrainingConfig, image_shape: tuple[int, ...], n_classes: int
                  ) -> nn.Module:
    from .nn import HierarchicalSparseCoding, SparseCodingClassifier

    features = HierarchicalSparseCoding.convolutional(
        (image_shape[0], *config.channels), kernel_size=3, stride=list(config.strides),
        padding=1, n_iter=config.n_iter, method=config.method, nonneg=True,
        proper_prior=config.proper_prior)
    return SparseCodingClassifier(features, n_classes, tuple(image_shape))


def _build_ml_ista(config: TrainingConfig, image_shape: tuple[int, ...], n_classes: int
                   ) -> nn.Module:
    from .nn import HierarchicalSparseCoding, SparseCodingClassifier

    layers = HierarchicalSparseCoding.convolutional(
        (image_shape[0], *config.channels), kernel_size=3, stride=list(config.strides),
        padding=1, n_iter=0, nonneg=True, proper_prior=config.proper_prior)
    features = HierarchicalSparseCoding(*layers, inference="ml_ista", n_unfold=config.n_iter)
    return SparseCodingClassifier(features, n_classes, tuple(image_shape))


MODELS: dict[str, ModelBuilder] = {"cnn": _build_cnn, "sparse": _build_sparse,
                                   "ml_ista": _build_ml_ista}


def register_model(name: str, builder: ModelBuilder) -> None:
    """Make ``builder(config, image_shape, n_classes) -> nn.Module`` available as ``model=name``
    (the module must return logits and name its classifier layer ``head``)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string; got {name!r}")
    if not callable(builder):
        raise TypeError(f"builder must be callable; got {type(builder).__name__}")
    MODELS[name] = builder


def build_model(config: TrainingConfig, image_shape: tuple[int, ...], n_classes: int
                ) -> nn.Module:
    """The model of ``config``, initialised from ``torch.manual_seed(config.seed)`` without
    touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = MODELS[config.model](config, tuple(image_shape), n_classes)
    return model.to(DTYPES[config.dtype])


def hidden_bias_parameters(model: nn.Module) -> list[torch.Tensor]:
    """Biases of the hidden (sparse-coding) layers: every ``bias`` outside ``model.head``."""
    head = getattr(model, "head", None)
    excluded = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    return [p for name, p in model.named_parameters()
            if name.endswith("bias") and id(p) not in excluded]


def _project_biases(biases: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for bias in biases:
            bias.clamp_(max=0.0)


def _max_bias(biases: list[torch.Tensor]) -> float:
    if not biases:
        return float("-inf")
    return max(float(b.detach().max()) for b in biases)


# -- checkpoints --------------------------------------------------------------------------------

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


def _optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]
                          ) -> dict[str, Any]:
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


def _write_checkpoint(out_dir: Path, epoch: int, step: int, config: TrainingConfig,
                      model: nn.Module, optimizer: torch.optim.Optimizer) -> Path:
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


def _config_differences(saved: dict[str, Any], current: TrainingConfig) -> list[str]:
    now = current.to_dict()
    keys = sorted(set(saved) | set(now))
    return [f"{key}: checkpoint has {saved.get(key)!r}, this run has {now.get(key)!r}"
            for key in keys if saved.get(key) != now.get(key)]


# -- the loop -----------------------------------------------------------------------------------

@dataclass
class TrainingResult:
    """The trained model (unwrapped from DDP), one metrics record per epoch, and where the
    files are (``None`` for an in-memory run)."""

    model: nn.Module
    config: TrainingConfig
    metrics: list[dict[str, Any]] = field(default_factory=list)
    out_dir: Path | None = None
    resumed_from_epoch: int = 0

    @property
    def final(self) -> dict[str, Any]:
        return self.metrics[-1] if self.metrics else {}


@dataclass
class _Distributed:
    rank: int = 0
    world_size: int = 1
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _setup_distributed() -> _Distributed:
    import torch.distributed as dist

    if not dist.is_available():
        return _Distributed()
    initialized_here = False
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
        initialized_here = True
    if not dist.is_initialized():
        return _Distributed()
    return _Distributed(dist.get_rank(), dist.get_world_size(), initialized_here)


def _make_optimizer(config: TrainingConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                 weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.learning_rate,
                           momentum=config.momentum, weight_decay=config.weight_decay)


def _epoch_order(config: TrainingConfig, epoch: int, n: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def _activation_zero_fraction(model: nn.Module, images: torch.Tensor) -> float:
    """Fraction of exactly-zero hidden activations (codes) over ``images``."""
    counts = [0, 0]

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        counts[0] += int((output == 0).sum())
        counts[1] += output.numel()

    head = getattr(model, "head", None)
    handles = [module.register_forward_hook(hook) for module in model.modules()
               if (isinstance(module, nn.ReLU) or hasattr(module, "n_iter"))
               and module is not head]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return counts[0] / counts[1] if counts[1] else 0.0


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 1024) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(images, labels)``."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            logits = model(images[start:start + batch_size])
            target = labels[start:start + batch_size]
            total_loss += float(F.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(1) == target).sum())
    model.train(was_training)
    n = max(images.shape[0], 1)
    return {"loss": total_loss / n, "accuracy": correct / n}


def _prepare_out_dir(out_dir: Path, config: TrainingConfig, *, resume: bool, overwrite: bool
                     ) -> Checkpoint | None:
    """Validate ``out_dir`` for a fresh run or a resume; return the checkpoint to resume from.
    Nothing is written or deleted here when resuming."""
    if resume:
        if not out_dir.is_dir():
            raise ValueError(f"--resume needs an existing run directory; {out_dir} does not "
                             "exist")
        config_file = out_dir / "config.json"
        if config_file.exists():
            try:
                saved = json.loads(config_file.read_text(encoding="utf-8"))["config"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise CheckpointError(f"{config_file} is corrupted ({error}); cannot check "
                                      "that the run matches this configuration") from None
            differences = _config_differences(saved, config)
            if differences:
                raise ValueError("refusing to resume: the configuration differs from the "
                                 f"interrupted run's ({config_file}): " + "; ".join(differences))
        latest = latest_checkpoint(out_dir)
        if latest is None:
            return None
        checkpoint = load_checkpoint(latest)
        differences = _config_differences(checkpoint.state["config"], config)
        if differences or checkpoint.state["config_hash"] != config_hash(config):
            raise ValueError(f"refusing to resume: the configuration differs from the one "
                             f"saved in {latest}: " + "; ".join(differences or ["hash"]))
        return checkpoint
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise io.OutputExistsError(f"{out_dir} exists and is not empty; pass --overwrite "
                                       "to start again or --resume to continue the run")
        for name in ("checkpoints",):
            shutil.rmtree(out_dir / name, ignore_errors=True)
        for name in ("metrics.jsonl", "model.safetensors", "config.json", "summary.json"):
            (out_dir / name).unlink(missing_ok=True)
    return None


def train(config: TrainingConfig, out_dir: str | Path | None = None, *, resume: bool = False,
          overwrite: bool = False, progress: bool = True, dataset: DatasetSplit | None = None,
          callback: Callable[[str, dict[str, Any]], None] | None = None,
          eval_every: int = 1, device: str | torch.device = "cpu") -> TrainingResult:
    """Train the model of ``config``; see the module docstring for files, resume and DDP.

    Parameters
    ----------
    out_dir : run directory; ``None`` trains in memory (no checkpoints, no resume).
    resume : continue the interrupted run in ``out_dir`` from its last checkpoint.
    overwrite : start afresh in a non-empty ``out_dir`` (its checkpoints are deleted).
    dataset : a :class:`~sparsecnn.data.DatasetSplit` to use instead of loading
        ``config.dataset`` (it is still named in the config).
    callback : called as ``callback(event, info)`` after every step (``"step"``) and epoch
        (``"epoch"``); an exception raised there interrupts training like a crash would.
    eval_every : evaluate train/test accuracy, loss and activation sparsity every this many
        epochs (and always after the last one); other epochs record the running loss only.
    device : where the model and data live (``"cpu"``, ``"cuda:0"``, ...).  The model is
        initialised on the CPU from the seed and then moved; checkpoints are stored from the
        CPU, so a run can be resumed on another device (bit-identity holds on the same one).
    """
    eval_every = check_positive_int(eval_every, "eval_every")
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0'; got "
                         f"{device!r}") from None
    if not isinstance(config, TrainingConfig):
        raise TypeError(f"config must be a TrainingConfig; got {type(config).__name__}")
    distributed = _setup_distributed()
    try:
        return _train(config, None if out_dir is None else Path(out_dir), resume=resume,
                      overwrite=overwrite, progress=progress, dataset=dataset,
                      callback=callback, distributed=distributed, eval_every=eval_every,
                      device=target)
    finally:
        if distributed.initialized_here:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(config: TrainingConfig, out_dir: Path | None, *, resume: bool, overwrite: bool,
           progress: bool, dataset: DatasetSplit | None,
           callback: Callable[[str, dict[str, Any]], None] | None,
           distributed: _Distributed, eval_every: int, device: torch.device
           ) -> TrainingResult:
    writer = out_dir is not None and distributed.rank == 0
    checkpoint = None
    if out_dir is None and resume:
        raise ValueError("resume=True needs out_dir (the directory of the interrupted run)")
    failure: BaseException | None = None
    if out_dir is not None and (resume or distributed.rank == 0):
        try:
            checkpoint = _prepare_out_dir(out_dir, config, resume=resume, overwrite=overwrite)
        except (ValueError, OSError) as error:
            failure = error
    if distributed.enabled:
        import torch.distributed as dist

        ready = torch.tensor([0 if failure is not None else 1])
        dist.all_reduce(ready, op=dist.ReduceOp.MIN)
        if failure is None and int(ready) == 0:
            raise RuntimeError("another rank could not prepare the run directory "
                               f"{out_dir}; see its error")
    if failure is not None:
        raise failure
    dtype = DTYPES[config.dtype]
    data = (dataset if dataset is not None else load_dataset(config.dataset, seed=config.seed)
            ).to(dtype)
    data = DatasetSplit(data.name, data.train_images.to(device), data.train_labels.to(device),
                        data.test_images.to(device), data.test_labels.to(device),
                        data.n_classes)
    model = build_model(config, data.image_shape, data.n_classes).to(device)
    optimizer = _make_optimizer(config, model)
    biases = hidden_bias_parameters(model)
    metrics: list[dict[str, Any]] = []
    start_epoch, step = 1, 0
    if checkpoint is not None:
        try:
            model.load_state_dict(checkpoint.model)
            optimizer.load_state_dict(_optimizer_from_files(checkpoint.training_state,
                                                            checkpoint.state["optimizer"]))
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(f"checkpoint {checkpoint.path} does not fit the model of "
                                  f"this configuration: {error}") from None
        torch.set_rng_state(checkpoint.training_state["rng.torch"])
        start_epoch = int(checkpoint.state["epoch"]) + 1
        step = int(checkpoint.state["global_step"])
        metrics = _read_metrics(out_dir, upto=start_epoch - 1) if out_dir else []
    if config.proper_prior:
        _project_biases(biases)
    if writer:
        io.write_json(out_dir / "config.json",
                      {"config": config.to_dict(), "config_hash": config_hash(config)})
    network: nn.Module = model
    if distributed.enabled:
        network = nn.parallel.DistributedDataParallel(
            model, device_ids=None if device.type == "cpu" else [device])
    n_train = data.train_images.shape[0]
    epochs: Iterable[int] = range(start_epoch, config.epochs + 1)
    if progress and distributed.rank == 0:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc=f"train {config.model}", unit="epoch",
                      initial=start_epoch - 1, total=config.epochs)
    for epoch in epochs:
        began = time.perf_counter()
        order = _epoch_order(config, epoch, n_train).to(device)
        network.train()
        loss_sum, max_bias_seen = 0.0, float("-inf")
        for start in range(0, n_train, config.batch_size):
            global_batch = order[start:start + config.batch_size]
            local = global_batch.tensor_split(distributed.world_size)[distributed.rank]
            logits = network(data.train_images[local])
            loss = F.cross_entropy(logits, data.train_labels[local], reduction="sum") * (
                distributed.world_size / global_batch.numel())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if config.proper_prior:
                _project_biases(biases)
            step += 1
            max_bias_seen = max(max_bias_seen, _max_bias(biases))
            loss_sum += float(loss.detach()) * global_batch.numel() / distributed.world_size
            if callback is not None:
                callback("step", {"epoch": epoch, "step": step, "max_hidden_bias":
                                  _max_bias(biases)})
        full = epoch % eval_every == 0 or epoch == config.epochs
        record = _epoch_record(model, data, epoch, step, loss_sum, n_train, distributed,
                               max_bias_seen, biases, time.perf_counter() - began, full)
        metrics.append(record)
        if writer:
            _write_checkpoint(out_dir, epoch, step, config, model, optimizer)
            io.write_text(out_dir / "metrics.jsonl",
                          "".join(json.dumps(m, allow_nan=False) + "\n" for m in metrics))
        if hasattr(epochs, "set_postfix") and full:
            epochs.set_postfix(loss=f"{record['train_loss']:.3f}",
                               test_acc=f"{record['test_accuracy']:.3f}")
        if callback is not None:
            callback("epoch", dict(record))
    if writer:
        io.write_bytes(out_dir / "model.safetensors", save_safetensors(
            {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}))
        io.write_json(out_dir / "summary.json", {"config": config.to_dict(),
                                                 "final": metrics[-1] if metrics else {}})
    return TrainingResult(model=model, config=config, metrics=metrics, out_dir=out_dir,
                          resumed_from_epoch=start_epoch - 1)


def _epoch_record(model: nn.Module, data: DatasetSplit, epoch: int, step: int, loss_sum: float,
                  n_train: int, distributed: _Distributed, max_bias_seen: float,
                  biases: list[torch.Tensor], seconds: float, full: bool) -> dict[str, Any]:
    if distributed.enabled:
        import torch.distributed as dist

        total = torch.tensor([loss_sum], dtype=torch.float64)
        dist.all_reduce(total)
        loss_sum = float(total)
    record: dict[str, Any] = {"epoch": epoch, "step": step,
                              "train_loss_running": loss_sum / n_train, "seconds": seconds,
                              "world_size": distributed.world_size}
    if full:
        test = evaluate(model, data.test_images, data.test_labels)
        train_eval = evaluate(model, data.train_images, data.train_labels)
        record.update({
            "train_loss": train_eval["loss"], "train_accuracy": train_eval["accuracy"],
            "test_loss": test["loss"], "test_accuracy": test["accuracy"],
            "zero_fraction": _activation_zero_fraction(model, data.test_images)})
    if biases:
        record["max_hidden_bias"] = _max_bias(biases)
        record["max_hidden_bias_any_step"] = max_bias_seen
    return record


def _read_metrics(out_dir: Path, upto: int) -> list[dict[str, Any]]:
    file = out_dir / "metrics.jsonl"
    if not file.exists():
        return []
    records = []
    for line in file.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break  # a torn last line: the checkpoint, not the log, is authoritative
        if record.get("epoch", upto + 1) <= upto:
            records.append(record)
    return records
