"""``sparsecnn train``: train a sparse-coding CNN on embedded data, with checkpoints and resume.

Run it under ``torchrun --nproc_per_node N`` for data-parallel training (gloo on CPU).
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..io import OutputExistsError
from ..training import MODELS, OPTIMIZERS, TrainingConfig, train
from ._limits import require_training_memory
from ._options import comma_separated

__all__ = ["command"]


@click.command("train")
@click.option("--dataset", default="digits", show_default=True,
              help="'digits' (scikit-learn) or a feature-world dataset file.")
@click.option("--model", "model_name", type=click.Choice(sorted(MODELS)), default="cnn",
              show_default=True, help="cnn: conv+ReLU layers + linear head; sparse: "
              "SparseConv2d layers with --n-iter steps of --method; ml_ista: --n-iter "
              "unfoldings of joint multi-layer ISTA.")
@click.option("--epochs", type=int, default=20, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True,
              help="Global batch size (split across ranks under torchrun).")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adamw", show_default=True)
@click.option("--lr", "learning_rate", type=float, default=3e-3, show_default=True)
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--channels", default="32,64", show_default=True,
              help="Output channels of the hidden conv layers.")
@click.option("--strides", default="1,2", show_default=True,
              help="Strides of the hidden conv layers.")
@click.option("--proper-prior", is_flag=True,
              help="Keep every hidden bias <= 0 (proper sparse priors) by projection.")
@click.option("--n-iter", type=int, default=0, show_default=True,
              help="Sparse-inference steps per layer (model 'sparse').")
@click.option("--method", type=click.Choice(["ista", "fista", "lca"]), default="ista",
              show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True)
@click.option("--resume", is_flag=True,
              help="Continue the interrupted run in --out (the configuration must match; a "
              "larger --epochs extends a finished run).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("runs/train"),
              show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Start again in a non-empty --out.")
@click.option("--device", default="cpu", show_default=True,
              help="torch device (cpu, cuda:0, ...).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def command(dataset: str, model_name: str, epochs: int, batch_size: int, optimizer: str,
            learning_rate: float, weight_decay: float, channels: str, strides: str,
            proper_prior: bool, n_iter: int, method: str, dtype: str, resume: bool,
            out_dir: Path, seed: int, overwrite: bool, device: str, no_progress: bool) -> None:
    """Train a classifier (hierarchical sparse coding + logistic regression) and write
    per-epoch safetensors checkpoints, metrics.jsonl and the final model.safetensors to
    --out."""
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite contradict each other; pick one")
    try:
        config = TrainingConfig(
            dataset=dataset, model=model_name, epochs=epochs, batch_size=batch_size,
            optimizer=optimizer, learning_rate=learning_rate, weight_decay=weight_decay,
            seed=seed, channels=comma_separated(channels, "--channels", example="32,64"),
            strides=comma_separated(strides, "--strides", example="1,2"),
            proper_prior=proper_prior, n_iter=n_iter, method=method, dtype=dtype)
        require_training_memory(config.channels, config.strides, config.batch_size)
        result = train(config, out_dir, resume=resume, overwrite=overwrite,
                       progress=not no_progress, device=device)
    except OutputExistsError as error:
        raise click.ClickException(str(error)) from None
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:  # e.g. a read-only --out: one line, not a traceback
        raise click.ClickException(f"cannot write the run to --out {out_dir}: {error}") \
            from None
    final = result.final
    if int(os.environ.get("RANK", "0")) != 0:
        return
    click.echo(f"epoch {final.get('epoch')}: test accuracy {final.get('test_accuracy', 0):.4f}, "
               f"zero activations {final.get('zero_fraction', 0):.3f}; files in {out_dir}")
