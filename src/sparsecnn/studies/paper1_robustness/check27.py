"""Check 27 in its regime (docs/theory.md check 27; C9 Paiton et al. 2020, C10 Teti et al. 2022):
a ReLU front end ``ReLU(D^T (x - m) - lam)`` against an LCA front end, the fixed point

    a*(x) = argmin_{a >= 0} 1/2 ||(x - m) - D a||^2 + lam sum a

that LCA converges to, on one learned, overcomplete dictionary ``D``; ``m`` is the training
mean image (centred inputs: on raw digits every ``D^T x`` is positive and the ReLU front end is
a linear map).

Declared set-up (fixed here, not tuned on the outcome):

* the coded signal: the image itself up to :data:`MAX_CODED_PIXELS` = 16x16 pixels per
  channel; a larger image is first average-pooled by the smallest integer factor that brings
  it within that size (28x28 -> 2x2 pooling -> 14x14), a fixed layer both front ends share,
  so the attacks still perturb the full-size image.  Why: the exact front end's cost grows
  with the cube of the number of atoms (its backward solves on the active set);
* ``D``: :data:`OVERCOMPLETENESS` = 2 atoms per coded pixel (128 for 8x8 digits, 392 for
  pooled 28x28 images), online dictionary learning on the centred training images with
  ``lam_dl = 0.1`` and exact (homotopy) codes for :data:`DICTIONARY_STEPS` minibatches;
  converged when the mean energy of the last 50 minibatches is within 2 % of the 50 before
  (the curve is reported);
* ``lam``: the :data:`LAMBDA_QUANTILE` quantile of the entries of ``D^T (x - m)`` over the
  training split, so the ReLU front end has zero fraction 0.7 on the training split;
* both front ends' zero fractions on the test images must lie in the sparse range
  ``[`` :data:`MIN_ZERO_FRACTION` ``, 1 - ``:data:`MIN_ACTIVE_ATOMS` ``/ atoms]``: at least half
  the codes zero (sparse) and on average at least 5 active atoms (not a dead front end).  The
  upper bound was first declared as 0.95 for the digits' 128 atoms (6.4 active atoms); stated
  as a count it carries over to any number of atoms (0.961 at 128, 0.987 at 392);
* the minimal-perturbation search range is :data:`MAX_EPSILON_PER_PIXEL` ``* sqrt(d)`` for
  ``d`` input pixels (the same root-mean-square change per pixel at any image size: 6.0 on
  8x8 digits, 21.0 on 28x28 images);
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

__all__ = [
    "ATOMS",
    "DICTIONARY_STEPS",
    "LAMBDA_QUANTILE",
    "MAX_CODED_PIXELS",
    "MAX_EPSILON_PER_PIXEL",
    "MIN_ACTIVE_ATOMS",
    "MIN_ZERO_FRACTION",
    "OVERCOMPLETENESS",
    "UNFOOLED_MARGIN",
    "CentredCoder",
    "check27",
    "front_end_problem",
    "max_epsilon",
    "minimum_over_attacks",
    "pooled",
    "pooling_factor",
    "sparse_range",
    "square_minimal_l2",
    "unfooled_problem",
]

OVERCOMPLETENESS = 2  # atoms per pixel
ATOMS = OVERCOMPLETENESS * 64  # on 8x8 digits
MAX_CODED_PIXELS = 16 * 16  # per channel; larger images are average-pooled first
DICTIONARY_LAMBDA = 0.1
DICTIONARY_STEPS = 150
LAMBDA_QUANTILE = 0.7
MIN_ZERO_FRACTION = 0.5
MIN_ACTIVE_ATOMS = 5
LCA_TOLERANCE = 1e-4
MINIMAL_TOLERANCE = 0.01  # bisection stops when hi - lo <= 0.01 (L2, pixels in [0, 1])
MINIMAL_STEPS = 20  # PGD-L2 steps per bisection radius
MAX_EPSILON_PER_PIXEL = 0.75  # search range of the minimal targeted L2 perturbation per pixel
SQUARE_QUERIES = 300  # targeted Square Attack queries per image and radius
SQUARE_BISECTIONS = 6  # halvings of the L-inf radius range of the gradient-free search
MASKING_EPSILONS = (0.05, 0.1, 0.2)  # L-inf radii of the masking checklist on the LCA front end
MASKING_STEPS = 20
MASKING_QUERIES = 200
UNFOOLED_MARGIN = 0.1  # C9 inconclusive above this gap in unfooled fractions
_QUANTILE_SAMPLE = 1 << 22


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
        gram = dictionary.T @ dictionary
        z = torch.zeros_like(grad)
        # per image, z_S = G_SS^{-1} g_S on its active set S and z = 0 off it (a solve of
        # |S| unknowns: the full-size masked system would cost atoms^3 per image)
        for index in range(codes.shape[0]):
            active = torch.nonzero(codes[index] > 0).flatten()
            if active.numel():
                z[index, active] = torch.linalg.solve(gram[active][:, active],
                                                      grad[index, active])
        return z @ dictionary.T, None, None


def sparse_range(atoms: int) -> tuple[float, float]:
    """The declared regime of a front end's zero fraction with ``atoms`` atoms (module
    docstring): ``(MIN_ZERO_FRACTION, 1 - MIN_ACTIVE_ATOMS / atoms)``."""
    return MIN_ZERO_FRACTION, 1.0 - MIN_ACTIVE_ATOMS / atoms


def max_epsilon(pixels: int) -> float:
    """The search range of the minimal targeted L2 perturbation of an image with ``pixels``
    input values: :data:`MAX_EPSILON_PER_PIXEL` ``* sqrt(pixels)``."""
    return MAX_EPSILON_PER_PIXEL * math.sqrt(pixels)


def pooling_factor(height: int, width: int) -> int:
    """The smallest integer ``f >= 1`` with ``(height // f) * (width // f) <=``
    :data:`MAX_CODED_PIXELS` (``f x f`` average pooling drops partial windows: 28x28 -> 2,
    8x8 -> 1)."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive; got {height}x{width}")
    factor = 1
    while (height // factor) * (width // factor) > MAX_CODED_PIXELS:
        factor += 1
    return factor


def pooled(x: torch.Tensor, pool: int) -> torch.Tensor:
    """``P(x)``: ``pool`` x ``pool`` average pooling of images ``x`` (``(N, C, H, W)``; the
    identity at ``pool = 1``), flattened to ``(N, d)`` in float64."""
    signal = x.to(torch.float64)
    if pool > 1:
        signal = nn.functional.avg_pool2d(signal, pool)
    return signal.flatten(1)


class CentredCoder(nn.Module):
    """``x -> ReLU(D^T (P(x) - m) - lam)`` (``exact=False``) or ``a*(P(x))`` (``exact=True``);
    ``P`` is ``pool`` x ``pool`` average pooling (the identity at ``pool = 1``)."""

    def __init__(self, dictionary: torch.Tensor, mean: torch.Tensor, lam: float,
                 exact: bool, pool: int = 1) -> None:
        super().__init__()
        self.register_buffer("dictionary", dictionary.to(torch.float64))
        self.register_buffer("mean", mean.to(torch.float64).flatten())
        self.lam, self.exact, self.pool = float(lam), exact, int(pool)

    def centred(self, x: torch.Tensor) -> torch.Tensor:
        """``P(x) - m``, flattened, in float64: the signal the dictionary codes."""
        return pooled(x, self.pool) - self.mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = self.centred(x)
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


def _dictionary(signals: torch.Tensor, atoms: int, steps: int, seed: int
                ) -> tuple[torch.Tensor, dict]:
    from ...dictlearn import learn_dictionary

    if steps < 100:
        raise ValueError(f"dictionary steps must be >= 100 (the convergence rule compares the "
                         f"last two blocks of 50 minibatches); got {steps}")
    result = learn_dictionary(signals, atoms, DICTIONARY_LAMBDA, nonneg=True, n_steps=steps,
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
            labels: torch.Tensor, n_minimal: int, seed: int, *,
            dictionary_steps: int = DICTIONARY_STEPS) -> tuple[dict[str, Any], dict]:
    """One seed of check 27: the dictionary (learned on ``train``'s images, centred), both
    front ends with heads fitted on ``data``'s training split, their minimal targeted L2
    perturbations on up to ``n_minimal`` test images both classify correctly, and their
    accuracy drop under Gaussian noise sigma = 0.3 on ``images``."""
    pool = pooling_factor(*train.image_shape[1:])
    signals = pooled(train.train_images, pool)
    mean = signals.mean(0)
    atoms = OVERCOMPLETENESS * signals.shape[1]
    dictionary, learning = _dictionary(signals - mean, atoms, dictionary_steps, seed)
    coder = CentredCoder(dictionary, mean, 0.0, False, pool)
    projections = (coder.centred(data.train_images) @ dictionary).flatten()
    if projections.numel() > _QUANTILE_SAMPLE:
        # torch.quantile takes at most 2^24 values: a seeded uniform sample estimates it
        chosen = torch.randperm(projections.numel(), generator=torch.Generator().manual_seed(
            seed))[:_QUANTILE_SAMPLE]
        projections = projections[chosen]
    lam = float(torch.quantile(projections, LAMBDA_QUANTILE))
    fronts = {}
    for name, exact in (("relu_front_end", False), ("lca_front_end", True)):
        model = _FrontEnd(CentredCoder(dictionary, mean, lam, exact, pool), data.n_classes,
                          seed)
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
    search = max_epsilon(images[0].numel())
    with torch.no_grad():
        exact_subset = fronts["lca_front_end"].features(subset)
    out: dict[str, Any] = {
        "n_attacked": len(chosen), "lambda": lam, "lambda_rule": f"quantile {LAMBDA_QUANTILE}"
        " of D^T (x - m) on the training split", "n_atoms": atoms, "n_pixels": signals.shape[1],
        "pooling": pool,
        "dictionary_learning": learning, "sparse_range": list(sparse_range(atoms)),
        "lca": _lca_iterations(coder.centred(subset), dictionary, lam, exact_subset),
        "minimal_search": {"tolerance": MINIMAL_TOLERANCE, "pgd_steps": MINIMAL_STEPS,
                           "max_epsilon": search}}
    out["minimal_search"].update({
        "square_queries": SQUARE_QUERIES, "square_bisections": SQUARE_BISECTIONS,
        "unfooled_margin": UNFOOLED_MARGIN,
        "rule": "per image the smallest L2 norm over the attacks that reach the target "
                "(PGD-L2 bisection, targeted Square L-inf bisection); unfooled within "
                f"max_epsilon = {search:g}: inf"})
    for name, model in fronts.items():
        minimal = minimal_l2_perturbation(model, subset, subset_labels, targets=targets,
                                          max_epsilon=search, tolerance=MINIMAL_TOLERANCE,
                                          steps=MINIMAL_STEPS)
        square = square_minimal_l2(model, subset, subset_labels, targets, search, seed)
        combined = minimum_over_attacks({"pgd_l2": minimal.distance, "square": square})
        clean = accuracy(model, images, labels)
        with torch.no_grad():
            codes = model.features(data.test_images)
        median = _lower_median(combined)
        censored = not math.isfinite(median)  # over half not fooled at max_epsilon
        out[name] = {"median_minimal_targeted_l2": search if censored else median,
                     "median_censored_at_max_epsilon": censored,
                     "success_rate": _fooled(combined),
                     "success_rate_pgd_l2": minimal.success_rate,
                     "success_rate_square": _fooled(square),
                     "unfooled_fraction": 1.0 - _fooled(combined),
                     "median_minimal_targeted_l2_pgd_only": search
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
            f"bisection, both within max_epsilon = {MAX_EPSILON_PER_PIXEL:g} sqrt(pixels): 6 on "
            "8x8 digits), inf where none does; "
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
    fraction outside :func:`sparse_range`, a dictionary whose learning did not converge, or
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
