"""Training runs with checkpoints, exact resume and data-parallel training (docs/theory.md A.7,
A.8).

A classifier is trained by minimising the cross-entropy ``-log p(y | Gamma_L(x))`` of the
logistic-regression head over the dictionaries, biases (thresholds) and head (docs/theory.md A.7),
with AdamW or SGD.  With ``proper_prior=True`` every hidden bias is projected onto ``b <= 0``
after every optimizer step (docs/theory.md A.8.1, check 10), so every prior stays proper.

Files in ``out_dir``::

    config.json                      the configuration and its hash
    metrics.jsonl                    one JSON line per finished epoch (a copy of the latest
                                     checkpoint's, rewritten from it on resume)
    checkpoints/epoch-0003/          one directory per epoch, renamed into place complete:
        model.safetensors            model weights
        training_state.safetensors   optimizer tensors and the torch RNG state
        metrics.jsonl                the records of epochs 1..3
        state.json                   epoch, step, config, config hash, optimizer
                                     hyper-parameters and the SHA-256 of the files
    model.safetensors                the final weights, with the configuration, input shape and
                                     class count in its metadata (readable on its own by
                                     :func:`~sparsecnn.training.load_model`)
    .sparsecnn-train.lock            held (``flock``) by the one process writing the run

**Divergence.**  After every epoch the summed loss, the metrics and every weight must be
finite; otherwise :class:`TrainingDivergedError` names the epoch and the first step with a
non-finite loss, and nothing of that epoch is written: the latest checkpoint stays the last
finite one.

**Extending a run.**  ``resume=True`` with ``config.epochs`` larger than the run's continues
it: the data order of epoch ``e`` depends on ``(seed, e)`` alone and no schedule depends on
``epochs``, so 2 epochs resumed to 4 equal 4 epochs straight, bit for bit.  ``epochs`` smaller
than the epochs already trained is refused.

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
import json
import math
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_safetensors
from torch import nn

from .. import io
from .._checks import check_positive_int
from ..data import DatasetSplit, load_dataset
from .architecture import training_metadata
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
from .metrics import epoch_record, max_bias
from .models import build_model, hidden_bias_parameters
from .rundir import LOCK_NAME, RunLock, clear_run, remove_leftovers

__all__ = ["TrainingDivergedError", "TrainingResult", "train"]


class TrainingDivergedError(ValueError):
    """The loss, a metric or a weight became non-finite (NaN or infinite) during training."""


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


def _differences_but_epochs(saved: dict[str, Any], config: TrainingConfig) -> list[str]:
    """:func:`config_differences` except ``epochs``, which a resume may raise."""
    return config_differences({**saved, "epochs": config.epochs}, config) if isinstance(
        saved, dict) else ["the saved configuration is not a JSON object"]


def _prepare_out_dir(out_dir: Path, config: TrainingConfig, *, resume: bool, overwrite: bool,
                     writer: bool) -> Checkpoint | None:
    """Validate ``out_dir`` for a fresh run or a resume; return the checkpoint to resume from.
    When resuming, only the leftovers of interrupted writes are deleted (by the writer)."""
    if resume:
        if not out_dir.is_dir():
            raise ValueError(f"--resume needs an existing run directory; {out_dir} "
                             + ("is not a directory" if out_dir.exists() else "does not exist"))
        if writer:
            remove_leftovers(out_dir)
        config_file = out_dir / "config.json"
        if config_file.exists():
            try:
                saved = json.loads(config_file.read_text(encoding="utf-8"))["config"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise CheckpointError(f"{config_file} is corrupted ({error}); cannot check "
                                      "that the run matches this configuration") from None
            differences = _differences_but_epochs(saved, config)
            if differences:
                raise ValueError("refusing to resume: the configuration differs from the "
                                 f"interrupted run's ({config_file}): " + "; ".join(differences))
        latest = latest_checkpoint(out_dir)
        if latest is None:
            return None
        checkpoint = load_checkpoint(latest)
        trained = checkpoint.state["epoch"]
        if config.epochs < trained:
            raise ValueError(f"refusing to resume: {out_dir} has already trained {trained} "
                             f"epochs and epochs={config.epochs} is fewer; pass --epochs "
                             f">= {trained} to continue it")
        saved_config = checkpoint.config
        differences = _differences_but_epochs(saved_config.to_dict(), config)
        if differences or checkpoint.state["config_hash"] != config_hash(
                dataclasses.replace(config, epochs=saved_config.epochs)):
            raise ValueError(f"refusing to resume: the configuration differs from the one "
                             f"saved in {latest}: " + "; ".join(differences or ["hash"]))
        return checkpoint
    if writer and any(p.name != LOCK_NAME for p in out_dir.iterdir()):
        if not overwrite:
            raise io.OutputExistsError(f"{out_dir} exists and is not empty; pass --overwrite "
                                       "to start again or --resume to continue the run")
        clear_run(out_dir)
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
    overwrite : start afresh in an ``out_dir`` that holds an earlier run (only the files
        ``train`` wrote are deleted; see :func:`~sparsecnn.training.rundir.clear_run`).
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
    first_nonfinite_step: int | None = None

    def __call__(self, loss: torch.Tensor, n: int) -> None:
        self.step += 1
        self.max_bias_seen = max(self.max_bias_seen, max_bias(self.biases))
        value = float(loss)
        if not math.isfinite(value) and self.first_nonfinite_step is None:
            self.first_nonfinite_step = self.step
        self.loss_sum += value * n / self.world_size
        if self.callback is not None:
            self.callback("step", {"epoch": self.epoch, "step": self.step,
                                   "max_hidden_bias": max_bias(self.biases)})


def _epoch_order(config: TrainingConfig, epoch: int, n: int) -> torch.Tensor:
    """The data order of ``epoch``: a permutation seeded with ``(seed, epoch)`` alone, so a
    resumed run replays it without any saved generator state."""
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def _check_finite(model: nn.Module, record: dict[str, Any], tally: _EpochTally,
                  out_dir: Path | None, config: TrainingConfig) -> None:
    """Raise :class:`TrainingDivergedError` unless the epoch's record and every weight are
    finite (every rank decides alike: the loss sum is all-reduced, the weights are equal)."""
    bad_values = sorted(key for key, value in record.items()
                        if isinstance(value, float) and not math.isfinite(value)
                        and key != "max_hidden_bias_any_step")
    bad_weights = [name for name, value in model.state_dict().items()
                   if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if not bad_values and not bad_weights:
        return
    where = (f"at step {tally.first_nonfinite_step}" if tally.first_nonfinite_step is not None
             else f"by step {tally.step}")
    found = ", ".join([*(f"{k}={record[k]}" for k in bad_values),
                       *(f"non-finite weights in {name}" for name in bad_weights[:3])])
    latest = latest_checkpoint(out_dir) if out_dir is not None else None
    kept = (f"the latest checkpoint is still {latest} (finite); " if latest is not None
            else "")
    raise TrainingDivergedError(
        f"training diverged in epoch {tally.epoch} {where} ({found}); nothing of this epoch "
        f"was written, {kept}lower the learning rate (--lr, now {config.learning_rate:g}) and "
        "start again")


def _train(config: TrainingConfig, out_dir: Path | None, *, resume: bool, overwrite: bool,
           progress: bool, dataset: DatasetSplit | None,
           callback: Callable[[str, dict[str, Any]], None] | None,
           group: ProcessGroup, eval_every: int, device: torch.device
           ) -> TrainingResult:
    writer = out_dir is not None and group.rank == 0
    if out_dir is None and resume:
        raise ValueError("resume=True needs out_dir (the directory of the interrupted run)")
    with ExitStack() as stack:
        failure: BaseException | None = None
        checkpoint = None
        if out_dir is not None and (resume or group.rank == 0):
            try:
                if writer and not (resume and not out_dir.is_dir()):
                    stack.enter_context(RunLock(out_dir))
                checkpoint = _prepare_out_dir(out_dir, config, resume=resume,
                                              overwrite=overwrite, writer=writer)
            except (ValueError, OSError) as error:
                failure = error
        # Every rank must learn that one rank failed, or the others would hang in all_reduce.
        if not group.all_ready(failure is None) and failure is None:
            raise RuntimeError("another rank could not prepare the run directory "
                               f"{out_dir}; see its error")
        if failure is not None:
            raise failure
        return _run_epochs(config, out_dir, checkpoint, writer=writer, progress=progress,
                           dataset=dataset, callback=callback, group=group,
                           eval_every=eval_every, device=device)


def _run_epochs(config: TrainingConfig, out_dir: Path | None, checkpoint: Checkpoint | None, *,
                writer: bool, progress: bool, dataset: DatasetSplit | None,
                callback: Callable[[str, dict[str, Any]], None] | None,
                group: ProcessGroup, eval_every: int, device: torch.device
                ) -> TrainingResult:
    dtype = DTYPES[config.dtype]
    data = (dataset if dataset is not None else load_dataset(config.dataset, seed=config.seed)
            ).to(dtype)
    data = DatasetSplit(data.name, data.train_images.to(device), data.train_labels.to(device),
                        data.test_images.to(device), data.test_labels.to(device),
                        data.n_classes)
    model = build_model(config, data.image_shape, data.n_classes).to(device)
    metadata = training_metadata(config, data.image_shape, data.n_classes)
    optimizer = make_optimizer(config.optimizer, model.parameters(),
                               learning_rate=config.learning_rate,
                               weight_decay=config.weight_decay, momentum=config.momentum)
    biases = hidden_bias_parameters(model)
    project = biases if config.proper_prior else []
    n_train = data.train_images.shape[0]
    metrics: list[dict[str, Any]] = []
    start_epoch, step = 1, 0
    if checkpoint is not None:
        start_epoch, step = _restore(checkpoint, model, optimizer,
                                     steps_per_epoch=-(-n_train // config.batch_size))
        metrics = [dict(record) for record in checkpoint.metrics]
    project_biases(project)
    if writer:
        io.write_json(out_dir / "config.json",
                      {"config": config.to_dict(), "config_hash": config_hash(config)})
        # the checkpoint's records are authoritative: a kill may have come before this copy
        _write_metrics(out_dir, metrics)
    network: nn.Module = model
    if group.enabled:
        network = nn.parallel.DistributedDataParallel(
            model, device_ids=None if device.type == "cpu" else [device])
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
        _check_finite(model, record, tally, out_dir, config)
        metrics.append(record)
        if writer:
            write_checkpoint(out_dir, epoch, step, config, model, optimizer, metrics,
                             model_metadata=metadata)
            _write_metrics(out_dir, metrics)
        if hasattr(epochs, "set_postfix") and full:
            epochs.set_postfix(loss=f"{record['train_loss']:.3f}",
                               test_acc=f"{record['test_accuracy']:.3f}")
        if callback is not None:
            callback("epoch", dict(record))
    if writer:
        io.write_bytes(out_dir / "model.safetensors", save_safetensors(
            {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()},
            metadata=metadata))
        io.write_json(out_dir / "summary.json", {"config": config.to_dict(),
                                                 "final": metrics[-1] if metrics else {}})
    return TrainingResult(model=model, config=config, metrics=metrics, out_dir=out_dir,
                          resumed_from_epoch=start_epoch - 1)


def _restore(checkpoint: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer, *,
             steps_per_epoch: int) -> tuple[int, int]:
    """Load ``checkpoint`` into ``model``, ``optimizer`` and the torch RNG; return the epoch
    to start from and the global step."""
    epoch, step = checkpoint.state["epoch"], checkpoint.state["global_step"]
    if step != epoch * steps_per_epoch:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} records global_step {step} after {epoch} epochs, "
            f"but an epoch of this run takes {steps_per_epoch} steps (expected "
            f"{epoch * steps_per_epoch}); delete it to resume from the previous epoch")
    # every hyper-parameter of the saved group must be the one this configuration builds;
    # torch would accept and use any of them (or fail only later, in a step)
    fresh = json.loads(json.dumps(optimizer.state_dict()["param_groups"]))
    saved = checkpoint.state["optimizer"]["param_groups"]
    if saved != fresh:
        keys = sorted({k for g in (*saved, *fresh) for k in g}, key=str)
        different = [k for k in keys if saved[0].get(k) != fresh[0].get(k)]
        raise CheckpointError(
            f"checkpoint {checkpoint.path} has optimizer settings that this configuration "
            f"does not produce ({', '.join(map(str, different))}); delete it to resume from "
            "the previous epoch's checkpoint, or start again with --overwrite")
    try:
        model.load_state_dict(checkpoint.model)
        optimizer.load_state_dict(optimizer_state(checkpoint))
        torch.set_rng_state(checkpoint.training_state["rng.torch"])
        for parameter in model.parameters():
            for key, value in optimizer.state.get(parameter, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() and \
                        value.shape != parameter.shape:
                    raise ValueError(f"optimizer state {key!r} has shape "
                                     f"{tuple(value.shape)}, its parameter "
                                     f"{tuple(parameter.shape)}")
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:
        raise CheckpointError(f"checkpoint {checkpoint.path} does not fit the model of "
                              f"this configuration: {error}") from None
    return epoch + 1, step


def _write_metrics(out_dir: Path, metrics: list[dict[str, Any]]) -> None:
    io.write_text(out_dir / "metrics.jsonl",
                  "".join(json.dumps(m, allow_nan=False) + "\n" for m in metrics))
