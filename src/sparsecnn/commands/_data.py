"""The ``--data NAME|PATH`` option shared by ``robustness`` and ``interpret``."""

from __future__ import annotations

from typing import Any

import click

__all__ = ["DATA_HELP", "data_option", "load_data_option"]

DATA_HELP = ("Dataset: digits, mnist, fashion-mnist, kmnist, or a directory (IDX files, CIFAR "
             "binary batches, an image folder, or a `sparsecnn generate` feature world); see "
             "docs/guide/datasets.md.")


def data_option(default: str | None, help_suffix: str = "") -> Any:
    """The click option ``--data``; ``default=None`` means the command decides."""
    return click.option("--data", "data_name", default=default, metavar="NAME|PATH",
                        show_default=default is not None, help=DATA_HELP + help_suffix)


def load_data_option(value: str, *, seed: int, n_train: int | None = None,
                     n_test: int | None = None) -> Any:
    """:func:`sparsecnn.data.load_dataset` with its errors (a missing dataset says how to get
    it) reported against ``--data``."""
    from ..data import load_dataset

    try:
        return load_dataset(value, seed=seed, n_train=n_train, n_test=n_test)
    except (ValueError, OSError) as error:
        raise click.BadParameter(str(error), param_hint="--data") from None
