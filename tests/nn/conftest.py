"""Every test in tests/nn starts from the same global torch seed, so layers built with PyTorch's
default initialisation (nn.Conv2d, nn.Linear) are the same whatever the test order or worker."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded_default_initialisation() -> None:
    torch.manual_seed(0)
