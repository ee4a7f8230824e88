"""The settings and the geometry of one k-step convolutional map (docs/theory.md A.8).

:class:`ConvUnrolling` holds what stays fixed over a call of
:func:`sparsecnn.nn.unrolled_function.unrolled_conv_codes`; :func:`code_size` and
:func:`batch_chunk` derive the code maps' size and how many signals run together.  Every
operation of the iteration acts on each signal alone, so forward and backward run the k steps
chunk by chunk over the batch: a chunk's code maps, ``CHUNK_BYTES`` each, can stay in the
last-level cache from the pass that writes them to the passes that read them, where a whole
batch of 64 x 64 x 32 x 32 codes (16.8 MB a map) streams through memory at every pass
(measured in benchmarks/README.md, "Layers").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["CHUNK_BYTES", "ConvUnrolling", "batch_chunk", "batch_chunks", "code_size"]

# Bytes of one code map per chunk of signals (module docstring).  4 MiB: a step's few live
# maps fit the 32 MiB last-level cache of the 2-core benchmark machine; smaller chunks pay the
# fixed ~40 us of each oneDNN call more often (benchmarks/README.md, "Layers").
CHUNK_BYTES = 4 * 2 ** 20


@dataclass(frozen=True)
class ConvUnrolling:
    """The fixed settings of one k-step map: ``method`` in ``ista``/``fista``/``lca``,
    ``n_iter >= 1``, step ``1/lipschitz``, FISTA ``restart``, ``nonneg``, the geometry, and
    ``batch_chunk``, the signals processed together (``None``: :func:`batch_chunk` chooses;
    the result does not depend on it beyond floating-point rounding)."""

    method: str
    n_iter: int
    lipschitz: float
    nonneg: bool
    restart: bool
    stride: tuple[int, int]
    padding: tuple[int, int]
    batch_chunk: int | None = None

    def __post_init__(self) -> None:
        chunk = self.batch_chunk
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or
                                  chunk < 1):
            raise ValueError(f"batch_chunk must be None or an integer >= 1; got {chunk!r}")

    @property
    def step(self) -> float:
        return 1.0 / self.lipschitz


def code_size(size: Sequence[int], atoms: torch.Tensor, settings: ConvUnrolling
              ) -> tuple[int, int]:
    """``H' = (H + 2 p - kh) // s + 1`` (and ``W'``): the code maps' spatial size for signals
    of spatial size ``size``."""
    return tuple((int(size[axis]) + 2 * settings.padding[axis] - atoms.shape[2 + axis])
                 // settings.stride[axis] + 1 for axis in (0, 1))


def batch_chunk(x: torch.Tensor, atoms: torch.Tensor, settings: ConvUnrolling) -> int:
    """Signals per chunk: ``settings.batch_chunk``, or as many as keep one chunk's code map
    within ``CHUNK_BYTES`` (at least one signal)."""
    if settings.batch_chunk is not None:
        return settings.batch_chunk
    height, width = code_size(x.shape[-2:], atoms, settings)
    per_signal = atoms.shape[0] * height * width * x.element_size()
    return max(1, CHUNK_BYTES // max(per_signal, 1))


def batch_chunks(batch: int, size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]``: ``batch`` signals in runs of ``size`` (the last may be shorter)."""
    return [(start, min(start + size, batch)) for start in range(0, batch, size)]
