"""The spectral norm ``||D||_2^2`` of a dictionary by power iteration (docs/theory.md A.8)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

POWER_ITERATION_LIMIT = 1 << 22


def power_iteration(apply_normal: Callable[[torch.Tensor], torch.Tensor], shape: Sequence[int],
                    *, dtype: torch.dtype, device: torch.device, max_iter: int = 5000,
                    tol: float = 1e-12, seed: int = 0) -> float:
    """Largest eigenvalue of the positive semi-definite operator ``apply_normal`` (``D^T D``).

    Iterates ``v <- A v / ||A v||`` from a seeded random start and stops when the Rayleigh
    quotient changes by less than ``tol`` relatively.  The estimate approaches ``||D||_2^2``
    from below.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(tuple(shape), generator=generator, dtype=torch.float64).to(device=device,
                                                                              dtype=dtype)
    v = v / torch.linalg.vector_norm(v)
    estimate = 0.0
    with torch.no_grad():
        for _ in range(max_iter):
            w = apply_normal(v)
            new_estimate = float(torch.sum(v * w))
            norm = float(torch.linalg.vector_norm(w))
            if norm == 0.0:
                return 0.0
            v = w / norm
            if abs(new_estimate - estimate) <= tol * abs(new_estimate):
                return max(new_estimate, norm)
            estimate = new_estimate
    return max(estimate, norm)


# Bytes of complex frequency responses held at once by :func:`fourier_lipschitz_bound`:
# the bound is a maximum over frequencies, so it is taken block by block of frequency rows
# and the peak memory no longer grows with the image (docs/reliability.md "Numerics and memory").
