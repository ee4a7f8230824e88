"""A trusted on-disk cache for the compiled native kernels of :mod:`sparsecnn.nn.native`.

A shared library handed to ``ctypes.CDLL`` runs its code (constructors included) in this
process, so a cached library is loaded only when it is known to be the one this user built
(docs/reliability.md, "Compiled kernels"):

* **where** -- ``$SPARSECNN_CACHE``, else ``$XDG_CACHE_HOME/sparsecnn``, else
  ``~/.cache/sparsecnn``.  Directories created here are mode 0700 whatever the umask.  The
  directory must be owned by the current user and not writable by group or others, else
  nothing is built into it or loaded from it: :class:`KernelCacheError` (the layers then use
  PyTorch's operations, with one warning).  Write access for others is what lets another
  local user plant a library, so ownership, not content, is the test for tampering.
* **what** -- ``kernels-<key>.so``, ``<key>`` hashing the source, the compiler and its
  ``--version``, the flags and the CPU; beside it ``kernels-<key>.so.sha256``, the SHA-256
  of the library, written atomically after a successful build.  A library is loaded only
  if it is a regular file owned by the current user, not writable by group or others,
  non-empty, and its bytes hash to the recorded value (checked under the build lock, in a
  directory only this user can write).  Anything else is rebuilt: an empty, truncated or
  modified library, a wrong or malformed hash file, a file of another owner or mode, with a
  :class:`RuntimeWarning` naming the problem; a missing library or hash file (a first use,
  a cache of an earlier version, a build killed before its hash was written) silently.
* **how** -- builds run under an exclusive lock (``kernels-<key>.lock``), into a private
  temporary ``.kernels-<key>-*.so`` renamed into place; temporaries left by a killed build
  are removed by the next build.  The compiler is ``$CXX`` (a command, possibly with
  arguments) when set -- an unusable ``$CXX`` is an error naming it, never silently
  replaced -- else ``c++``, else ``g++``.  A compile that runs longer than
  ``$SPARSECNN_COMPILE_TIMEOUT`` seconds (default 120) is killed with its process group.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import math
import os
import platform
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["DEFAULT_COMPILE_TIMEOUT", "KernelCacheError", "cache_directory", "compile_timeout",
           "compiler_command", "ensure_built", "load"]

DEFAULT_COMPILE_TIMEOUT = 120.0
# a temporary of another key is left alone while its build may still be running
_STALE_SECONDS = 3600.0
_HEX = frozenset("0123456789abcdef")


class KernelCacheError(RuntimeError):
    """The kernels cannot be built or loaded safely; the message says why."""


def cache_directory() -> Path:
    """``$SPARSECNN_CACHE``, else ``$XDG_CACHE_HOME/sparsecnn``, else ``~/.cache/sparsecnn``."""
    if os.environ.get("SPARSECNN_CACHE"):
        return Path(os.environ["SPARSECNN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sparsecnn"


def compile_timeout() -> float:
    """``$SPARSECNN_COMPILE_TIMEOUT`` in seconds (a positive number), default 120."""
    value = os.environ.get("SPARSECNN_COMPILE_TIMEOUT", "").strip()
    if not value:
        return DEFAULT_COMPILE_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise KernelCacheError("SPARSECNN_COMPILE_TIMEOUT must be a positive number of "
                               f"seconds; got {value!r}")
    return seconds


def compiler_command() -> list[str]:
    """``$CXX`` split into words, its program resolved on ``PATH``; without ``$CXX``, ``c++``
    or ``g++``.  Raises :class:`KernelCacheError` naming ``$CXX`` when it is unusable."""
    value = os.environ.get("CXX", "")
    if value.strip():
        try:
            words = shlex.split(value)
        except ValueError as error:
            raise KernelCacheError(f"CXX={value!r} cannot be parsed: {error}") from None
        program = shutil.which(words[0]) if words else None
        if program is None:
            raise KernelCacheError(f"CXX={value!r} is not an executable C++ compiler (set CXX "
                                   "to one, or unset it to use c++ or g++)")
        return [program, *words[1:]]
    for name in ("c++", "g++"):
        program = shutil.which(name)
        if program is not None:
            return [program]
    raise KernelCacheError("no C++ compiler found ($CXX, c++, g++)")


def _run(command: list[str], timeout: float, what: str) -> str:
    """Run ``command``; its stdout, or :class:`KernelCacheError` on failure or timeout (the
    whole process group is killed: a compiler driver leaves its cc1plus behind otherwise)."""
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    except OSError as error:
        raise KernelCacheError(f"{what}: cannot run {command[0]}: {error}") from None
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise KernelCacheError(f"{what}: {command[0]} did not finish within {timeout:g} s "
                               "(SPARSECNN_COMPILE_TIMEOUT)") from None
    if process.returncode != 0:
        raise KernelCacheError(f"{what}: {command[0]} failed: {stderr.strip()[-2000:]}")
    return stdout


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            lines = [line for line in info if line.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def _ownership_problem(info: os.stat_result, path: Path, what: str) -> str | None:
    if info.st_uid != os.geteuid():
        return (f"{what} {path} is owned by uid {info.st_uid}, not by the current user "
                f"(uid {os.geteuid()})")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (f"{what} {path} is writable by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o})")
    return None


def _private_directory(directory: Path) -> None:
    """Create ``directory`` (and missing parents) 0700 whatever the umask, then check it is
    the current user's and not writable by group or others."""
    missing = []
    path = directory.absolute()
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:  # a concurrent process made it: checked below if it is ours
            continue
        except OSError as error:
            raise KernelCacheError(f"cannot create the kernel cache {directory}: "
                                   f"{error.strerror}") from None
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask
    try:
        info = os.stat(directory)
    except OSError as error:
        raise KernelCacheError(f"kernel cache {directory}: {error.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise KernelCacheError(f"kernel cache {directory} is not a directory")
    problem = _ownership_problem(info, directory, "kernel cache directory")
    if problem:
        raise KernelCacheError(f"{problem}: refusing to build into it or load from it (set "
                               "SPARSECNN_CACHE to a private directory, or chmod go-w it)")


def _open_checked(path: Path, what: str) -> tuple[int | None, str | None]:
    """A read-only descriptor of ``path`` if it is a regular file of the current user that
    group and others cannot write, else ``(None, problem)``; ``(None, None)`` if absent."""
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, None
    except OSError as error:  # ELOOP: a symbolic link
        return None, f"{what} {path} cannot be opened safely: {error.strerror}"
    info = os.fstat(handle)
    problem = (f"{what} {path} is not a regular file" if not stat.S_ISREG(info.st_mode) else
               _ownership_problem(info, path, what))
    if problem:
        os.close(handle)
        return None, problem
    return handle, None


def _hash_path(library: Path) -> Path:
    return library.with_name(library.name + ".sha256")


def _recorded_hash(library: Path) -> tuple[str | None, str | None]:
    """The SHA-256 recorded beside ``library``, or ``(None, problem)``."""
    path = _hash_path(library)
    handle, problem = _open_checked(path, "kernel hash file")
    if handle is None:  # absent: built by a sparsecnn before hashes, or killed before it
        return None, problem or ""
    with os.fdopen(handle, "rb") as stream:
        text = stream.read(256).decode("ascii", "replace").strip()
    if len(text) != 64 or not set(text) <= _HEX:
        return None, f"kernel hash file {path} does not hold a SHA-256"
    return text, None


def _sha256(handle: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(handle, 1 << 20, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def _check_library(library: Path) -> str | None:
    """``None`` if ``library`` passes every check of the module docstring, else the problem
    (``""`` when there is simply no library yet)."""
    handle, problem = _open_checked(library, "cached kernel library")
    if handle is None:
        return problem or ""
    try:
        if os.fstat(handle).st_size == 0:
            return f"cached kernel library {library} is empty (an interrupted build?)"
        recorded, problem = _recorded_hash(library)
        if recorded is None:
            return problem
        if _sha256(handle) != recorded:
            return (f"cached kernel library {library} does not match its recorded SHA-256 "
                    "(damaged or modified)")
        return None
    finally:
        os.close(handle)


@contextmanager
def _locked(path: Path, timeout: float) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``, waited for at most ``timeout`` seconds."""
    try:
        handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise KernelCacheError(f"cannot open the lock {path}: {error.strerror}") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise KernelCacheError(f"waited {timeout:g} s for another process's build "
                                           f"of the kernels ({path})") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(handle)  # releases the lock


def _remove_stale(directory: Path, key: str) -> None:
    """Remove temporaries of killed builds: of this key all (this process holds its lock),
    of other keys those older than an hour."""
    now = time.time()
    for path in directory.glob(".kernels-*"):
        try:
            info = path.lstat()
            if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and (
                    path.name.startswith(f".kernels-{key}-") or
                    now - info.st_mtime > _STALE_SECONDS):
                path.unlink()
        except OSError:  # removed by its owner meanwhile
            continue


def _write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _build(command: list[str], source: Path, flags: Sequence[str], library: Path, key: str,
           timeout: float) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".kernels-{key}-", suffix=".so",
                                         dir=library.parent)
    os.close(handle)
    try:
        _run([*command, *flags, "-o", temporary, str(source)], timeout,
             "compiling the native kernels")
        os.chmod(temporary, 0o700)  # the linker creates its output with the umask's mode
        with open(temporary, "rb") as built:
            digest = _sha256(built.fileno())
        os.replace(temporary, library)
        _write_atomically(_hash_path(library), digest + "\n")
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def ensure_built(source: Path, flags: Sequence[str]) -> Path:
    """The path of the compiled ``source`` in the cache, checked (module docstring), built
    first when it is absent or fails a check.  Raises :class:`KernelCacheError` when the
    kernels cannot be built or kept safely."""
    timeout = compile_timeout()
    command = compiler_command()
    version = _run([*command, "--version"], timeout, f"asking {command[0]} for its version")
    key = hashlib.sha256(b"\0".join(
        [source.read_bytes(), "\0".join(command).encode(), version.encode(),
         " ".join(flags).encode(), _cpu_signature().encode(), platform.machine().encode()]
    )).hexdigest()[:16]
    directory = cache_directory()
    _private_directory(directory)
    library = directory / f"kernels-{key}.so"
    # one builder at a time; a waiter then finds what the builder made
    with _locked(directory / f"kernels-{key}.lock", timeout + 30.0):
        problem = _check_library(library)
        if problem is None:
            return library
        if problem:
            warnings.warn(f"{problem}; not loaded, rebuilding it", RuntimeWarning, stacklevel=3)
        _remove_stale(directory, key)
        _build(command, source, flags, library, key, timeout)
        problem = _check_library(library)
        if problem is not None:
            raise KernelCacheError(f"the kernels just built fail their check: {problem}")
        return library


def load(source: Path, flags: Sequence[str]) -> ctypes.CDLL:
    """:func:`ensure_built`, then the library loaded (by its name: between the check and the
    load only this user can replace it, the directory being private).  Raises
    :class:`KernelCacheError`, or ``OSError`` from the dynamic loader."""
    return ctypes.CDLL(str(ensure_built(source, flags)))
