"""Attacks that use only the model's outputs, so masked gradients cannot stop them.

Both minimise the margin ``m(x) = f_y(x) - max_{k != y} f_k(x)`` (the image counts as
misclassified iff ``m <= 0``: a tie is an error, the convention of the margin certificate of
docs/theory.md B.3) over the L-inf ball ``||x' - x||_inf <= eps`` intersected with the pixel range:

* :func:`square_attack_linf` (Andriushchenko et al. 2020, "Square Attack", ECCV, Alg. 1 with the
  L-inf proposal of their Sec. 3.1): start at vertical stripes of ``+-eps``; at iteration ``i``
  redraw one random ``s x s`` window to ``+-eps`` per channel, ``s = round(sqrt(p_i H W))`` with
  ``p_i`` halved on their fixed schedule, and keep the proposal iff it lowers ``m``.  Every
  iterate is a vertex of the ball (then clipped), which for a linear classifier contains the
  worst case ``x - eps sign(w)``;
* :func:`random_noise_attack`: ``samples`` uniform random vertices ``x + eps s``,
  ``s in {-1, 1}^d``, the best one kept (the baseline of Carlini et al. 2019, "On evaluating
  adversarial robustness", Sec. 4.6: a gradient attack must beat it).

Clipping to ``bounds`` moves every coordinate towards ``x``, so ``||x' - x||_inf <= eps`` holds
exactly for every returned input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_batch, check_positive_float, check_positive_int
from ._checks import Bounds, as_model_dtype, check_bounds, check_labels, check_seed, clip

__all__ = ["BlackBoxResult", "margins", "random_noise_attack", "square_attack_linf"]


@dataclass
class BlackBoxResult:
    """``adversarial`` inputs, their ``margin`` ``f_y - max_{k != y} f_k`` (<= 0: fooled) and the
    number of model queries spent per image (``queries``)."""

    adversarial: torch.Tensor
    margin: torch.Tensor
    queries: torch.Tensor

    @property
    def fooled(self) -> torch.Tensor:
        return self.margin <= 0


def margins(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
            targets: torch.Tensor | None = None) -> torch.Tensor:
    """``f_y(x) - max_{k != y} f_k(x)`` per input, without gradients; with ``targets`` the
    targeted margin ``max_{k != t} f_k(x) - f_t(x)`` (<= 0: the target class is reached, a tie
    counting as reached like the untargeted convention)."""
    with torch.no_grad():
        logits = model(inputs)
    if targets is not None:
        target = logits.gather(1, targets[:, None])[:, 0]
        rest = logits.scatter(1, targets[:, None], float("-inf"))
        return (rest.amax(1) - target).to(torch.float64)
    true = logits.gather(1, labels[:, None])[:, 0]
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return (true - others.amax(1)).to(torch.float64)


def _prepare(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epsilon: float,
             bounds: Bounds, seed: int) -> tuple[torch.Tensor, torch.Tensor, float, Bounds,
                                                 torch.Generator]:
    images = as_model_dtype(model, check_batch(images))
    labels = check_labels(labels, images.shape[0])
    epsilon = check_positive_float(epsilon, "epsilon", allow_zero=True)
    bounds = check_bounds(bounds)
    generator = torch.Generator().manual_seed(check_seed(seed))
    return images, labels, epsilon, bounds, generator


def _signs(shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype
           ) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator).to(dtype) * 2 - 1


def random_noise_attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                        epsilon: float, *, samples: int = 20, seed: int = 0,
                        bounds: Bounds = (0.0, 1.0)) -> BlackBoxResult:
    """The best of ``samples`` random vertices ``clip(x + eps s)``, ``s`` uniform in
    ``{-1, 1}^d`` from ``seed`` (per image, the draw of smallest margin)."""
    images, labels, epsilon, bounds, generator = _prepare(model, images, labels, epsilon,
                                                          bounds, seed)
    samples = check_positive_int(samples, "samples")
    best = images.clone()
    best_margin = torch.full((images.shape[0],), math.inf, dtype=torch.float64)
    for _ in range(samples):
        candidate = clip(images + epsilon * _signs(tuple(images.shape), generator, images.dtype),
                         bounds)
        margin = margins(model, candidate, labels)
        better = margin < best_margin
        best[better] = candidate[better]
        best_margin = torch.where(better, margin, best_margin)
    queries = torch.full((images.shape[0],), samples, dtype=torch.int64)
    return BlackBoxResult(best.detach(), best_margin, queries)


def _window_fraction(p_init: float, iteration: int, n_queries: int) -> float:
    """Square Attack's schedule (Andriushchenko et al. 2020, code ``p_selection``): ``p_init``
    halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of a 10,000-query run,
    rescaled to ``n_queries``."""
    scaled = int(iteration / n_queries * 10000)
    halvings = sum(scaled > step for step in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))
    return p_init / 2.0 ** halvings


def square_attack_linf(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       epsilon: float, *, queries: int = 500, p_init: float = 0.3,
                       seed: int = 0, bounds: Bounds = (0.0, 1.0),
                       targets: torch.Tensor | None = None) -> BlackBoxResult:
    """Square Attack, L-inf (module docstring): ``queries`` margin evaluations per image
    (including the initialisation); an image stops once fooled (margin <= 0).  ``p_init`` is the
    initial fraction of pixels redrawn per step (the paper's default 0.05 is tuned for 10,000
    queries on ImageNet; 0.3 suits a few hundred queries on small images).  With ``targets``
    the targeted margin of :func:`margins` is minimised instead (fooled = target reached)."""
    images, labels, epsilon, bounds, generator = _prepare(model, images, labels, epsilon,
                                                          bounds, seed)
    if targets is not None:
        targets = check_labels(targets, images.shape[0], "targets")
    queries = check_positive_int(queries, "queries")
    p_init = check_positive_float(p_init, "p_init")
    if p_init > 1:
        raise ValueError(f"p_init must be in (0, 1]; got {p_init}")
    n, channels, height, width = images.shape
    dtype = images.dtype
    # initialisation: one +-eps sign per (channel, column), i.e. vertical stripes
    stripes = _signs((n, channels, 1, width), generator, dtype).expand(-1, -1, height, -1)
    current = clip(images + epsilon * stripes, bounds)
    margin = margins(model, current, labels, targets)
    spent = torch.ones(n, dtype=torch.int64)
    for iteration in range(1, queries):
        active = torch.nonzero(margin > 0).flatten()
        if not active.numel():
            break
        fraction = _window_fraction(p_init, iteration, queries)
        size = min(max(round(math.sqrt(fraction * height * width)), 1), height, width)
        top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
        delta = current[active] - images[active]
        window = _signs((active.numel(), channels, 1, 1), generator, dtype) * epsilon
        delta[:, :, top:top + size, left:left + size] = window
        proposal = clip(images[active] + delta, bounds)
        proposal_margin = margins(model, proposal, labels[active],
                                  None if targets is None else targets[active])
        spent[active] += 1
        better = proposal_margin < margin[active]
        chosen = active[better]
        current[chosen] = proposal[better]
        margin[chosen] = proposal_margin[better]
    return BlackBoxResult(current.detach(), margin, spent)
