"""What a run records per epoch: loss, accuracy, activation sparsity and hidden biases."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import DatasetSplit

__all__ = ["activation_zero_fraction", "epoch_record", "evaluate", "max_bias"]


def max_bias(biases: list[torch.Tensor]) -> float:
    """``max_l max(b_l)`` over the hidden biases (``-inf`` without any): ``<= 0`` means every
    prior is proper (docs/theory.md A.8.1)."""
    if not biases:
        return float("-inf")
    return max(float(b.detach().max()) for b in biases)


def activation_zero_fraction(model: nn.Module, images: torch.Tensor) -> float:
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


def epoch_record(model: nn.Module, data: DatasetSplit, *, epoch: int, step: int,
                 loss_sum: float, n_train: int, world_size: int, max_bias_seen: float,
                 biases: list[torch.Tensor], seconds: float, full: bool) -> dict[str, Any]:
    """The metrics line of one finished epoch: the running mean training loss
    ``loss_sum / n_train`` (``loss_sum`` over all ranks), and when ``full`` the train and test
    loss and accuracy and :func:`activation_zero_fraction` on the test images; with hidden
    ``biases``, their largest value now and at any step of the epoch."""
    record: dict[str, Any] = {"epoch": epoch, "step": step,
                              "train_loss_running": loss_sum / n_train, "seconds": seconds,
                              "world_size": world_size}
    if full:
        test = evaluate(model, data.test_images, data.test_labels)
        train_eval = evaluate(model, data.train_images, data.train_labels)
        record.update({
            "train_loss": train_eval["loss"], "train_accuracy": train_eval["accuracy"],
            "test_loss": test["loss"], "test_accuracy": test["accuracy"],
            "zero_fraction": activation_zero_fraction(model, data.test_images)})
    if biases:
        record["max_hidden_bias"] = max_bias(biases)
        record["max_hidden_bias_any_step"] = max_bias_seen
    return record
