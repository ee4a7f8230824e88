"""Adversarial attacks on a classifier ``f`` returning logits, with the cross-entropy loss ``l``:

* FGSM (Goodfellow et al. 2015): ``x' = clip(x + eps sign(grad_x l(f(x), y)))``;
* PGD (Madry et al. 2018), L-infinity or L2: ``delta <- P_eps(delta + alpha g)``, ``g`` the sign
  (L-inf) or the normalised gradient (L2), ``P_eps`` the exact Euclidean projection onto the
  ball (:func:`project_linf`, :func:`project_l2`), then the clip to the pixel range, which moves
  every coordinate towards ``x`` and so stays in the ball;
* minimal L2 perturbation (:func:`minimal_l2_perturbation`): per image, bisection over the PGD-L2
  radius for the smallest radius at which PGD flips the label (or reaches a target class).  For
  a linear classifier PGD finds the exact worst case, so the result is the distance to the
  decision boundary ``|w^T x + b| / ||w||_2`` to within the bisection tolerance.

Targeted attacks minimise the cross-entropy of the target class instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_batch, check_choice, check_positive_float, check_positive_int
from ._checks import Bounds, as_model_dtype, check_bounds, check_labels, check_seed, clip

__all__ = ["ATTACKS", "MinimalPerturbation", "attack", "fgsm", "minimal_l2_perturbation", "pgd",
           "pgd_restarts", "project_l2", "project_linf", "random_targets"]

ATTACKS = ("fgsm", "pgd_linf", "pgd_l2")


def project_linf(delta: torch.Tensor, epsilon: float | torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto ``{d : ||d||_inf <= eps}`` per sample: ``clamp(delta, -eps,
    eps)`` (``epsilon`` a number or one value per sample)."""
    epsilon = _per_sample(epsilon, delta)
    return torch.maximum(torch.minimum(delta, epsilon), -epsilon)


def project_l2(delta: torch.Tensor, epsilon: float | torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto ``{d : ||d||_2 <= eps}`` per sample: ``delta min(1, eps /
    ||delta||_2)``."""
    epsilon = _per_sample(epsilon, delta)
    norms = torch.linalg.vector_norm(delta.flatten(1), dim=1).view(
        (-1,) + (1,) * (delta.ndim - 1))
    tiny = torch.finfo(delta.dtype).tiny
    scale = torch.where(norms > epsilon, epsilon / norms.clamp_min(tiny), torch.ones_like(norms))
    return delta * scale


def _per_sample(epsilon: float | torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    shape = (-1,) + (1,) * (delta.ndim - 1)
    if isinstance(epsilon, torch.Tensor):
        if epsilon.ndim == 0:
            value = epsilon.to(delta.dtype).to(delta.device).view(1)
        elif epsilon.ndim == 1 and epsilon.shape[0] == delta.shape[0]:
            value = epsilon.to(delta.dtype).to(delta.device)
        elif (epsilon.ndim == delta.ndim and epsilon.shape[0] in (1, delta.shape[0])
              and all(size == 1 for size in epsilon.shape[1:])):
            value = epsilon.to(delta.dtype).to(delta.device).flatten()
        else:
            raise ValueError(f"epsilon must be a number or one value per sample ({delta.shape[0]}"
                             f"); got a tensor of shape {tuple(epsilon.shape)}")
        if bool((value < 0).any()) or not bool(torch.isfinite(value).all()):
            raise ValueError("epsilon must be finite and >= 0")
        return value.view(shape)
    value = check_positive_float(epsilon, "epsilon", allow_zero=True)
    return torch.full((1,) * delta.ndim, value, dtype=delta.dtype, device=delta.device)


def _loss_gradient(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                   targets: torch.Tensor | None) -> torch.Tensor:
    """Gradient of the attack objective: ``+CE(f(x), y)`` (untargeted, ascend) or
    ``-CE(f(x), t)`` (targeted, ascend towards the target)."""
    inputs = inputs.detach().requires_grad_(True)
    logits = model(inputs)
    if targets is None:
        objective = F.cross_entropy(logits, labels, reduction="sum")
    else:
        objective = -F.cross_entropy(logits, targets, reduction="sum")
    (gradient,) = torch.autograd.grad(objective, inputs)
    return gradient


def fgsm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epsilon: float, *,
         targets: torch.Tensor | None = None, bounds: Bounds = (0.0, 1.0)) -> torch.Tensor:
    """Fast gradient sign method: ``clip(x + eps sign(grad_x CE(f(x), y)))`` (untargeted) or
    ``clip(x - eps sign(grad_x CE(f(x), t)))`` (targeted).  Returns the adversarial inputs."""
    images = as_model_dtype(model, check_batch(images))
    labels = check_labels(labels, images.shape[0])
    if targets is not None:
        targets = check_labels(targets, images.shape[0], "targets")
    epsilon = check_positive_float(epsilon, "epsilon", allow_zero=True)
    bounds = check_bounds(bounds)
    gradient = _loss_gradient(model, images, labels, targets)
    return clip(images + epsilon * torch.sign(gradient), bounds).detach()


def pgd(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
        epsilon: float | torch.Tensor, *, norm: str = "linf", steps: int = 20,
        step_size: float | None = None, targets: torch.Tensor | None = None,
        random_start: bool = False, seed: int = 0, bounds: Bounds = (0.0, 1.0)
        ) -> torch.Tensor:
    """Projected gradient ascent of the cross-entropy in the ``norm`` ball of radius
    ``epsilon`` (a number or one radius per sample).

    ``delta^{t+1} = P_eps(delta^t + alpha g^t)`` with ``g = sign(grad)`` (``"linf"``) or
    ``grad / ||grad||_2`` (``"l2"``), then ``x + delta`` clipped to ``bounds``; ``alpha``
    defaults to ``2.5 eps / steps``.  ``random_start`` draws ``delta^0`` uniformly in the ball's
    bounding box (projected) from ``seed``.  The returned inputs satisfy ``||x' - x|| <= eps``.
    """
    images = as_model_dtype(model, check_batch(images))
    labels = check_labels(labels, images.shape[0])
    if targets is not None:
        targets = check_labels(targets, images.shape[0], "targets")
    check_choice(norm, "norm", ("linf", "l2"))
    steps = check_positive_int(steps, "steps")
    bounds = check_bounds(bounds)
    radius = _per_sample(epsilon, images)
    alpha = (2.5 * radius / steps if step_size is None
             else _per_sample(check_positive_float(step_size, "step_size"), images))
    project = project_linf if norm == "linf" else project_l2
    delta = torch.zeros_like(images)
    if random_start:
        generator = torch.Generator().manual_seed(check_seed(seed))
        uniform = torch.rand(images.shape, generator=generator, dtype=images.dtype)
        delta = project((2.0 * uniform.to(images.device) - 1.0) * radius, radius)
        delta = clip(images + delta, bounds) - images
    flat_shape = (-1,) + (1,) * (images.ndim - 1)
    for _ in range(steps):
        gradient = _loss_gradient(model, images + delta, labels, targets)
        if norm == "linf":
            direction = torch.sign(gradient)
        else:
            norms = torch.linalg.vector_norm(gradient.flatten(1), dim=1).view(flat_shape)
            direction = gradient / norms.clamp_min(1e-12)
        delta = project(delta + alpha * direction, radius)
        delta = clip(images + delta, bounds) - images
    return (images + delta).detach()


def pgd_restarts(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 epsilon: float, *, norm: str = "linf", steps: int = 50, restarts: int = 1,
                 step_size: float | None = None, seed: int = 0, bounds: Bounds = (0.0, 1.0)
                 ) -> torch.Tensor:
    """Untargeted :func:`pgd` from ``delta = 0`` and then from ``restarts`` random starts (seeds
    ``seed, seed + 1, ...``); per image the result of the first run that fools the model, else
    the run of largest cross-entropy (Madry et al. 2018 use restarts because one PGD run can
    stall in a local maximum of the loss)."""
    restarts = check_positive_int(restarts, "restarts", minimum=0)
    best = pgd(model, images, labels, epsilon, norm=norm, steps=steps, step_size=step_size,
               bounds=bounds)
    labels = check_labels(labels, best.shape[0])
    best_loss, fooled = _loss_and_success(model, best, labels)
    for restart in range(restarts):
        if bool(fooled.all()):
            break
        candidate = pgd(model, images, labels, epsilon, norm=norm, steps=steps,
                        step_size=step_size, random_start=True, seed=seed + restart,
                        bounds=bounds)
        loss, success = _loss_and_success(model, candidate, labels)
        better = ~fooled & (success | (loss > best_loss))
        best[better] = candidate[better]
        best_loss = torch.where(better, loss, best_loss)
        fooled = fooled | success
    return best


def _loss_and_success(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        logits = model(inputs)
    return (F.cross_entropy(logits, labels, reduction="none"), logits.argmax(1) != labels)


def attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, name: str,
           epsilon: float, **options: Any) -> torch.Tensor:
    """Dispatch to :func:`fgsm` (``"fgsm"``) or :func:`pgd` (``"pgd_linf"``, ``"pgd_l2"``)."""
    check_choice(name, "attack", ATTACKS)
    if name == "fgsm":
        options = {k: v for k, v in options.items() if k in ("targets", "bounds")}
        return fgsm(model, images, labels, epsilon, **options)
    return pgd(model, images, labels, epsilon, norm=name[4:], **options)


def random_targets(labels: torch.Tensor, n_classes: int, seed: int = 0) -> torch.Tensor:
    """A target class ``t != y`` per image, uniform over the other classes, from ``seed``."""
    labels = check_labels(labels, labels.shape[0] if isinstance(labels, torch.Tensor) else 0)
    n_classes = check_positive_int(n_classes, "n_classes", minimum=2)
    generator = torch.Generator().manual_seed(check_seed(seed))
    shift = torch.randint(1, n_classes, labels.shape, generator=generator)
    return (labels + shift) % n_classes


def _success(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
             targets: torch.Tensor | None) -> torch.Tensor:
    with torch.no_grad():
        predictions = model(inputs).argmax(1)
    return predictions == targets if targets is not None else predictions != labels


@dataclass
class MinimalPerturbation:
    """Per image: ``distance`` (L2 norm of the smallest successful perturbation found; ``inf``
    where even ``max_epsilon`` failed), the adversarial inputs (the clean input where none was
    found) and whether it succeeded; ``median`` over all images (the lower median, ``inf``
    counting as largest)."""

    distance: torch.Tensor
    adversarial: torch.Tensor
    success: torch.Tensor
    max_epsilon: float
    tolerance: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return float(torch.quantile(self.distance.double(), 0.5, interpolation="lower"))

    @property
    def success_rate(self) -> float:
        return float(self.success.double().mean()) if self.success.numel() else 0.0


def minimal_l2_perturbation(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                            targets: torch.Tensor | None = None, max_epsilon: float = 4.0,
                            tolerance: float = 1e-3, steps: int = 20,
                            bounds: Bounds = (0.0, 1.0)) -> MinimalPerturbation:
    """Smallest L2 perturbation that flips each image's label (or reaches ``targets``).

    Batched bisection over the radius ``eps`` of :func:`pgd` with ``norm="l2"``: ``hi`` starts
    at ``max_epsilon`` (images not fooled there get ``inf``), ``lo`` at 0; at each step PGD runs
    at ``(lo + hi)/2`` and success moves ``hi`` down, failure moves ``lo`` up, until ``hi - lo
    <= tolerance``.  The distance reported is the norm of the successful perturbation found at
    the final ``hi`` (an upper bound of the true minimal distance within ``tolerance`` of the
    radius bisected).  Images already misclassified (or already of the target class) get 0.
    """
    images = as_model_dtype(model, check_batch(images))
    labels = check_labels(labels, images.shape[0])
    if targets is not None:
        targets = check_labels(targets, images.shape[0], "targets")
    max_epsilon = check_positive_float(max_epsilon, "max_epsilon")
    tolerance = check_positive_float(tolerance, "tolerance")
    bounds = check_bounds(bounds)
    n = images.shape[0]
    dtype = images.dtype
    best = images.clone()
    done = _success(model, images, labels, targets)
    distance = torch.where(done, torch.zeros(n, dtype=dtype), torch.full((n, ), math.inf,
                                                                           dtype=dtype))

    def run(radius: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sub_targets = None if targets is None else targets[index]
        adversarial = pgd(model, images[index], labels[index], radius, norm="l2", steps=steps,
                          step_size=None, targets=sub_targets, bounds=bounds)
        return adversarial, _success(model, adversarial, labels[index], sub_targets)

    active = torch.nonzero(~done).flatten()
    if active.numel():
        high = torch.full((active.numel(),), max_epsilon, dtype=dtype)
        adversarial, fooled = run(high, active)
        for position, index in enumerate(active.tolist()):
            if bool(fooled[position]):
                best[index] = adversarial[position]
        active, high = active[fooled], high[fooled]
        low = torch.zeros_like(high)
        n_bisections = max(0, math.ceil(math.log2(max_epsilon / tolerance)))
        for _ in range(n_bisections):
            if not active.numel():
                break
            middle = (low + high) / 2
            adversarial, fooled = run(middle, active)
            high = torch.where(fooled, middle, high)
            low = torch.where(fooled, low, middle)
            chosen = active[fooled]
            best[chosen] = adversarial[fooled]
        norms = torch.linalg.vector_norm((best - images).flatten(1), dim=1)
        distance[active] = norms[active]
    success = torch.isfinite(distance)
    return MinimalPerturbation(distance=distance.detach(), adversarial=best.detach(),
                               success=success, max_epsilon=max_epsilon, tolerance=tolerance,
                               details={"steps": steps, "targeted": targets is not None})

