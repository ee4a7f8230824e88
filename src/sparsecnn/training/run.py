"""Training runs with checkpoints, exact resume and data-parallel training (docs/theory.md A.7,
A.8).

A classifier is trained by minimising the cross-entropy ``-log p(y | Gamma_L(x))`` of the
logistic-regression head over the dictionaries, biases (thresholds) and head (docs/theory.md A.7),
with AdamW or SGD.  With ``proper_prior=True`` every hidden bias is projected onto ``b <= 0``
after every optimizer step (docs/theory.md A.8.1, check 10), so every prior stays proper.

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

import json
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_safetensors
from torch import nn

from .. import io
from .._checks import check_positive_int
from ..data import DatasetSplit, load_dataset
from .checkpoint import (
    Checkpoint,
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    optimizer_state,
    write_checkpoint,
)
from .config import DTYPES, TrainingConfig, config_differences, config_hash
from .distributed import ProcessGroup, join_process_group
from .fit import fit_epoch, make_optimizer, project_biases
from .metrics import epoch_record, max_bias, read_metrics
from .models import build_model, hidden_bias_parameters

__all__ = ["TrainingResult", "train"]


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
            differences = config_differences(saved, config)
            if differences:
                raise ValueError("refusing to resume: the configuration differs from the "
                                 f"interrupted run's ({config_file}): " + "; ".join(differences))
        latest = latest_checkpoint(out_dir)
        if latest is None:
            return None
        checkpoint = load_checkpoint(latest)
        differences = config_differences(checkpoint.state["config"], config)
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
    group = join_process_group()
    try:
        return _train(config, None if out_dir is None else Path(out_dir), resume=resume,
                      overwrite=overwrite, progress=progress, dataset=dataset,
                      callback=callback, group=group, eval_every=eval_every, device=target)
    finally:
        group.leave()


@dataclass
class _EpochTally:
    """The running sums of one epoch's steps, updated by ``fit_epoch`` after every step:
    the global step count, ``sum_steps loss * n / world_size`` (this rank's share of the
    summed cross-entropy) and the largest hidden bias after any step."""

    epoch: int
    step: int
    biases: list[torch.Tensor]
    world_size: int
    callback: Callable[[str, dict[str, Any]], None] | None
    loss_sum: float = 0.0
    max_bias_seen: float = float("-inf")

    def __call__(self, loss: torch.Tensor, n: int) -> None:
        self.step += 1
        self.max_bias_seen = max(self.max_bias_seen, max_bias(self.biases))
        self.loss_sum += float(loss) * n / self.world_size
        if self.callback is not None:
            self.callback("step", {"epoch": self.epoch, "step": self.step,
                                   "max_hidden_bias": max_bias(self.biases)})


def _epoch_order(config: TrainingConfig, epoch: int, n: int) -> torch.Tensor:
    """The data order of ``epoch``: a permutation seeded with ``(seed, epoch)`` alone, so a
    resumed run replays it without any saved generator state."""
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def _train(config: TrainingConfig, out_dir: Path | None, *, resume: bool, overwrite: bool,
           progress: bool, dataset: DatasetSplit | None,
           callback: Callable[[str, dict[str, Any]], None] | None,
           group: ProcessGroup, eval_every: int, device: torch.device
           ) -> TrainingResult:
    writer = out_dir is not None and group.rank == 0
    checkpoint = None
    if out_dir is None and resume:
        raise ValueError("resume=True needs out_dir (the directory of the interrupted run)")
    failure: BaseException | None = None
    if out_dir is not None and (resume or group.rank == 0):
        try:
            checkpoint = _prepare_out_dir(out_dir, config, resume=resume, overwrite=overwrite)
        except (ValueError, OSError) as error:
            failure = error
    # Every rank must learn that one rank failed, or the others would hang in all_reduce.
    if not group.all_ready(failure is None) and failure is None:
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
    optimizer = make_optimizer(config.optimizer, model.parameters(),
                               learning_rate=config.learning_rate,
                               weight_decay=config.weight_decay, momentum=config.momentum)
    biases = hidden_bias_parameters(model)
    project = biases if config.proper_prior else []
    metrics: list[dict[str, Any]] = []
    start_epoch, step = 1, 0
    if checkpoint is not None:
        try:
            model.load_state_dict(checkpoint.model)
            optimizer.load_state_dict(optimizer_state(checkpoint))
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(f"checkpoint {checkpoint.path} does not fit the model of "
                                  f"this configuration: {error}") from None
        torch.set_rng_state(checkpoint.training_state["rng.torch"])
        start_epoch = int(checkpoint.state["epoch"]) + 1
        step = int(checkpoint.state["global_step"])
        metrics = read_metrics(out_dir, upto=start_epoch - 1) if out_dir else []
    project_biases(project)
    if writer:
        io.write_json(out_dir / "config.json",
                      {"config": config.to_dict(), "config_hash": config_hash(config)})
    network: nn.Module = model
    if group.enabled:
        network = nn.parallel.DistributedDataParallel(
            model, device_ids=None if device.type == "cpu" else [device])
    n_train = data.train_images.shape[0]
    epochs: Iterable[int] = range(start_epoch, config.epochs + 1)
    if progress and group.rank == 0:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc=f"train {config.model}", unit="epoch",
                      initial=start_epoch - 1, total=config.epochs)
    for epoch in epochs:
        began = time.perf_counter()
        tally = _EpochTally(epoch, step, biases, group.world_size, callback)
        network.train()
        fit_epoch(network, optimizer, data.train_images, data.train_labels,
                  _epoch_order(config, epoch, n_train).to(device),
                  batch_size=config.batch_size, project=project, rank=group.rank,
                  world_size=group.world_size, sum_over_ranks=True, on_step=tally)
        step = tally.step
        full = epoch % eval_every == 0 or epoch == config.epochs
        record = epoch_record(model, data, epoch=epoch, step=step,
                              loss_sum=group.sum(tally.loss_sum), n_train=n_train,
                              world_size=group.world_size,
                              max_bias_seen=tally.max_bias_seen, biases=biases,
                              seconds=time.perf_counter() - began, full=full)
        metrics.append(record)
        if writer:
            write_checkpoint(out_dir, epoch, step, config, model, optimizer)
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
