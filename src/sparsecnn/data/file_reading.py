"""Reading dataset files defensively: a damaged file is an error that names the file and the
problem, and no header is trusted with an allocation before it is checked against the bytes
that are really there."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import BinaryIO

__all__ = ["MAX_DEFLATE_RATIO", "DataFileError", "is_gzip", "open_maybe_gzip",
           "read_stream_exactly"]

# Deflate cannot compress better than about 1032:1, so a .gz file of s bytes never holds more
# than 1032 s bytes: a header asking for more is damaged, whatever the stream says later.
MAX_DEFLATE_RATIO = 1032
_CHUNK = 1 << 22


class DataFileError(ValueError):
    """A dataset file or folder that is not what its format says: ``"<path>: <problem>"``."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


def is_gzip(path: Path) -> bool:
    """Whether the file starts with the gzip magic bytes ``1f 8b``."""
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def open_maybe_gzip(path: Path) -> BinaryIO:
    """The decompressed stream of a ``.gz`` file (recognised by content), else the raw file."""
    if not path.is_file():
        raise DataFileError(path, "no such file")
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def read_stream_exactly(stream: BinaryIO, n_bytes: int, path: Path, what: str) -> bytearray:
    """``n_bytes`` of ``stream``, read in chunks so that memory follows the bytes that exist,
    not the count a header claims; a short stream is a ``truncated`` error.  A (writable)
    ``bytearray``, so that arrays viewing it can become tensors without a copy."""
    data = bytearray()
    remaining = n_bytes
    try:
        while remaining > 0:
            chunk = stream.read(min(remaining, _CHUNK))
            if not chunk:
                break
            data += chunk
            remaining -= len(chunk)
    except (EOFError, OSError, zlib.error) as error:
        raise DataFileError(path, f"truncated or damaged compressed data while reading {what} "
                                  f"({error})") from None
    if remaining > 0:
        raise DataFileError(path, f"truncated: {what} needs {n_bytes} bytes but only "
                                  f"{n_bytes - remaining} are there")
    return data
