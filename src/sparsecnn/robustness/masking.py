"""The gradient-masking check, run before any gradient-attack number is believed.

A gradient attack's accuracy is an upper bound on robust accuracy only if the gradient carries
information.  Athalye, Carlini & Wagner (2018, "Obfuscated gradients give a false sense of
security", ICML, Sec. 3.1) and Carlini et al. (2019, "On evaluating adversarial robustness",
Sec. 4 and Appendix "checklist") list the symptoms of masked or obfuscated gradients; this
module measures each one on the model, the images and the L-inf radii given:

1. ``gradient``: the fraction of inputs whose input gradient of the cross-entropy is exactly 0
   or non-finite is at most ``max_zero_fraction`` (a piecewise-constant model, such as a
   thresholded detector, has a zero gradient almost everywhere);
2. ``budget``: PGD uses its budget, mean over images of ``||delta||_inf / eps >= 0.5`` at every
   eps (a masked gradient leaves the input where it is: ``delta = 0``);
3. ``noise``: PGD's accuracy is at most ``tolerance`` above that of random vertices of the same
   ball (random sampling must not beat the gradient);
4. ``gradient_free``: PGD's accuracy is at most ``tolerance`` above that of the gradient-free
   Square Attack at the same eps (a black-box attack must not beat the white-box one);
5. ``monotone``: PGD's mean loss does not decrease and its accuracy does not increase (beyond
   ``tolerance``) as eps grows, and the loss at the largest eps exceeds that at the smallest;
6. ``unbounded``: at ``unbounded_epsilon`` (the whole pixel range for images in [0, 1]) PGD's
   accuracy is at most ``tolerance`` (any input is reachable, so every label can be changed).

Accuracies count an image as correct iff its margin ``f_y - max_{k != y} f_k`` is > 0 (a tie
is an error).  The report says which checks failed and why, with the numbers; an attack whose
check fails gives no bound on robust accuracy and must not be judged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_batch, check_positive_float, check_positive_int
from ._checks import Bounds, as_model_dtype, check_bounds, check_labels, check_seed
from .attacks import pgd_restarts
from .gradient_free import margins, random_noise_attack, square_attack_linf

__all__ = ["CHECKS", "MaskingReport", "gradient_masking_report"]

CHECKS = ("gradient", "budget", "noise", "gradient_free", "monotone", "unbounded")


@dataclass
class MaskingReport:
    """The measurements of :func:`gradient_masking_report` and the verdict of each check
    (``checks``: name -> passed; ``reasons``: one sentence per failed check)."""

    epsilons: list[float]
    n_images: int
    zero_gradient_fraction: float
    nonfinite_gradient_fraction: float
    pgd_accuracy: list[float]
    pgd_mean_linf_over_eps: list[float]
    pgd_loss: list[float]
    noise_accuracy: list[float]
    square_accuracy: list[float]
    unbounded_epsilon: float
    unbounded_pgd_accuracy: float
    unbounded_pgd_max_linf: float
    checks: dict[str, bool]
    reasons: list[str]
    settings: dict[str, Any]
    #: per eps, which images PGD / the Square Attack left correctly classified
    pgd_correct: list[torch.Tensor] = field(default_factory=list, repr=False)
    square_correct: list[torch.Tensor] = field(default_factory=list, repr=False)

    @property
    def passed(self) -> bool:
        return all(self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        return {"epsilons": self.epsilons, "n_images": self.n_images,
                "zero_gradient_fraction": self.zero_gradient_fraction,
                "nonfinite_gradient_fraction": self.nonfinite_gradient_fraction,
                "pgd_accuracy": self.pgd_accuracy,
                "pgd_mean_linf_over_eps": self.pgd_mean_linf_over_eps,
                "pgd_loss": self.pgd_loss, "noise_accuracy": self.noise_accuracy,
                "square_accuracy": self.square_accuracy,
                "unbounded_epsilon": self.unbounded_epsilon,
                "unbounded_pgd_accuracy": self.unbounded_pgd_accuracy,
                "unbounded_pgd_max_linf": self.unbounded_pgd_max_linf,
                "checks": self.checks, "passed": self.passed, "reasons": self.reasons,
                "settings": self.settings}


def _input_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor
                     ) -> torch.Tensor:
    inputs = images.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(inputs), labels, reduction="sum")
    (gradient,) = torch.autograd.grad(loss, inputs)
    return gradient


def _format(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"


def gradient_masking_report(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                            epsilons: Sequence[float], *, steps: int = 50, restarts: int = 1,
                            noise_samples: int = 20, square_queries: int = 300,
                            unbounded_epsilon: float = 1.0, tolerance: float = 0.02,
                            max_zero_fraction: float = 0.05, seed: int = 0,
                            bounds: Bounds = (0.0, 1.0)) -> MaskingReport:
    """Run the six checks of the module docstring on ``model`` with L-inf PGD (``steps`` steps,
    ``restarts`` random restarts after the start at ``delta = 0``), ``noise_samples`` random
    vertices and a ``square_queries``-query Square Attack at every radius of ``epsilons``
    (increasing, > 0); all draws from ``seed``."""
    images = as_model_dtype(model, check_batch(images))
    labels = check_labels(labels, images.shape[0])
    radii = [check_positive_float(e, "epsilons") for e in epsilons]
    if not radii or radii != sorted(set(radii)):
        raise ValueError(f"epsilons must be a non-empty, strictly increasing sequence of "
                         f"positive radii; got {list(epsilons)!r}")
    steps = check_positive_int(steps, "steps")
    restarts = check_positive_int(restarts, "restarts", minimum=0)
    unbounded_epsilon = check_positive_float(unbounded_epsilon, "unbounded_epsilon")
    tolerance = check_positive_float(tolerance, "tolerance", allow_zero=True)
    max_zero_fraction = check_positive_float(max_zero_fraction, "max_zero_fraction",
                                             allow_zero=True)
    seed = check_seed(seed)
    bounds = check_bounds(bounds)
    n = images.shape[0]

    gradient = _input_gradients(model, images, labels).flatten(1)
    finite = torch.isfinite(gradient).all(1)
    zero = finite & (gradient.abs().amax(1) == 0)
    zero_fraction = float(zero.double().mean())
    nonfinite_fraction = float((~finite).double().mean())

    pgd_accuracy, spent, losses, noise_accuracy, square_accuracy = [], [], [], [], []
    pgd_correct, square_correct = [], []
    for index, epsilon in enumerate(radii):
        adversarial = pgd_restarts(model, images, labels, epsilon, steps=steps,
                                   restarts=restarts, seed=seed + 100 * index, bounds=bounds)
        with torch.no_grad():
            logits = model(adversarial)
        correct = margins(model, adversarial, labels) > 0
        pgd_correct.append(correct)
        pgd_accuracy.append(float(correct.double().mean()))
        linf = (adversarial - images).flatten(1).abs().amax(1)
        spent.append(float((linf / epsilon).double().mean()))
        losses.append(float(F.cross_entropy(logits.double(), labels)))
        noise = random_noise_attack(model, images, labels, epsilon, samples=noise_samples,
                                    seed=seed + 100 * index + 1, bounds=bounds)
        noise_accuracy.append(float((~noise.fooled).double().mean()))
        square = square_attack_linf(model, images, labels, epsilon, queries=square_queries,
                                    seed=seed + 100 * index + 2, bounds=bounds)
        square_correct.append(~square.fooled)
        square_accuracy.append(float((~square.fooled).double().mean()))
    unbounded = pgd_restarts(model, images, labels, unbounded_epsilon, steps=steps,
                             restarts=0, bounds=bounds)
    unbounded_accuracy = float((margins(model, unbounded, labels) > 0).double().mean())
    # PGD from delta = 0 (no restart): exactly 0 when the gradient vanishes at every iterate
    unbounded_linf = float((unbounded - images).abs().max())

    checks: dict[str, bool] = {}
    reasons: list[str] = []

    def record(name: str, passed: bool, reason: str) -> None:
        checks[name] = passed
        if not passed:
            reasons.append(f"{name}: {reason}")

    record("gradient", zero_fraction + nonfinite_fraction <= max_zero_fraction,
           f"{zero_fraction:.3g} of the inputs have an exactly zero and {nonfinite_fraction:.3g}"
           f" a non-finite input gradient (allowed: {max_zero_fraction:g} together)")
    record("budget", all(s >= 0.5 for s in spent),
           f"PGD's mean ||delta||_inf / eps is {_format(spent)} at eps {_format(radii)} "
           "(< 0.5: the gradient does not move the input)")
    record("noise",
           all(p <= q + tolerance for p, q in zip(pgd_accuracy, noise_accuracy, strict=True)),
           f"PGD accuracy {_format(pgd_accuracy)} exceeds random-noise accuracy "
           f"{_format(noise_accuracy)} by more than {tolerance:g}")
    record("gradient_free",
           all(p <= q + tolerance for p, q in zip(pgd_accuracy, square_accuracy, strict=True)),
           f"PGD accuracy {_format(pgd_accuracy)} exceeds the Square Attack's "
           f"{_format(square_accuracy)} by more than {tolerance:g}")
    increasing = all(b >= a - 1e-9 * max(1.0, abs(a)) for a, b in pairwise(losses))
    decreasing = all(b <= a + tolerance for a, b in pairwise(pgd_accuracy))
    record("monotone", increasing and decreasing and (len(losses) == 1
                                                      or losses[-1] > losses[0]),
           f"PGD loss {_format(losses)} and accuracy {_format(pgd_accuracy)} over eps "
           f"{_format(radii)}: the loss must grow and the accuracy must not")
    record("unbounded", unbounded_accuracy <= tolerance,
           f"PGD at eps = {unbounded_epsilon:g} leaves accuracy {unbounded_accuracy:.3g} "
           f"(> {tolerance:g}) although every input is reachable")
    settings = {"steps": steps, "restarts": restarts, "noise_samples": noise_samples,
                "square_queries": square_queries, "tolerance": tolerance,
                "max_zero_fraction": max_zero_fraction, "seed": seed}
    return MaskingReport(
        epsilons=radii, n_images=n, zero_gradient_fraction=zero_fraction,
        nonfinite_gradient_fraction=nonfinite_fraction, pgd_accuracy=pgd_accuracy,
        pgd_mean_linf_over_eps=spent, pgd_loss=losses, noise_accuracy=noise_accuracy,
        square_accuracy=square_accuracy, unbounded_epsilon=unbounded_epsilon,
        unbounded_pgd_accuracy=unbounded_accuracy, unbounded_pgd_max_linf=unbounded_linf,
        checks=checks, reasons=reasons,
        settings=settings, pgd_correct=pgd_correct, square_correct=square_correct)
