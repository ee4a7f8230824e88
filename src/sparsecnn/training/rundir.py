"""The run directory of ``sparsecnn train``: one writer at a time, leftovers of a killed run,
and an ``--overwrite`` that deletes only what ``train`` wrote.

- :class:`RunLock` holds an exclusive ``fcntl.flock`` on ``<out>/.sparsecnn-train.lock`` for
  the whole run, so a second run into the same directory fails at once, naming the holder's
  pid, instead of silently replacing the first run's files.  The kernel drops the lock when
  the holder dies (even by ``SIGKILL``), so a killed run never leaves a stale lock.
- :func:`remove_leftovers` deletes the temporary files and staging directories that an
  interrupted atomic write leaves (``sparsecnn.io`` names them ``.<name>.<random>.tmp`` /
  ``.old``); it runs under the lock, when no writer can be using them.
- :func:`clear_run` removes a previous run's files for ``--overwrite``: the top-level files
  ``train`` writes and the ``checkpoints/epoch-NNNN`` directories whose manifest vouches for
  every file in them.  Anything else is kept; a file inside a checkpoint directory that the
  manifest does not list is refused, by name, before anything is deleted.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
from pathlib import Path
from types import TracebackType

from .. import io

__all__ = ["LOCK_NAME", "RUN_FILES", "RunLock", "RunLockedError", "clear_run",
           "remove_leftovers"]

LOCK_NAME = ".sparsecnn-train.lock"
RUN_FILES = ("config.json", "metrics.jsonl", "model.safetensors", "summary.json")
_FILE_LEFTOVER = re.compile(r"^\.(?:" + "|".join(re.escape(n) for n in RUN_FILES)
                            + r")\..+\.tmp$")
_CHECKPOINT = re.compile(r"^epoch-\d{4,}$")
_CHECKPOINT_LEFTOVER = re.compile(r"^\.epoch-\d{4,}\..+\.(?:tmp|old)$")


class RunLockedError(io.OutputExistsError):
    """Another process is writing to the run directory."""


class RunLock:
    """An exclusive, non-blocking lock on the run directory ``out_dir`` (created if needed)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise ValueError(f"the output {self.out_dir} is a file; expected a directory "
                             "(choose another --out)")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunLockedError(
                f"another sparsecnn train (pid {holder}) is writing to {self.out_dir}; wait "
                "for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._fd is not None:
            # closing the descriptor releases the flock; the file stays (unlinking it would
            # let a third process lock a new inode while a second still waits on the old one)
            os.close(self._fd)
            self._fd = None


def remove_leftovers(out_dir: Path) -> list[str]:
    """Delete what interrupted atomic writes left in ``out_dir``; return their relative paths."""
    removed = []
    places = [(out_dir, _FILE_LEFTOVER), (out_dir / "checkpoints", _CHECKPOINT_LEFTOVER)]
    for directory, pattern in places:
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            if pattern.match(path.name) and not path.is_symlink():
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path.relative_to(out_dir).as_posix())
    return removed


def _checkpoint_dirs(out_dir: Path) -> list[Path]:
    root = out_dir / "checkpoints"
    if not root.is_dir() or root.is_symlink():
        return []
    return [p for p in sorted(root.iterdir())
            if _CHECKPOINT.match(p.name) and p.is_dir() and not p.is_symlink()]


def clear_run(out_dir: Path) -> None:
    """Delete an earlier run's files from ``out_dir`` (see the module docstring); raise
    :class:`~sparsecnn.io.OutputExistsError` naming the foreign files inside checkpoint
    directories, before deleting anything."""
    checkpoints = _checkpoint_dirs(out_dir)
    foreign = [f"checkpoints/{d.name}/{name}" for d in checkpoints
               for name in io.foreign_files(d)]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more"
                                          if len(foreign) > 5 else "")
        raise io.OutputExistsError(
            f"{out_dir} holds {len(foreign)} file(s) in its checkpoint directories that "
            f"sparsecnn train did not write ({shown}); --overwrite replaces only train's own "
            "files: move those away or choose another --out")
    remove_leftovers(out_dir)
    for name in RUN_FILES:
        (out_dir / name).unlink(missing_ok=True)
    for directory in checkpoints:
        shutil.rmtree(directory)
    root = out_dir / "checkpoints"
    if root.is_dir() and not root.is_symlink() and not any(root.iterdir()):
        root.rmdir()
