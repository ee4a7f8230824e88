"""Shared fixtures: docs/theory.md Part D defaults (float64, D = Q of a 64x64 Gaussian matrix).

Helpers that tests import are in ``helpers.py``."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("sparsecnn", deadline=None, max_examples=40, derandomize=True)
settings.load_profile("sparsecnn")
torch.set_num_threads(int(os.environ.get("SPARSECNN_TEST_THREADS", "1")))


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def orthonormal_dictionary(generator: torch.Generator) -> torch.Tensor:
    """docs/theory.md Part D: Q from the QR decomposition of a 64x64 standard-normal matrix."""
    q, _ = torch.linalg.qr(torch.randn(64, 64, generator=generator, dtype=torch.float64))
    return q


@pytest.fixture
def overcomplete_dictionary(generator: torch.Generator) -> torch.Tensor:
    """64 x 128 Gaussian dictionary with unit-norm columns."""
    matrix = torch.randn(64, 128, generator=generator, dtype=torch.float64)
    return matrix / torch.linalg.vector_norm(matrix, dim=0)


@pytest.fixture
def signals(generator: torch.Generator) -> torch.Tensor:
    """A batch of x ~ N(0, I_64)."""
    return torch.randn(6, 64, generator=generator, dtype=torch.float64)
