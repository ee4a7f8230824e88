"""Check 27 in its regime (docs/theory.md check 27; C9 Paiton et al. 2020, C10 Teti et al. 2022):
a ReLU front end ``ReLU(D^T (x - m) - lam)`` against an LCA front end, the fixed point

    a*(x) = argmin_{a >= 0} 1/2 ||(x - m) - D a||^2 + lam sum a

that LCA converges to, on one learned, overcomplete dictionary ``D``; ``m`` is the training
mean image (centred inputs: on raw digits every ``D^T x`` is positive and the ReLU front end is
a linear map).

Declared set-up (fixed here, not tuned on the outcome):

* ``D``: :data:`ATOMS` = 128 atoms for 64 pixels (2x overcomplete), online dictionary learning
  on the centred training digits with ``lam_dl = 0.1`` and exact (homotopy) codes for
  :data:`DICTIONARY_STEPS` minibatches; converged when the mean energy of the last 50
  minibatches is within 2 % of the 50 before (the curve is reported);
* ``lam``: the :data:`LAMBDA_QUANTILE` quantile of the entries of ``D^T (x - m)`` over the
  training split, so the ReLU front end has zero fraction 0.7 on the training split;
* both front ends' zero fractions on test digits must lie in :data:`SPARSE_RANGE`;
* the LCA front end is evaluated at its fixed point (exact homotopy codes; gradients by
  implicit differentiation on the active set ``S``: ``da_S/dx = (D_S^T D_S)^{-1} D_S^T``,
  exact where ``S`` is locally constant); LCA itself is run to its stopping tolerance on the
  attacked images and its iteration count and distance to the fixed point are reported.

C9 is trusted only after two guards against gradient masking (the LCA front end's gradient is
exact only where the active set is locally constant):

* the gradient-masking checklist (:func:`sparsecnn.robustness.masking.gradient_masking_report`,
  L-inf PGD at :data:`MASKING_EPSILONS`) on the LCA front end, reported with the claim;
* a gradient-free minimal search with the same targets: bisection over the L-inf radius of the
  targeted Square Attack (:func:`sparsecnn.robustness.square_attack_linf`, :data:`SQUARE_QUERIES`
  queries, :data:`SQUARE_BISECTIONS` halvings of ``[0, max_epsilon / sqrt(d)]``, so every
  perturbation it finds has L2 norm <= ``max_epsilon``), the L2 norm of the smallest successful
  perturbation kept.

Rule (:func:`minimum_over_attacks`): an image's minimal perturbation is the smallest L2 norm over
the attacks that reach its target (PGD-L2 bisection, Square bisection); an image no attack fools
within ``max_epsilon`` counts as ``inf`` (the lower median over all images is reported, censored
at ``max_epsilon`` when it is ``inf``); C9 is inconclusive when the fractions of unfooled images
of the two front ends differ by more than :data:`UNFOOLED_MARGIN`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from ...data import DatasetSplit
from ...inference import ConvergenceWarning, sparse_code
from ...robustness import (
    accuracy,
    corrupt,
    gradient_masking_report,
    minimal_l2_perturbation,
    random_targets,
    square_attack_linf,
)
from ...training import refit_head
from .._seeding import seeded_global_rng
from .budget import NOISE_SEVERITY

__all__ = ["ATOMS", "DICTIONARY_STEPS", "LAMBDA_QUANTILE", "SPARSE_RANGE", "UNFOOLED_MARGIN",
           "CentredCoder", "check27", "front_end_problem", "minimum_over_attacks",
           "square_minimal_l2", "unfooled_problem"]

ATOMS = 128
DICTIONARY_LAMBDA = 0.1
DICTIONARY_STEPS = 150
LAMBDA_QUANTILE = 0.7
SPARSE_RANGE = (0.5, 0.95)
LCA_TOLERANCE = 1e-4
MINIMAL_TOLERANCE = 0.01  # bisection stops when hi - lo <= 0.01 (L2, pixels in [0, 1])
MINIMAL_STEPS = 20  # PGD-L2 steps per bisection radius
MAX_EPSILON = 6.0  # search range of the minimal targeted L2 perturbation
SQUARE_QUERIES = 300  # targeted Square Attack queries per image and radius
SQUARE_BISECTIONS = 6  # halvings of the L-inf radius range of the gradient-free search
MASKING_EPSILONS = (0.05, 0.1, 0.2)  # L-inf radii of the masking checklist on the LCA front end
MASKING_STEPS = 20
MASKING_QUERIES = 200
UNFOOLED_MARGIN = 0.1  # C9 inconclusive above this gap in unfooled fractions


class _ExactLasso(torch.autograd.Function):
    """The non-negative lasso minimiser ``a*(x)`` (homotopy), differentiated on its active
    set (module docstring)."""

    @staticmethod
    def forward(ctx: Any, signals: torch.Tensor, dictionary: torch.Tensor,
                lam: float) -> torch.Tensor:
        codes = sparse_code(signals.detach(), dictionary, lam, method="homotopy", nonneg=True,
                            max_iter=1000, tol=1e-10, warn=True).codes
        ctx.save_for_backward(codes, dictionary)
        return codes

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        codes, dictionary = ctx.saved_tensors
        mask = (codes > 0).to(grad.dtype)
        gram = dictionary.T @ dictionary
        # (M G M + (I - M)) z = M g restricts the solve to S and leaves z = 0 off it
        system = mask[:, :, None] * gram * mask[:, None, :] + torch.diag_embed(1 - mask)
        z = torch.linalg.solve(system, (mask * grad).unsqueeze(-1)).squeeze(-1)
        return z @ dictionary.T, None, None


class CentredCoder(nn.Module):
    """``x -> ReLU(D^T (x - m) - lam)`` (``exact=False``) or ``a*(x)`` (``exact=True``)."""

    def __init__(self, dictionary: torch.Tensor, mean: torch.Tensor, lam: float,
                 exact: bool) -> None:
        super().__init__()
        self.register_buffer("dictionary", dictionary.to(torch.float64))
        self.register_buffer("mean", mean.to(torch.float64).flatten())
        self.lam, self.exact = float(lam), exact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x.flatten(1).to(torch.float64) - self.mean
        if self.exact:
            return _ExactLasso.apply(centred, self.dictionary, self.lam)
        return torch.relu(centred @ self.dictionary - self.lam)


class _FrontEnd(nn.Module):
    def __init__(self, coder: CentredCoder, n_classes: int, seed: int) -> None:
        super().__init__()
        self.features = coder
        with seeded_global_rng(seed):
            self.head = nn.Linear(coder.dictionary.shape[1], n_classes).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _dictionary(signals: torch.Tensor, steps: int, seed: int) -> tuple[torch.Tensor, dict]:
    from ...dictlearn import learn_dictionary

    result = learn_dictionary(signals, ATOMS, DICTIONARY_LAMBDA, nonneg=True, n_steps=steps,
                              inference_method="homotopy", inference_iter=1000, seed=seed)
    curve = result.energy_history
    last, before = sum(curve[-50:]) / 50, sum(curve[-100:-50]) / 50
    change = abs(last - before) / before
    return result.dictionary, {"energy_curve": curve, "relative_change_last_50": change,
                               "converged": change <= 0.02, "steps": steps}


def _lca_iterations(signals: torch.Tensor, dictionary: torch.Tensor, lam: float,
                    exact: torch.Tensor) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        lca = sparse_code(signals, dictionary, lam, method="lca", nonneg=True, max_iter=20000,
                          tol=LCA_TOLERANCE, warn=False)
    return {"tolerance": LCA_TOLERANCE, "n_iter": int(lca.n_iter),
            "converged": bool(torch.as_tensor(lca.converged).all()),
            "max_distance_to_fixed_point": float((lca.codes - exact).abs().max()),
            "max_code": float(exact.abs().max())}


def check27(train: DatasetSplit, data: DatasetSplit, images: torch.Tensor,
            labels: torch.Tensor, n_minimal: int, seed: int) -> tuple[dict[str, Any], dict]:
    """One seed of check 27: the dictionary (learned on ``train``'s images, centred), both
    front ends with heads fitted on ``data``'s training split, their minimal targeted L2
    perturbations on up to ``n_minimal`` test images both classify correctly, and their
    accuracy drop under Gaussian noise sigma = 0.3 on ``images``."""
    signals = train.train_images.flatten(1).to(torch.float64)
    mean = signals.mean(0)
    dictionary, learning = _dictionary(signals - mean, DICTIONARY_STEPS, seed)
    projections = (data.train_images.flatten(1).to(torch.float64) - mean) @ dictionary
    lam = float(torch.quantile(projections.flatten(), LAMBDA_QUANTILE))
    fronts = {}
    for name, exact in (("relu_front_end", False), ("lca_front_end", True)):
        model = _FrontEnd(CentredCoder(dictionary, mean, lam, exact), data.n_classes, seed)
        fronts[name] = refit_head(model, data.train_images.to(torch.float64),
                                  data.train_labels, steps=600, learning_rate=0.1)
    both = torch.ones(len(data.test_labels), dtype=torch.bool)
    for model in fronts.values():
        with torch.no_grad():
            both &= model(data.test_images).argmax(1) == data.test_labels
    chosen = torch.nonzero(both).flatten()[:n_minimal]
    subset = data.test_images[chosen].to(torch.float64)
    subset_labels = data.test_labels[chosen]
    targets = random_targets(subset_labels, data.n_classes, seed=seed)
    noisy = corrupt(images, "gaussian_noise", NOISE_SEVERITY, seed=seed)
    with torch.no_grad():
        exact_subset = fronts["lca_front_end"].features(subset)
    out: dict[str, Any] = {
        "n_attacked": len(chosen), "lambda": lam, "lambda_rule": f"quantile {LAMBDA_QUANTILE}"
        " of D^T (x - m) on the training split", "n_atoms": ATOMS, "n_pixels": signals.shape[1],
        "dictionary_learning": learning, "sparse_range": list(SPARSE_RANGE),
        "lca": _lca_iterations(subset.flatten(1) - mean, dictionary, lam, exact_subset),
        "minimal_search": {"tolerance": MINIMAL_TOLERANCE, "pgd_steps": MINIMAL_STEPS,
                           "max_epsilon": MAX_EPSILON}}
    out["minimal_search"].update({
        "square_queries": SQUARE_QUERIES, "square_bisections": SQUARE_BISECTIONS,
        "unfooled_margin": UNFOOLED_MARGIN,
        "rule": "per image the smallest L2 norm over the attacks that reach the target "
                "(PGD-L2 bisection, targeted Square L-inf bisection); unfooled within "
                f"max_epsilon = {MAX_EPSILON:g}: inf"})
    for name, model in fronts.items():
        minimal = minimal_l2_perturbation(model, subset, subset_labels, targets=targets,
                                          max_epsilon=MAX_EPSILON, tolerance=MINIMAL_TOLERANCE,
                                          steps=MINIMAL_STEPS)
        square = square_minimal_l2(model, subset, subset_labels, targets, MAX_EPSILON, seed)
        combined = minimum_over_attacks({"pgd_l2": minimal.distance, "square": square})
        clean = accuracy(model, images, labels)
        with torch.no_grad():
            codes = model.features(data.test_images)
        median = _lower_median(combined)
        censored = not math.isfinite(median)  # over half not fooled at max_epsilon
        out[name] = {"median_minimal_targeted_l2": MAX_EPSILON if censored else median,
                     "median_censored_at_max_epsilon": censored,
                     "success_rate": _fooled(combined),
                     "success_rate_pgd_l2": minimal.success_rate,
                     "success_rate_square": _fooled(square),
                     "unfooled_fraction": 1.0 - _fooled(combined),
                     "median_minimal_targeted_l2_pgd_only": MAX_EPSILON
                     if not math.isfinite(minimal.median) else minimal.median,
                     "clean_accuracy": clean,
                     "noisy_accuracy_sigma_0.3": accuracy(model, noisy, labels),
                     "zero_fraction": float((codes == 0).double().mean())}
        out[name]["noise_drop"] = clean - out[name]["noisy_accuracy_sigma_0.3"]
    if len(chosen):
        report = gradient_masking_report(
            fronts["lca_front_end"], subset, subset_labels, MASKING_EPSILONS,
            steps=MASKING_STEPS, square_queries=MASKING_QUERIES, seed=seed)
        out["lca_front_end"]["gradient_masking"] = report.to_dict()
    return out, fronts


def _lower_median(distance: torch.Tensor) -> float:
    if not distance.numel():
        return math.inf
    return float(torch.quantile(distance.double(), 0.5, interpolation="lower"))


def _fooled(distance: torch.Tensor) -> float:
    return float(torch.isfinite(distance).double().mean()) if distance.numel() else 0.0


def minimum_over_attacks(distances: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per image, the smallest L2 distance over the attacks (``inf``: that attack did not reach
    the target within the search range; ``inf`` over all attacks: unfooled)."""
    if not distances:
        raise ValueError("distances must name at least one attack; got an empty mapping")
    stacked = torch.stack([d.to(torch.float64).flatten() for d in distances.values()])
    if torch.isnan(stacked).any():
        raise ValueError("distances must not contain NaN (use inf for an unfooled image)")
    return stacked.amin(0)


def square_minimal_l2(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      targets: torch.Tensor, max_epsilon: float, seed: int, *,
                      queries: int = SQUARE_QUERIES, bisections: int = SQUARE_BISECTIONS
                      ) -> torch.Tensor:
    """Gradient-free minimal targeted perturbation: the targeted Square Attack at L-inf radius
    ``r`` bisected over ``[0, max_epsilon / sqrt(d)]`` (first at the top, then ``bisections``
    halvings per image); per image the smallest L2 norm of a perturbation that reached the
    target, ``inf`` if none did.  Every candidate has L2 norm <= ``r sqrt(d) <= max_epsilon``."""
    n = images.shape[0]
    distance = torch.full((n,), math.inf, dtype=torch.float64)
    if not n:
        return distance
    top = max_epsilon / math.sqrt(images[0].numel())
    low = torch.zeros(n, dtype=torch.float64)
    high = torch.full((n,), top, dtype=torch.float64)
    active = torch.arange(n)
    for step in range(bisections + 1):
        radius = high if step == 0 else (low + high) / 2
        fooled = torch.zeros(n, dtype=torch.bool)
        # one radius per call: group the active images by their radius
        for value in torch.unique(radius[active]).tolist():
            index = active[radius[active] == value]
            result = square_attack_linf(model, images[index], labels[index], value,
                                        queries=queries, seed=seed + 7919 * step,
                                        targets=targets[index])
            norms = torch.linalg.vector_norm(
                (result.adversarial.to(torch.float64) - images[index].to(torch.float64))
                .flatten(1), dim=1)
            hit = result.fooled
            distance[index[hit]] = torch.minimum(distance[index[hit]], norms[hit])
            fooled[index[hit]] = True
        if step == 0:
            active = active[fooled[active]]
            continue
        middle = (low + high) / 2
        high = torch.where(fooled, middle, high)
        low = torch.where(fooled | ~torch.isin(torch.arange(n), active), low, middle)
        if not active.numel():
            break
    return distance


def c9_rule() -> str:
    """C9's attack rule, appended to the claim's rule (module docstring)."""
    return ("; an image's minimal perturbation is the smallest L2 norm over the attacks that "
            "reach its target (PGD-L2 bisection and the gradient-free targeted Square Attack "
            f"bisection, both within max_epsilon = {MAX_EPSILON:g}), inf where none does; "
            "inconclusive whenever the front ends' fractions of images no attack fools differ "
            f"by more than {UNFOOLED_MARGIN:g} on a seed (censored medians not comparable)")


def c9_measurements(front: list[dict[str, Any]]) -> dict[str, Any]:
    """C9's per-attack success rates, unfooled fractions and the LCA front end's masking
    checklist (passed checks and reasons per seed)."""
    from .._paper1_common import mean_sd

    out: dict[str, Any] = {}
    for name, short in (("lca_front_end", "lca"), ("relu_front_end", "relu")):
        for key in ("success_rate", "success_rate_pgd_l2", "success_rate_square",
                    "unfooled_fraction", "median_minimal_targeted_l2_pgd_only"):
            out[f"{short}_{key}"] = mean_sd([f[name][key] for f in front])
    masking = [f["lca_front_end"].get("gradient_masking") for f in front]
    out["lca_masking_checklist_passed"] = [m["passed"] if m else None for m in masking]
    out["lca_masking_reasons"] = [m["reasons"] if m else [] for m in masking]
    return out


def unfooled_problem(front: list[dict[str, Any]]) -> str:
    """Why C9 cannot be judged ("" when it can): on some seed the fractions of images no attack
    fooled within the search range differ between the front ends by more than
    :data:`UNFOOLED_MARGIN` (the medians would compare censored with measured distances)."""
    problems = []
    for seed, f in enumerate(front):
        lca, relu = (f[name]["unfooled_fraction"] for name in ("lca_front_end",
                                                               "relu_front_end"))
        if abs(lca - relu) > UNFOOLED_MARGIN:
            problems.append(f"seed {seed}: unfooled fraction LCA {lca:.3f} vs ReLU {relu:.3f} "
                            f"(differ by more than {UNFOOLED_MARGIN})")
    return "; ".join(problems)


def front_end_problem(front: list[dict[str, Any]]) -> str:
    """Why check 27's set-up is out of its regime on some seed ("" when it is not): a zero
    fraction outside :data:`SPARSE_RANGE`, a dictionary whose learning did not converge, or
    LCA not reaching its tolerance."""
    low, high = front[0]["sparse_range"]
    problems = []
    for seed, f in enumerate(front):
        for name in ("relu_front_end", "lca_front_end"):
            zero = f[name]["zero_fraction"]
            if not low <= zero <= high:
                problems.append(f"seed {seed}: {name} zero fraction {zero:.3f} outside "
                                f"[{low}, {high}] (not the sparse regime the claim is about)")
        if not f["dictionary_learning"]["converged"]:
            problems.append(f"seed {seed}: dictionary learning not converged (energy changed "
                            f"{f['dictionary_learning']['relative_change_last_50']:.1%} over "
                            "the last 50 steps)")
        if not f["lca"]["converged"]:
            problems.append(f"seed {seed}: LCA did not reach tolerance {f['lca']['tolerance']}")
    return "; ".join(problems)
