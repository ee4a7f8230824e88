"""Up-front checks that every command shares: output directories, devices, memory and disk.

A command that would fail only after its work (an unwritable ``--out``, a device that does not
exist) or that would exhaust the machine (an image size or a count whose arrays cannot fit) is
refused before any work, with one line naming the option and, for sizes, the estimate.  The
``sparsecnn`` group (:mod:`sparsecnn.cli`) installs :class:`OutputDirectory` and
:class:`Device` on every command's ``--out`` and ``--device`` options.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import click

__all__ = ["Device", "OptionError", "OutputDirectory", "available_memory", "format_bytes",
           "nearest_existing", "require_disk", "require_memory", "require_replaceable",
           "require_training_memory"]

# a process needs headroom beyond its largest arrays (interpreter, torch, copies), so an
# estimate is compared with this fraction of the memory the kernel reports as available
MEMORY_FRACTION = 0.8


class OptionError(click.ClickException):
    """A command-line value that cannot work: one ``Error:`` line and exit code 2 (usage)."""

    exit_code = 2


def format_bytes(count: float) -> str:
    """``count`` bytes in binary units, e.g. ``23.6 TiB``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def available_memory() -> int | None:
    """Bytes of memory the kernel can give without swapping (``MemAvailable``), or ``None``
    when the platform does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def require_memory(estimate: float, what: str, option: str) -> None:
    """Refuse (:class:`OptionError` naming ``option``) when ``estimate`` bytes exceed what the
    machine can give."""
    available = available_memory()
    if available is not None and estimate > MEMORY_FRACTION * available:
        raise OptionError(f"{option}: {what} needs about {format_bytes(estimate)} of memory; "
                          f"{format_bytes(available)} is available: use smaller values")


def require_training_memory(channels: tuple[int, ...], strides: tuple[int, ...],
                            batch_size: int) -> None:
    """Refuse ``--channels`` that cannot be trained on this machine, from a lower bound that
    holds for every dataset: one input channel at 8x8 (the smallest embedded images, the
    digits), 3x3 kernels (``sparsecnn.training.models``), four copies of the weights (value,
    gradient, two optimizer moments) and two of each layer's activations for one batch
    (forward value and its gradient).  A lower bound never refuses a run that would fit."""
    weights = 0
    activations = 0
    previous, side = 1, 8
    for width, stride in zip(channels, strides, strict=False):
        weights += 9 * previous * width
        side = -(-side // max(int(stride), 1))
        activations += max(int(batch_size), 1) * width * side * side
        previous = width
    require_memory(4 * (4 * weights + 2 * activations),
                   f"training {len(channels)} layer(s) of {list(channels)} channels",
                   "--channels")


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (where a new output would be created)."""
    candidate = Path(os.path.abspath(path))
    while not candidate.exists() and candidate != candidate.parent:
        candidate = candidate.parent
    return candidate


def require_disk(estimate: float, target: Path, what: str) -> None:
    """Refuse (exit 1) when ``estimate`` bytes exceed the free space where ``target`` goes."""
    free = shutil.disk_usage(nearest_existing(target.parent)).free
    if estimate > free:
        raise click.ClickException(f"{what} needs about {format_bytes(estimate)} of disk; "
                                   f"{format_bytes(free)} is free under {target.parent}")


def require_replaceable(path: Path, overwrite: bool) -> None:
    """Refuse (exit 2), before the work, an output that exists without ``--overwrite`` or that
    holds files sparsecnn did not write (``--overwrite`` never deletes those:
    :mod:`sparsecnn.io`)."""
    from ..io import foreign_files

    if not (path.exists() or path.is_symlink()):
        return
    if not overwrite:
        raise OptionError(f"{path} exists; pass --overwrite to replace it")
    if not path.is_dir() or path.is_symlink():
        raise OptionError(f"{path} exists and is not a directory sparsecnn wrote; "
                                   "refusing to replace it (choose another --out)")
    foreign = foreign_files(path)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more"
                                          if len(foreign) > 5 else "")
        raise OptionError(
            f"{path} holds {len(foreign)} file(s) sparsecnn did not write ({shown}); "
            "--overwrite replaces only earlier outputs of sparsecnn: move those files away or "
            "choose another --out")


class OutputDirectory(click.Path):
    """An output directory: not a file, and where it goes (or the directory itself, when it
    exists) writable, checked before the command does any work."""

    name = "directory"

    def __init__(self) -> None:
        super().__init__(path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        path = Path(super().convert(value, param, ctx))
        option = param.opts[0] if param is not None and param.opts else "--out"
        if path.exists() and not path.is_dir():
            raise OptionError(f"{option} {path} is a file; expected a directory (existing or "
                              "to be created)")
        # the output is renamed into its parent and an existing one renamed out of it, so both
        # the parent (or the ancestor it will be created in) and an existing output must be
        # writable; checked here so that no command fails after doing its work
        for place in (nearest_existing(path.parent), path if path.is_dir() else None):
            if place is not None and not os.access(place, os.W_OK | os.X_OK):
                raise click.ClickException(f"cannot write {option} {path}: {place} is not "
                                           "writable")
        return path


class Device(click.ParamType):
    """A torch device that exists on this machine (``cpu``, ``cuda:0`` with a GPU, ...);
    converted to its validated string."""

    name = "device"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        import torch

        text = str(value)
        try:
            device = torch.device(text)
        except (RuntimeError, TypeError, ValueError) as error:
            raise OptionError(f"--device: cannot use device {text!r}: not a torch device "
                              f"({error}); expected e.g. cpu or cuda:0") from None
        try:
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError, TypeError, ValueError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise OptionError(f"--device: cannot use device {text!r}: not available on this "
                              f"machine ({reason}); expected e.g. cpu") from None
        return text
