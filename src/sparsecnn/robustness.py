"""Robustness evaluation: common corruptions and adversarial attacks (THEORY.md A.8, C9, C10,
check 27).

Bowren (2021, arXiv 2108.06622) proposes two "more robust" forward transforms (THEORY.md A.8):
proper sparse priors and real sparse inference instead of the one-shot ReLU.  Paiton et al.
(2020, J. Vision 20(12):10) and Teti et al. (2022, ICML) measured the robustness of LCA front
ends (C9, C10).  This module gives the measurements, in pure batched PyTorch:

**Corruptions** (:func:`corrupt`), 5 severities each (severity 0 is the clean image), every
random draw from ``torch.Generator().manual_seed(seed)`` and shared across severities, so that
a severity ladder is nested:

* ``gaussian_noise``: ``clip(x + sigma z)``, ``z ~ N(0, I)``, ``sigma`` in
  :data:`SEVERITIES` (severity 4 is THEORY.md check 27's ``sigma = 0.3``);
* ``salt_and_pepper``: pixel ``i`` replaced by 0 or 1 (probability 1/2 each) iff ``u_i < p``,
  ``u ~ U[0, 1)``;
* ``blur``: convolution with a normalised Gaussian kernel of width ``s`` pixels, radius
  ``int(4 s + 0.5)``, zero padding (``scipy.ndimage.gaussian_filter(mode="constant")``);
* ``contrast``: ``mean + c (x - mean)`` per image, ``c`` decreasing with severity;
* ``occlusion``: a zero square of side ``round(f * min(H, W))`` at a random centre per image.

**Attacks** on a classifier ``f`` returning logits, with the cross-entropy loss ``l``:

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_batch, check_choice, check_positive_float, check_positive_int

__all__ = [
    "ATTACKS",
    "CORRUPTIONS",
    "SEVERITIES",
    "MinimalPerturbation",
    "accuracy",
    "attack",
    "attack_curve",
    "corrupt",
    "corruption_curves",
    "corruption_parameter",
    "evaluate_robustness",
    "fgsm",
    "gaussian_kernel",
    "minimal_l2_perturbation",
    "pgd",
    "project_l2",
    "project_linf",
    "random_targets",
]

CORRUPTIONS = ("gaussian_noise", "salt_and_pepper", "blur", "contrast", "occlusion")
#: physical parameter of each corruption at severities 1..5 (severity 0 is the clean image):
#: noise sigma, replaced-pixel fraction, blur width in pixels, contrast factor, occluded side
#: fraction.
SEVERITIES: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.05, 0.1, 0.2, 0.3, 0.5),
    "salt_and_pepper": (0.02, 0.05, 0.1, 0.2, 0.3),
    "blur": (0.4, 0.6, 0.8, 1.0, 1.5),
    "contrast": (0.8, 0.6, 0.4, 0.25, 0.1),
    "occlusion": (0.125, 0.25, 0.375, 0.5, 0.625),
}
ATTACKS = ("fgsm", "pgd_linf", "pgd_l2")
Bounds = tuple[float, float] | None


# -- input checks -------------------------------------------------------------------------------

def _check_images(images: Any, name: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (n, C, H, W); got "
                        f"{type(images).__name__}")
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor of shape (n, C, H, W); got shape "
                         f"{tuple(images.shape)}, dtype {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} must be finite; got NaN/Inf entries")
    return images


def _check_labels(labels: Any, n: int, name: str = "labels") -> torch.Tensor:
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.ndim != 1:
        got = (f"shape {tuple(labels.shape)}, dtype {labels.dtype}"
               if isinstance(labels, torch.Tensor) else type(labels).__name__)
        raise TypeError(f"{name} must be an int64 tensor of shape (n,); got {got}")
    if labels.shape[0] != n:
        raise ValueError(f"{name} must have one entry per image (n = {n}); got "
                         f"{labels.shape[0]}")
    return labels


def _check_bounds(bounds: Bounds) -> Bounds:
    if bounds is None:
        return None
    if (not isinstance(bounds, (tuple, list)) or len(bounds) != 2
            or not all(isinstance(b, (int, float)) for b in bounds)
            or not float(bounds[0]) < float(bounds[1])):
        raise ValueError(f"bounds must be None or a pair (low, high) with low < high; got "
                         f"{bounds!r}")
    return (float(bounds[0]), float(bounds[1]))


def _check_severity(severity: Any) -> int:
    if isinstance(severity, bool) or not isinstance(severity, int) or not 0 <= severity <= 5:
        raise ValueError(f"severity must be an integer in 0..5; got {severity!r}")
    return severity


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    return seed


# -- corruptions --------------------------------------------------------------------------------

def corruption_parameter(corruption: str, severity: int) -> float:
    """The physical parameter of ``corruption`` at ``severity`` (see :data:`SEVERITIES`); the
    identity value (0, or 1 for contrast) at severity 0."""
    check_choice(corruption, "corruption", CORRUPTIONS)
    severity = _check_severity(severity)
    if severity == 0:
        return 1.0 if corruption == "contrast" else 0.0
    return SEVERITIES[corruption][severity - 1]


def gaussian_kernel(width: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised 1-D Gaussian ``exp(-t^2 / (2 s^2)) / sum``, ``t = -r..r``, ``r = int(4 s +
    0.5)`` (scipy.ndimage's truncation at 4 widths)."""
    width = check_positive_float(width, "width")
    radius = int(4.0 * width + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=dtype)
    kernel = torch.exp(-offsets ** 2 / (2.0 * width ** 2))
    return kernel / kernel.sum()


def _blur(images: torch.Tensor, width: float) -> torch.Tensor:
    kernel = gaussian_kernel(width, images.dtype).to(images.device)
    radius = (kernel.numel() - 1) // 2
    channels = images.shape[1]
    rows = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    cols = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    blurred = F.conv2d(images, rows, padding=(radius, 0), groups=channels)
    return F.conv2d(blurred, cols, padding=(0, radius), groups=channels)


def corrupt(images: torch.Tensor, corruption: str, severity: int, *, seed: int = 0,
            bounds: Bounds = (0.0, 1.0)) -> torch.Tensor:
    """``images`` ``(n, C, H, W)`` corrupted by ``corruption`` at ``severity`` in 0..5.

    Deterministic in ``seed``; the random draws do not depend on ``severity``, so a higher
    severity perturbs the same pixels further (noise ``x + sigma z`` with the same ``z``, nested
    salt-and-pepper sets, growing occluders with the same centres).  The result is clipped to
    ``bounds`` (``None``: no clipping).  Severity 0 returns a copy of ``images``.
    """
    images = _check_images(images)
    check_choice(corruption, "corruption", CORRUPTIONS)
    parameter = corruption_parameter(corruption, severity)
    seed = _check_seed(seed)
    bounds = _check_bounds(bounds)
    if severity == 0:
        return images.clone()
    generator = torch.Generator().manual_seed(seed)
    n, _, height, width = images.shape
    factory = {"dtype": images.dtype}
    if corruption == "gaussian_noise":
        noise = torch.randn(images.shape, generator=generator, **factory).to(images.device)
        result = images + parameter * noise
    elif corruption == "salt_and_pepper":
        uniform = torch.rand(images.shape, generator=generator, **factory).to(images.device)
        salt = torch.rand(images.shape, generator=generator, **factory).to(images.device)
        low, high = bounds if bounds is not None else (0.0, 1.0)
        values = torch.where(salt < 0.5, torch.full_like(images, low),
                             torch.full_like(images, high))
        result = torch.where(uniform < parameter, values, images)
    elif corruption == "blur":
        result = _blur(images, parameter)
    elif corruption == "contrast":
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        result = mean + parameter * (images - mean)
    else:  # occlusion
        side = max(1, round(parameter * min(height, width)))
        centre_y = torch.randint(0, height, (n,), generator=generator).to(images.device)
        centre_x = torch.randint(0, width, (n,), generator=generator).to(images.device)
        top = (centre_y - side // 2).view(n, 1, 1)
        left = (centre_x - side // 2).view(n, 1, 1)
        rows = torch.arange(height, device=images.device).view(1, height, 1)
        cols = torch.arange(width, device=images.device).view(1, 1, width)
        inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
        result = torch.where(inside[:, None], torch.zeros_like(images), images)
    if bounds is not None:
        result = result.clamp(bounds[0], bounds[1])
    return result


# -- projections and attacks --------------------------------------------------------------------

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


def _model_dtype(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    parameter = next(iter(model.parameters()), None)
    if parameter is not None and parameter.is_floating_point():
        return images.to(dtype=parameter.dtype, device=parameter.device)
    return images


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


def _clip(values: torch.Tensor, bounds: Bounds) -> torch.Tensor:
    return values if bounds is None else values.clamp(bounds[0], bounds[1])


def fgsm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epsilon: float, *,
         targets: torch.Tensor | None = None, bounds: Bounds = (0.0, 1.0)) -> torch.Tensor:
    """Fast gradient sign method: ``clip(x + eps sign(grad_x CE(f(x), y)))`` (untargeted) or
    ``clip(x - eps sign(grad_x CE(f(x), t)))`` (targeted).  Returns the adversarial inputs."""
    images = _model_dtype(model, check_batch(images))
    labels = _check_labels(labels, images.shape[0])
    if targets is not None:
        targets = _check_labels(targets, images.shape[0], "targets")
    epsilon = check_positive_float(epsilon, "epsilon", allow_zero=True)
    bounds = _check_bounds(bounds)
    gradient = _loss_gradient(model, images, labels, targets)
    return _clip(images + epsilon * torch.sign(gradient), bounds).detach()


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
    images = _model_dtype(model, check_batch(images))
    labels = _check_labels(labels, images.shape[0])
    if targets is not None:
        targets = _check_labels(targets, images.shape[0], "targets")
    check_choice(norm, "norm", ("linf", "l2"))
    steps = check_positive_int(steps, "steps")
    bounds = _check_bounds(bounds)
    radius = _per_sample(epsilon, images)
    alpha = (2.5 * radius / steps if step_size is None
             else _per_sample(check_positive_float(step_size, "step_size"), images))
    project = project_linf if norm == "linf" else project_l2
    delta = torch.zeros_like(images)
    if random_start:
        generator = torch.Generator().manual_seed(_check_seed(seed))
        uniform = torch.rand(images.shape, generator=generator, dtype=images.dtype)
        delta = project((2.0 * uniform.to(images.device) - 1.0) * radius, radius)
        delta = _clip(images + delta, bounds) - images
    flat_shape = (-1,) + (1,) * (images.ndim - 1)
    for _ in range(steps):
        gradient = _loss_gradient(model, images + delta, labels, targets)
        if norm == "linf":
            direction = torch.sign(gradient)
        else:
            norms = torch.linalg.vector_norm(gradient.flatten(1), dim=1).view(flat_shape)
            direction = gradient / norms.clamp_min(1e-12)
        delta = project(delta + alpha * direction, radius)
        delta = _clip(images + delta, bounds) - images
    return (images + delta).detach()


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
    labels = _check_labels(labels, labels.shape[0] if isinstance(labels, torch.Tensor) else 0)
    n_classes = check_positive_int(n_classes, "n_classes", minimum=2)
    generator = torch.Generator().manual_seed(_check_seed(seed))
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
    images = _model_dtype(model, check_batch(images))
    labels = _check_labels(labels, images.shape[0])
    if targets is not None:
        targets = _check_labels(targets, images.shape[0], "targets")
    max_epsilon = check_positive_float(max_epsilon, "max_epsilon")
    tolerance = check_positive_float(tolerance, "tolerance")
    bounds = _check_bounds(bounds)
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


# -- evaluation ---------------------------------------------------------------------------------

def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 1024) -> float:
    """Fraction of ``images`` whose ``argmax`` logit equals the label."""
    images = _model_dtype(model, check_batch(images))
    labels = _check_labels(labels, images.shape[0])
    batch_size = check_positive_int(batch_size, "batch_size")
    correct = 0
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            logits = model(images[start:start + batch_size])
            correct += int((logits.argmax(1) == labels[start:start + batch_size]).sum())
    return correct / max(images.shape[0], 1)


def corruption_curves(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                      corruptions: Sequence[str] = CORRUPTIONS, seed: int = 0,
                      bounds: Bounds = (0.0, 1.0)) -> dict[str, list[float]]:
    """Accuracy at severities 0..5 for each corruption (index = severity)."""
    images = _check_images(images)
    for name in corruptions:
        check_choice(name, "corruption", CORRUPTIONS)
    clean = accuracy(model, images, labels)
    return {name: [clean] + [accuracy(model, corrupt(images, name, severity, seed=seed,
                                                     bounds=bounds), labels)
                             for severity in range(1, 6)]
            for name in corruptions}


def attack_curve(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, name: str,
                 epsilons: Sequence[float], **options: Any) -> list[float]:
    """Accuracy under attack ``name`` at each radius in ``epsilons`` (0 gives the clean
    accuracy)."""
    check_choice(name, "attack", ATTACKS)
    if not len(epsilons):
        raise ValueError(f"epsilons must list at least one radius; got {list(epsilons)!r}")
    result = []
    for epsilon in epsilons:
        epsilon = check_positive_float(epsilon, "epsilon", allow_zero=True)
        adversarial = images if epsilon == 0 else attack(model, images, labels, name, epsilon,
                                                        **options)
        result.append(accuracy(model, adversarial, labels))
    return result


def evaluate_robustness(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                        epsilons_linf: Sequence[float] = (0.0, 0.05, 0.1, 0.2),
                        epsilons_l2: Sequence[float] = (0.0, 0.5, 1.0, 2.0),
                        pgd_steps: int = 10, minimal_subset: int | None = 100,
                        minimal_tolerance: float = 0.01,
                        targets: torch.Tensor | None = None, seed: int = 0,
                        corruptions: Sequence[str] = CORRUPTIONS,
                        bounds: Bounds = (0.0, 1.0)) -> dict[str, Any]:
    """Everything at once: clean accuracy, corruption curves, FGSM / PGD-L-inf / PGD-L2
    curves and the median minimal L2 perturbation (on the first ``minimal_subset`` images,
    bisection to ``minimal_tolerance``; targeted when ``targets`` is given; ``None`` when more
    than half are not fooled within the search radius).  A JSON-serialisable dict."""
    was_training = model.training
    model.eval()
    try:
        result: dict[str, Any] = {"clean_accuracy": accuracy(model, images, labels)}
        result["corruptions"] = {
            "severity": list(range(6)),
            "parameters": {name: [corruption_parameter(name, s) for s in range(6)]
                           for name in corruptions},
            "accuracy": corruption_curves(model, images, labels, corruptions=corruptions,
                                          seed=seed, bounds=bounds)}
        options = {"steps": pgd_steps, "bounds": bounds}
        result["attacks"] = {
            "fgsm": {"epsilons": list(epsilons_linf), "accuracy": attack_curve(
                model, images, labels, "fgsm", epsilons_linf, bounds=bounds)},
            "pgd_linf": {"epsilons": list(epsilons_linf), "accuracy": attack_curve(
                model, images, labels, "pgd_linf", epsilons_linf, **options)},
            "pgd_l2": {"epsilons": list(epsilons_l2), "accuracy": attack_curve(
                model, images, labels, "pgd_l2", epsilons_l2, **options)},
        }
        if minimal_subset:
            count = min(int(minimal_subset), images.shape[0])
            sub_targets = None if targets is None else targets[:count]
            minimal = minimal_l2_perturbation(model, images[:count], labels[:count],
                                              targets=sub_targets, steps=pgd_steps,
                                              tolerance=minimal_tolerance, bounds=bounds)
            finite = minimal.distance[torch.isfinite(minimal.distance)]
            result["minimal_l2"] = {
                "median": minimal.median if math.isfinite(minimal.median) else None,
                "success_rate": minimal.success_rate, "n_images": count,
                "targeted": targets is not None,
                "mean_of_found": float(finite.mean()) if finite.numel() else None}
    finally:
        model.train(was_training)
    return result
