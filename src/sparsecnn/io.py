"""Atomic file writing and output-directory handling shared by every command.

Files are written to a temporary sibling and renamed into place, so an interrupted run never
leaves a half-written file; directories are prepared in a temporary sibling and renamed.
An existing output is never replaced unless ``overwrite`` is given, and even then only when
everything in it was written by this package: an output directory carries a manifest
(``.sparsecnn-outputs.json``) of the files it wrote, and a directory that holds anything else
(a user's notes, another tool's files) is refused, naming those files.  Files and directories get
the user's umask, as every other tool's outputs do.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST_NAME", "OutputExistsError", "atomic_directory", "foreign_files",
           "write_bytes", "write_json", "write_text"]

MANIFEST_NAME = ".sparsecnn-outputs.json"


class OutputExistsError(FileExistsError):
    """The output exists and ``overwrite`` was not given."""


def write_bytes(path: str | Path, data: bytes, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same directory + rename)."""
    target = Path(path)
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{target} exists; pass --overwrite (overwrite=True) to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                         suffix=".tmp")
    try:
        # mkstemp creates 0600; an output file gets the permissions any tool's would
        os.fchmod(handle, 0o666 & ~_umask())
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask sets it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str, *, overwrite: bool = True) -> Path:
    return write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def _json_default(value: Any) -> Any:
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialize {type(value).__name__} to JSON")


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, default=_json_default, allow_nan=False)


def write_json(path: str | Path, value: Any, *, overwrite: bool = True) -> Path:
    """Write ``value`` as JSON atomically; NaN/Inf are refused (``allow_nan=False``)."""
    return write_text(path, to_json(value) + "\n", overwrite=overwrite)


def foreign_files(directory: str | Path) -> list[str]:
    """Files under ``directory`` that this package did not write (relative paths, sorted).

    What the package wrote is listed in the directory's manifest; without a readable manifest
    every file counts as foreign, so an ``--overwrite`` never deletes what it cannot vouch for.
    """
    root = Path(directory)
    owned: set[str] = set()
    manifest = root / MANIFEST_NAME
    if manifest.is_file():
        try:
            listed = json.loads(manifest.read_text(encoding="utf-8")).get("files", [])
            owned = {str(name) for name in listed if isinstance(name, str)}
        except (OSError, ValueError, AttributeError):
            owned = set()
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        relative = path.relative_to(root).as_posix()
        if relative != MANIFEST_NAME and relative not in owned:
            found.append(relative)
    return found


def _check_replaceable(target: Path) -> None:
    if not target.is_dir() or target.is_symlink():
        raise OutputExistsError(f"{target} exists and is not a directory this package wrote; "
                                "refusing to replace it (choose another --out)")
    foreign = foreign_files(target)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                          else "")
        raise OutputExistsError(
            f"{target} holds {len(foreign)} file(s) this package did not write ({shown}); "
            "--overwrite replaces only earlier outputs of sparsecnn: move those files away or "
            "choose another --out")


def _apply_umask(root: Path) -> None:
    mask = _umask()
    os.chmod(root, 0o777 & ~mask)
    for path in root.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


@contextmanager
def atomic_directory(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` only when the block succeeds.

    Raises :class:`OutputExistsError` up front if ``path`` exists and ``overwrite`` is false,
    or if ``path`` is a file or holds files this package did not write (see
    :func:`foreign_files`) even with ``overwrite``; a parent directory that cannot be written
    raises ``PermissionError`` before any work is done.  On success the directory gets a
    manifest of its files and the user's umask.
    """
    target = Path(path)
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise OutputExistsError(f"{target} exists; pass --overwrite to replace it")
        _check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write the output {target}: its directory "
                              f"{target.parent} is not writable")
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield staging
        files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*")
                       if not p.is_dir() and p.name != MANIFEST_NAME)
        write_json(staging / MANIFEST_NAME, {"written_by": "sparsecnn", "files": files})
        _apply_umask(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        # checked again: a file may have been added while the command ran
        _check_replaceable(target)
        backup = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.",
                                       suffix=".old"))
        os.replace(target, backup / "previous")
        os.replace(staging, target)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(staging, target)
