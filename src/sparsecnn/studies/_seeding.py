"""The one way a study turns a seed into random state.

* Draws that accept a generator take ``seeded_generator(seed)``, a fresh
  ``torch.Generator().manual_seed(seed)``: the numbers depend on ``seed`` alone, never on what
  ran before.
* What draws from torch's global generator and takes none (``nn.Module`` initialisation,
  ``reset_parameters``) runs inside ``with seeded_global_rng(seed):``, which seeds the global
  generator and restores its previous state on exit, so the caller's random stream is left as
  it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["seeded_generator", "seeded_global_rng", "study_seeds"]


def study_seeds(first_seed: int, count: int) -> list[int]:
    """The seeds of a study's ``count`` repetitions: ``first_seed, first_seed + 1, ...`` (one
    data split and initialisation each)."""
    return [first_seed + index for index in range(count)]


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


@contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Torch's global CPU generator seeded with ``seed`` inside the block, restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
