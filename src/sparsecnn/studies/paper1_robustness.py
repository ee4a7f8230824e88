"""Robustness and anomaly identification (paper 1's "more robust" forward transforms, A.8;
THEORY.md C9, C10, check 27; paper 2's constructed network, B.3).

On scikit-learn's digits, per seed (THEORY.md Part C protocol: 50/50 stratified split):

* a plain CNN (conv 3x3 + ReLU, two layers, linear head: layered thresholding + logistic
  regression, A.6-A.7);
* the same CNN with its forward pass swapped by ``from_cnn(model, n_iter=k)`` (k-step ISTA on
  every layer's non-negative sparse-coding energy, A.8.2), k in {0, 2, 5, 10}, its linear head
  refit on the k-step codes so that the clean-accuracy budget is comparable (the head alone;
  the dictionaries and thresholds are the CNN's);
* the same architecture trained with proper priors (every hidden bias projected onto b <= 0
  after every step, A.8.1);
* a ReLU front end ``ReLU(D^T x - lam)`` and an LCA front end (``n_iter`` LCA steps, the same
  dictionary ``D`` and threshold ``lam``), each with its own logistic-regression head
  (THEORY.md check 27).  ``D`` is learned by online sparse coding on the training digits of the
  in-distribution classes of the anomaly study (unsupervised);

each evaluated under the five corruptions at severities 0..5, FGSM / PGD (L-inf, L2) and, for
the two front ends, the median minimal *targeted* L2 perturbation (bisection over PGD-L2,
seeded random targets, on test images both front ends classify correctly).

On the ``"default"`` feature world (THEORY.md B.3's 28x28 example): the constructed network's
certified L-inf radius beside its accuracy under the structured worst-case perturbation, random
sign noise and PGD, and the smallest structured perturbation that flips an image.
Beside it, on the same world per seed, the B.3 architecture trained by Adam
(:mod:`._feature_world_models`): plain, with its forward pass swapped by ``from_cnn`` (k-step
ISTA on the convertible layers, head refit for k > 0) and trained with proper priors, each
under the five corruptions and PGD L-inf; the constructed network is evaluated on the same
images.  Their claims use the digits rules (paired seed differences, same-clean-accuracy guard).

Anomaly identification: a CNN trained on 9 digit classes; scores from the per-layer
sparse-coding reconstruction error and energy of the CNN and of the LCA front end, against the
max-softmax baseline; AUROC and FPR at 95 % TPR against feature-world images, noise images,
inverted digits and the held-out class.

Verdicts are computed from paired differences over seeds by the rule in each claim (mean
difference against its standard deviation across seeds, :func:`verdict_with_spread`; with one
seed the standard deviation is 0 and the sign of the difference decides).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..anomaly import (
    anomaly_scores,
    auroc,
    detection_table,
    out_of_distribution_sets,
    roc_curve,
    sparse_coding_scores,
)
from ..data import DatasetSplit, load_digits_split
from ..nn import SparseLinear, UnmappedLayerWarning, from_cnn
from ..report.study import (
    Claim,
    Figure,
    Study,
    StudyContext,
    StudyOutput,
    verdict,
    verdict_with_spread,
)
from ..robustness import (
    CORRUPTIONS,
    accuracy,
    attack_curve,
    corrupt,
    corruption_curves,
    minimal_l2_perturbation,
    pgd,
    random_targets,
)
from ..training import ConvClassifier, hidden_bias_parameters

__all__ = [
    "FULL",
    "QUICK",
    "STUDY",
    "Budget",
    "plot_attack_curves",
    "plot_corruption_curves",
    "plot_roc_curves",
    "refit_head",
    "small_cnn",
    "train_classifier",
]

EPSILONS_LINF = (0.0, 0.05, 0.1, 0.2)
EPSILONS_L2 = (0.0, 0.5, 1.0, 2.0)
NOISE_SEVERITY = 4  # gaussian_noise severity 4 is sigma = 0.3 (THEORY.md check 27)
FRONT_END_ATOMS = 64
FRONT_END_LAMBDA = 0.5
WORLD_LEARNING_RATE = 1e-2  # Adam on the feature world (B.3 architecture)
WORLD_BATCH_SIZE = 16
CLEAN_BUDGET = 0.05  # variants more than 5 pts below the baseline's clean accuracy: inconclusive


@dataclass(frozen=True)
class Budget:
    """How much work one mode does."""

    seeds: int
    epochs: int
    n_eval: int
    n_minimal: int
    pgd_steps: int
    lca_steps: int
    dictionary_steps: int
    n_ood: int
    n_feature_world: int
    tolerance: float
    swap_steps: tuple[int, ...] = (0, 2, 5, 10)
    world_train: int = 400
    world_epochs: int = 10
    world_eval: int = 60


QUICK = Budget(seeds=1, epochs=6, n_eval=100, n_minimal=30, pgd_steps=3, lca_steps=30,
               dictionary_steps=15, n_ood=100, n_feature_world=80, tolerance=0.05,
               swap_steps=(0, 10), world_train=300, world_epochs=8, world_eval=40)
FULL = Budget(seeds=5, epochs=12, n_eval=250, n_minimal=50, pgd_steps=6, lca_steps=30,
              dictionary_steps=30, n_ood=250, n_feature_world=200, tolerance=0.03)


# -- training -----------------------------------------------------------------------------------

def train_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                     epochs: int, seed: int, proper_prior: bool = False,
                     learning_rate: float = 1e-2, batch_size: int = 128) -> nn.Module:
    """Minimise the cross-entropy ``-log p(y | Gamma_L(x))`` (THEORY.md A.7) with Adam on
    seeded minibatches; ``proper_prior`` projects every hidden bias onto ``b <= 0`` after every
    step (A.8.1).  Returns ``model`` in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    biases = hidden_bias_parameters(model) if proper_prior else []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(images.shape[0], generator=generator)
        for start in range(0, images.shape[0], batch_size):
            index = order[start:start + batch_size]
            loss = F.cross_entropy(model(images[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                for bias in biases:
                    bias.clamp_(max=0.0)
    return model.eval()


def refit_head(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
               steps: int = 100, learning_rate: float = 0.02) -> nn.Module:
    """Refit ``model.head`` (logistic regression, A.7) on the codes ``model.features(x)`` with
    the features frozen (full-batch Adam from the current head)."""
    with torch.no_grad():
        codes = model.features(images).flatten(1)
    head = model.head
    optimizer = torch.optim.Adam(head.parameters(), lr=learning_rate)
    for _ in range(steps):
        loss = F.cross_entropy(head(codes), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


def small_cnn(n_classes: int, seed: int) -> ConvClassifier:
    """The study's CNN: conv 3x3 (8 channels) -> conv 3x3 stride 2 (16) -> linear head, on
    8x8 digits, initialised from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ConvClassifier(1, (8, 8), (8, 16), (1, 2), n_classes)


def _swap(model: nn.Module, n_iter: int) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnmappedLayerWarning)
        return from_cnn(model, n_iter=n_iter, method="ista").eval()


class _FrontEnd(nn.Module):
    """``x -> head(code(x))`` with a :class:`SparseLinear` coding layer on the flattened image."""

    def __init__(self, coder: SparseLinear, n_classes: int, seed: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), coder)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = nn.Linear(coder.out_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _front_ends(dictionary: torch.Tensor, lam: float, lca_steps: int, data: DatasetSplit,
                seed: int) -> dict[str, _FrontEnd]:
    models = {}
    for name, n_iter in (("relu_front_end", 0), ("lca_front_end", lca_steps)):
        coder = SparseLinear(dictionary.shape[0], dictionary.shape[1], n_iter=n_iter,
                             method="lca")
        with torch.no_grad():
            coder.weight.copy_(dictionary.T.to(coder.weight.dtype))
            coder.bias.fill_(-lam)
        coder.requires_grad_(False)
        model = _FrontEnd(coder, data.n_classes, seed)
        models[name] = refit_head(model, data.train_images, data.train_labels, steps=600,
                                  learning_rate=0.1)
    return models


# -- statistics ---------------------------------------------------------------------------------

def _mean_sd(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    sd = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "sd": sd, "n_seeds": len(array)}


def _paired(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    return _mean_sd([x - y for x, y in zip(a, b, strict=True)])


def _curve_stats(curves: Sequence[Sequence[float]]) -> dict[str, list[float]]:
    array = np.asarray(curves, dtype=np.float64)
    sd = array.std(axis=0, ddof=1) if len(array) > 1 else np.zeros(array.shape[1])
    return {"mean": array.mean(axis=0).tolist(), "sd": sd.tolist()}


# -- one seed -----------------------------------------------------------------------------------

def _evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, budget: Budget,
              seed: int) -> dict[str, Any]:
    curves = corruption_curves(model, images, labels, seed=seed)
    options = {"steps": budget.pgd_steps}
    mean_corrupted = float(np.mean([curves[name][1:] for name in CORRUPTIONS]))
    return {
        "clean_accuracy": curves[CORRUPTIONS[0]][0],
        "corruptions": curves,
        "mean_corruption_accuracy": mean_corrupted,
        "attacks": {
            "fgsm": attack_curve(model, images, labels, "fgsm", EPSILONS_LINF),
            "pgd_linf": attack_curve(model, images, labels, "pgd_linf", EPSILONS_LINF,
                                     **options),
            "pgd_l2": attack_curve(model, images, labels, "pgd_l2", EPSILONS_L2, **options),
        },
    }


def _nine_classes(data: DatasetSplit, held_out: int) -> tuple[DatasetSplit, torch.Tensor]:
    def keep(labels: torch.Tensor) -> torch.Tensor:
        return labels != held_out

    def remap(labels: torch.Tensor) -> torch.Tensor:
        return labels - (labels > held_out).long()

    train, test = keep(data.train_labels), keep(data.test_labels)
    split = DatasetSplit(f"digits-without-{held_out}", data.train_images[train],
                         remap(data.train_labels[train]), data.test_images[test],
                         remap(data.test_labels[test]), data.n_classes - 1)
    return split, data.test_images[~test]


def _feature_world(seed: int, budget: Budget) -> dict[str, Any]:
    from ..features import certify, construct, preset, worst_case_perturbation

    world = preset("default", seed=seed)
    network = construct(world)
    sample = world.sample(budget.n_feature_world, seed=seed + 1)
    certificate = certify(network, world, sample)
    radius = certificate.radius
    images = sample.images.to(torch.float64)
    labels = sample.labels

    def correct(inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return network(inputs).argmax(1) == labels

    generator = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, images.shape, generator=generator).to(images.dtype) * 2 - 1
    multiples = (0.5, 1.0, 1.5, 2.0, 3.0, 5.0)
    structured, random_sign, projected = [], [], []
    for multiple in multiples:
        rho = multiple * radius
        structured.append(float(correct(
            images + worst_case_perturbation(world, images, sample.truth, rho)).double().mean()))
        random_sign.append(float(correct(images + rho * signs).double().mean()))
        if multiple in (1.0, 2.0, 5.0):
            attacked = pgd(network, images, labels, rho, norm="linf", steps=3, bounds=None)
            projected.append(float(correct(attacked).double().mean()))
    # smallest structured perturbation that flips each image: bisection on rho
    unit = worst_case_perturbation(world, images, sample.truth, 1.0)
    low = torch.zeros(len(labels), dtype=torch.float64)
    high = torch.full((len(labels),), 1.0, dtype=torch.float64)
    flipped = ~correct(images + high.view(-1, 1, 1, 1) * unit)
    for _ in range(24):
        middle = (low + high) / 2
        fooled = ~correct(images + middle.view(-1, 1, 1, 1) * unit)
        high = torch.where(fooled, middle, high)
        low = torch.where(fooled, low, middle)
    flip = high[flipped]
    return {"certified_radius": radius, "error_rate": certificate.error_rate,
            "min_margin": certificate.min_margin, "well_posed": certificate.well_posed,
            "multiples_of_radius": list(multiples),
            "accuracy_structured": structured, "accuracy_random_sign": random_sign,
            "pgd_multiples_of_radius": [1.0, 2.0, 5.0], "accuracy_pgd_linf": projected,
            "structured_flip_radius_min": float(flip.min()) if flip.numel() else None,
            "structured_flip_radius_median": float(flip.median()) if flip.numel() else None,
            "fraction_flipped_at_rho_1": float(flipped.double().mean()),
            "n_images": len(labels)}


def _evaluate_world(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    budget: Budget, seed: int) -> dict[str, Any]:
    curves = corruption_curves(model, images, labels, seed=seed)
    return {"clean_accuracy": curves[CORRUPTIONS[0]][0], "corruptions": curves,
            "mean_corruption_accuracy": float(np.mean([curves[name][1:]
                                                       for name in CORRUPTIONS])),
            "attacks": {"pgd_linf": attack_curve(model, images, labels, "pgd_linf",
                                                 EPSILONS_LINF, steps=budget.pgd_steps)}}


def _feature_world_cnns(seed: int, budget: Budget) -> dict[str, Any]:
    """On the seed's ``"default"`` feature world: the B.3 architecture trained by Adam (plain
    and with proper priors), and the plain one with its forward pass swapped by
    ``from_cnn(n_iter=k)`` (head refit for k > 0), each under corruptions and PGD L-inf."""
    from ..features import construct, preset
    from ._feature_world_models import feature_world_cnn, swap_forward

    world = preset("default", seed=seed)
    train = world.sample(budget.world_train, seed=seed + 2)
    test = world.sample(budget.world_eval, seed=seed + 3)
    models: dict[str, Any] = {}
    plain = train_classifier(feature_world_cnn(world, seed), train.images, train.labels,
                             epochs=budget.world_epochs, seed=seed, batch_size=WORLD_BATCH_SIZE,
                             learning_rate=WORLD_LEARNING_RATE)
    for k in budget.swap_steps:
        swapped = swap_forward(plain, k)
        without_refit = accuracy(swapped, test.images, test.labels)
        if k > 0:
            refit_head(swapped, train.images, train.labels)
        evaluation = _evaluate_world(swapped, test.images, test.labels, budget, seed)
        evaluation["clean_accuracy_without_refit"] = without_refit
        models[f"cnn_k{k}"] = evaluation
    proper = train_classifier(feature_world_cnn(world, seed), train.images, train.labels,
                              epochs=budget.world_epochs, seed=seed, batch_size=WORLD_BATCH_SIZE,
                              learning_rate=WORLD_LEARNING_RATE, proper_prior=True)
    evaluation = _evaluate_world(proper, test.images, test.labels, budget, seed)
    evaluation["max_hidden_bias"] = max(float(b.detach().max())
                                        for b in hidden_bias_parameters(proper))
    models["cnn_proper_prior"] = evaluation
    models["constructed"] = _evaluate_world(construct(world), test.images, test.labels,
                                            budget, seed)
    return models


def _one_seed(seed: int, budget: Budget, progress: Callable[..., Any]) -> dict[str, Any]:
    from ..dictlearn import learn_dictionary

    data = load_digits_split(seed=seed, dtype=torch.float32)
    images, labels = data.test_images[:budget.n_eval], data.test_labels[:budget.n_eval]
    held_out = 9 - seed % 10
    nine, held_images = _nine_classes(data, held_out)
    result: dict[str, Any] = {"seed": seed, "held_out_class": held_out, "models": {}}
    steps = progress(["train", "swap", "proper", "front", "world", "world_cnn", "anomaly"],
                     desc=f"robustness seed {seed}", leave=False)
    for step in steps:
        if step == "train":
            plain = train_classifier(small_cnn(10, seed), data.train_images,
                                     data.train_labels, epochs=budget.epochs, seed=seed)
        elif step == "swap":
            for k in budget.swap_steps:
                swapped = _swap(plain, k)
                without_refit = accuracy(swapped, images, labels)
                if k > 0:
                    refit_head(swapped, data.train_images, data.train_labels)
                evaluation = _evaluate(swapped, images, labels, budget, seed)
                evaluation["clean_accuracy_without_refit"] = without_refit
                result["models"][f"cnn_k{k}"] = evaluation
        elif step == "proper":
            proper = train_classifier(small_cnn(10, seed), data.train_images,
                                      data.train_labels, epochs=budget.epochs, seed=seed,
                                      proper_prior=True)
            evaluation = _evaluate(proper, images, labels, budget, seed)
            evaluation["max_hidden_bias"] = max(float(b.detach().max())
                                                for b in hidden_bias_parameters(proper))
            result["models"]["cnn_proper_prior"] = evaluation
        elif step == "front":
            signals = nine.train_images.flatten(1)
            dictionary = learn_dictionary(signals, FRONT_END_ATOMS, FRONT_END_LAMBDA,
                                          nonneg=True, n_steps=budget.dictionary_steps,
                                          inference_iter=50, seed=seed).dictionary
            fronts = _front_ends(dictionary, FRONT_END_LAMBDA, budget.lca_steps, data, seed)
            result["front_end"] = _check27(fronts, data, images, labels, budget, seed)
            for name, model in fronts.items():
                result["models"][name] = _evaluate(model, images, labels, budget, seed)
        elif step == "world":
            result["feature_world"] = _feature_world(seed, budget)
        elif step == "world_cnn":
            result["feature_world"]["models"] = _feature_world_cnns(seed, budget)
        else:
            result["anomaly"] = _anomaly(nine, held_images, fronts["lca_front_end"], budget,
                                         seed)
    return result


def _check27(fronts: dict[str, nn.Module], data: DatasetSplit, images: torch.Tensor,
             labels: torch.Tensor, budget: Budget, seed: int) -> dict[str, Any]:
    both = torch.ones(len(data.test_labels), dtype=torch.bool)
    for model in fronts.values():
        with torch.no_grad():
            both &= model(data.test_images).argmax(1) == data.test_labels
    chosen = torch.nonzero(both).flatten()[:budget.n_minimal]
    subset, subset_labels = data.test_images[chosen], data.test_labels[chosen]
    targets = random_targets(subset_labels, data.n_classes, seed=seed)
    noisy = corrupt(images, "gaussian_noise", NOISE_SEVERITY, seed=seed)
    out: dict[str, Any] = {"n_attacked": len(chosen), "lambda": FRONT_END_LAMBDA,
                           "n_atoms": FRONT_END_ATOMS, "lca_steps": budget.lca_steps}
    for name, model in fronts.items():
        minimal = minimal_l2_perturbation(model, subset, subset_labels, targets=targets,
                                          max_epsilon=6.0, tolerance=budget.tolerance,
                                          steps=budget.pgd_steps * 2)
        clean = accuracy(model, images, labels)
        with torch.no_grad():
            codes = model.features(data.test_images)
        censored = not math.isfinite(minimal.median)  # over half not fooled at max_epsilon
        out[name] = {"median_minimal_targeted_l2": minimal.max_epsilon if censored
                     else minimal.median, "median_censored_at_max_epsilon": censored,
                     "success_rate": minimal.success_rate, "clean_accuracy": clean,
                     "noisy_accuracy_sigma_0.3": accuracy(model, noisy, labels),
                     "zero_fraction": float((codes == 0).double().mean())}
        out[name]["noise_drop"] = clean - out[name]["noisy_accuracy_sigma_0.3"]
    return out


def _anomaly(nine: DatasetSplit, held_images: torch.Tensor, lca_front: nn.Module,
             budget: Budget, seed: int) -> dict[str, Any]:
    model = train_classifier(small_cnn(nine.n_classes, seed), nine.train_images,
                             nine.train_labels, epochs=budget.epochs, seed=seed)
    inside = nine.test_images[:budget.n_ood]
    sets = out_of_distribution_sets(inside, n=budget.n_ood, seed=seed, held_out=held_images)
    coder = nn.Sequential(*lca_front.features)

    def scores(images: torch.Tensor) -> dict[str, torch.Tensor]:
        values = {f"cnn.{k}": v for k, v in anomaly_scores(model, images).items()}
        values["max_softmax"] = values.pop("cnn.max_softmax")
        values.update({f"lca_dictionary.{k.split('.', 1)[1]}": v
                       for k, v in sparse_coding_scores(coder, images).items()})
        return values

    in_scores = scores(inside)
    out_scores = {name: scores(images) for name, images in sets.items()}
    relative = {name: float(values.median()) for name, values in in_scores.items()
                if name.endswith("relative_reconstruction_error")}
    return {"clean_accuracy": accuracy(model, nine.test_images, nine.test_labels),
            "in_distribution_median_relative_error": relative,
            "table": detection_table(in_scores, out_scores),
            "in_scores": {k: v.tolist() for k, v in in_scores.items()},
            "out_scores": {s: {k: v.tolist() for k, v in d.items()}
                           for s, d in out_scores.items()}}


# -- claims -------------------------------------------------------------------------------------

def _spread_claim(claim_id: str, paper: int, statement: str, differences: Sequence[float],
                  what: str, measured: dict[str, Any], *, units: dict[str, str] | None = None,
                  budget_ok: bool | None = None) -> Claim:
    """A claim "difference >= 0" decided by :func:`verdict_with_spread`; with ``budget_ok``
    given, also inconclusive when the compared models' clean accuracies are not within
    :data:`CLEAN_BUDGET` of each other."""
    stats = _mean_sd(differences)
    measured = {**measured, "difference": stats}
    rule = (f"difference = {what}, per seed; holds if its mean >= its sd across seeds, does "
            "not hold if mean <= -sd, inconclusive otherwise (one seed: sd = 0)")
    result = verdict_with_spread(stats["mean"], stats["sd"])
    if budget_ok is not None:
        measured["same_clean_accuracy_budget"] = bool(budget_ok)
        rule += (f"; inconclusive whenever the compared models' mean clean accuracies differ by "
                 f"more than {CLEAN_BUDGET:.0%} (not the same clean-accuracy budget)")
        if not budget_ok:
            result = "inconclusive"
    return Claim(id=claim_id, paper=paper, statement=statement, measured=measured, rule=rule,
                 verdict=result, units=units or {})


def _claims(seeds: list[dict[str, Any]]) -> list[Claim]:
    def values(model: str, key: str) -> list[float]:
        return [s["models"][model][key] for s in seeds]

    def attack_at(model: str, attack: str, index: int) -> list[float]:
        return [s["models"][model]["attacks"][attack][index] for s in seeds]

    claims = []
    front = [s["front_end"] for s in seeds]
    front_clean = {name: float(np.mean([f[name]["clean_accuracy"] for f in front]))
                   for name in ("relu_front_end", "lca_front_end")}
    same_budget = abs(front_clean["lca_front_end"] - front_clean["relu_front_end"]) <= \
        CLEAN_BUDGET
    relu_median = [f["relu_front_end"]["median_minimal_targeted_l2"] for f in front]
    lca_median = [f["lca_front_end"]["median_minimal_targeted_l2"] for f in front]
    claims.append(_spread_claim(
        "P1-C9-lca-targeted-l2", 1,
        "Check 27 (C9, Paiton et al. 2020): on digits the median minimal targeted L2 "
        "perturbation is larger for an LCA front end than for ReLU(W^T x + b) with the same "
        "dictionary.", [a - b for a, b in zip(lca_median, relu_median, strict=True)],
        "median minimal targeted L2 (LCA) - (ReLU)",
        {"lca_median_l2": _mean_sd(lca_median), "relu_median_l2": _mean_sd(relu_median),
         "lca_clean_accuracy": _mean_sd([f["lca_front_end"]["clean_accuracy"] for f in front]),
         "relu_clean_accuracy": _mean_sd([f["relu_front_end"]["clean_accuracy"]
                                          for f in front]),
         "images_per_seed": [f["n_attacked"] for f in front]},
        units={"lca_median_l2": "L2 norm of the image perturbation (pixels in [0, 1])"},
        budget_ok=same_budget))
    relu_drop = [f["relu_front_end"]["noise_drop"] for f in front]
    lca_drop = [f["lca_front_end"]["noise_drop"] for f in front]
    claims.append(_spread_claim(
        "P1-C10-lca-noise-drop", 1,
        "Check 27 (C10, Teti et al. 2022): under additive Gaussian noise sigma = 0.3 the LCA "
        "front end's accuracy drop is <= the ReLU front end's (same dictionary).",
        [r - lc for r, lc in zip(relu_drop, lca_drop, strict=True)],
        "accuracy drop (ReLU) - accuracy drop (LCA)",
        {"lca_drop": _mean_sd(lca_drop), "relu_drop": _mean_sd(relu_drop)},
        units={"lca_drop": "accuracy points (fraction)"}, budget_ok=same_budget))

    baseline_clean = float(np.mean(values("cnn_k0", "clean_accuracy")))
    for k in [k for k in (2, 5, 10) if f"cnn_k{k}" in seeds[0]["models"]]:
        name = f"cnn_k{k}"
        clean = float(np.mean(values(name, "clean_accuracy")))
        drop_k = [c - m for c, m in zip(values(name, "clean_accuracy"),
                                        values(name, "mean_corruption_accuracy"), strict=True)]
        drop_0 = [c - m for c, m in zip(values("cnn_k0", "clean_accuracy"),
                                        values("cnn_k0", "mean_corruption_accuracy"),
                                        strict=True)]
        if k == max(s for s in (2, 5, 10) if f"cnn_k{s}" in seeds[0]["models"]):
            claims.append(_spread_claim(
                f"P1-A8-k{k}-corruptions", 1,
                f"A.8.2: the CNN's forward pass replaced by {k}-step sparse inference (same "
                "dictionaries and thresholds, head refit) is more robust to common corruptions:"
                " smaller mean accuracy drop over 5 corruptions x 5 severities.",
                [a - b for a, b in zip(drop_0, drop_k, strict=True)],
                f"mean corruption drop (k=0) - (k={k})",
                {"clean_accuracy_k0": _mean_sd(values("cnn_k0", "clean_accuracy")),
                 f"clean_accuracy_k{k}": _mean_sd(values(name, "clean_accuracy")),
                 f"clean_accuracy_k{k}_without_refit": _mean_sd(
                     values(name, "clean_accuracy_without_refit")),
                 "drop_k0": _mean_sd(drop_0), f"drop_k{k}": _mean_sd(drop_k)},
                budget_ok=abs(clean - baseline_clean) <= CLEAN_BUDGET))
            claims.append(_spread_claim(
                f"P1-A8-k{k}-pgd", 1,
                f"A.8.2: {k}-step sparse inference raises accuracy under a white-box PGD L-inf "
                "attack (eps = 0.1, through the unrolled iterations).",
                [a - b for a, b in zip(attack_at(name, "pgd_linf", 2),
                                       attack_at("cnn_k0", "pgd_linf", 2), strict=True)],
                f"PGD accuracy (k={k}) - (k=0)",
                {"pgd_accuracy_k0": _mean_sd(attack_at("cnn_k0", "pgd_linf", 2)),
                 f"pgd_accuracy_k{k}": _mean_sd(attack_at(name, "pgd_linf", 2))},
                budget_ok=abs(clean - baseline_clean) <= CLEAN_BUDGET))
    proper_clean = float(np.mean(values("cnn_proper_prior", "clean_accuracy")))
    drop_p = [c - m for c, m in zip(values("cnn_proper_prior", "clean_accuracy"),
                                    values("cnn_proper_prior", "mean_corruption_accuracy"),
                                    strict=True)]
    drop_0 = [c - m for c, m in zip(values("cnn_k0", "clean_accuracy"),
                                    values("cnn_k0", "mean_corruption_accuracy"), strict=True)]
    claims.append(_spread_claim(
        "P1-A8-proper-prior-corruptions", 1,
        "A.8.1: a CNN trained with proper priors (every hidden bias <= 0) is more robust to "
        "common corruptions than the unconstrained CNN: smaller mean accuracy drop.",
        [a - b for a, b in zip(drop_0, drop_p, strict=True)],
        "mean corruption drop (plain) - (proper priors)",
        {"clean_accuracy_plain": _mean_sd(values("cnn_k0", "clean_accuracy")),
         "clean_accuracy_proper": _mean_sd(values("cnn_proper_prior", "clean_accuracy")),
         "drop_plain": _mean_sd(drop_0), "drop_proper": _mean_sd(drop_p),
         "max_hidden_bias_proper": max(s["models"]["cnn_proper_prior"]["max_hidden_bias"]
                                       for s in seeds)},
        budget_ok=abs(proper_clean - baseline_clean) <= CLEAN_BUDGET))

    claims += _world_claims([s["feature_world"]["models"] for s in seeds])

    worlds = [s["feature_world"] for s in seeds]
    index = worlds[0]["multiples_of_radius"].index(1.0)
    at_radius = [min(w["accuracy_structured"][index], w["accuracy_random_sign"][index],
                     w["accuracy_pgd_linf"][w["pgd_multiples_of_radius"].index(1.0)])
                 for w in worlds]
    flips = [w["structured_flip_radius_min"] for w in worlds]
    ratio = [f / w["certified_radius"] for f, w in zip(flips, worlds, strict=True)
             if f is not None and w["certified_radius"] > 0]
    holds = all(w["well_posed"] and w["error_rate"] == 0 for w in worlds) and \
        min(at_radius) == 1.0 and all(f is None or f >= w["certified_radius"] * (1 - 1e-9)
                                      for f, w in zip(flips, worlds, strict=True))
    claims.append(Claim(
        id="P2-B3-certified-radius", paper=2,
        statement="The constructed network's certified L-inf radius (theta_hi - theta_lo)/"
                  "(k^2 (A + V)) is valid: no image of the feature world is misclassified under"
                  " a structured worst-case, random-sign or PGD perturbation of that size.",
        measured={"certified_radius": _mean_sd([w["certified_radius"] for w in worlds]),
                  "min_accuracy_at_radius": min(at_radius),
                  "smallest_structured_flip": _mean_sd([f for f in flips if f is not None])
                  if any(f is not None for f in flips) else None,
                  "flip_over_certified": _mean_sd(ratio) if ratio else None,
                  "images_per_seed": worlds[0]["n_images"]},
        rule="holds iff every world is well posed with zero clean error, accuracy is 1 under "
             "all three attacks at rho = radius, and no structured perturbation smaller than "
             "the radius flips an image",
        verdict=verdict(holds),
        units={"certified_radius": "L-inf, pixel units"}))

    tables = [s["anomaly"]["table"] for s in seeds]
    ood_sets = list(tables[0])
    primary = "cnn.layer1.reconstruction_error"

    def mean_auroc(score: str) -> list[float]:
        return [float(np.mean([t[o][score]["auroc"] for o in ood_sets])) for t in tables]

    per_set = {o: _mean_sd([t[o][primary]["auroc"] for t in tables]) for o in ood_sets}
    above_chance = all(v["mean"] - 0.5 >= v["sd"] and v["mean"] > 0.5 for v in per_set.values())
    claims.append(Claim(
        id="P1-anomaly-reconstruction", paper=1,
        statement="Paper 1 (abstract): reading the CNN as sparse coding identifies anomalies: "
                  "the first layer's reconstruction error ||x - D a||^2 separates every "
                  "out-of-distribution set from held-in digits better than chance.",
        measured={"auroc_per_set": per_set, "score": primary,
                  "in_distribution_median_relative_error": {
                      name: _mean_sd([s["anomaly"]["in_distribution_median_relative_error"][name]
                                      for s in seeds])
                      for name in seeds[0]["anomaly"]["in_distribution_median_relative_error"]}},
        rule="holds iff for every OOD set the mean AUROC over seeds exceeds 0.5 by at least "
             "its sd; does not hold otherwise",
        verdict=verdict(above_chance)))
    claims.append(_spread_claim(
        "P1-anomaly-vs-softmax", 1,
        "The CNN's first-layer sparse-coding reconstruction error detects anomalies at least as"
        " well as the max-softmax baseline (mean AUROC over the OOD sets).",
        [a - b for a, b in zip(mean_auroc(primary), mean_auroc("max_softmax"), strict=True)],
        "mean AUROC (reconstruction error) - mean AUROC (max softmax)",
        {"auroc_reconstruction": _mean_sd(mean_auroc(primary)),
         "auroc_max_softmax": _mean_sd(mean_auroc("max_softmax")),
         "auroc_lca_dictionary_reconstruction": _mean_sd(
             mean_auroc("lca_dictionary.reconstruction_error"))}))
    return claims


def _world_claims(per_seed: list[dict[str, Any]]) -> list[Claim]:
    """The digits comparisons repeated on the feature world (same rules, same budget guard):
    k-step swap vs the one-shot CNN, proper priors vs plain, and the constructed network vs
    the trained CNN, by paired seed differences."""
    def values(model: str, key: str) -> list[float]:
        return [m[model][key] for m in per_seed]

    def drop(model: str) -> list[float]:
        return [c - m for c, m in zip(values(model, "clean_accuracy"),
                                      values(model, "mean_corruption_accuracy"), strict=True)]

    def pgd_at(model: str) -> list[float]:
        return [m[model]["attacks"]["pgd_linf"][2] for m in per_seed]

    def clean(model: str) -> float:
        return float(np.mean(values(model, "clean_accuracy")))

    def same_budget(model: str) -> bool:
        return abs(clean(model) - clean("cnn_k0")) <= CLEAN_BUDGET

    claims = []
    k = max(int(name[5:]) for name in per_seed[0] if name.startswith("cnn_k"))
    swapped = f"cnn_k{k}"
    claims.append(_spread_claim(
        f"P1-A8-world-k{k}-corruptions", 1,
        f"A.8.2 on the feature world: the trained B.3-architecture CNN with its forward pass "
        f"replaced by {k}-step sparse inference (head refit) has a smaller mean accuracy drop "
        "over 5 corruptions x 5 severities.",
        [a - b for a, b in zip(drop("cnn_k0"), drop(swapped), strict=True)],
        f"mean corruption drop (k=0) - (k={k})",
        {"clean_accuracy_k0": _mean_sd(values("cnn_k0", "clean_accuracy")),
         f"clean_accuracy_k{k}": _mean_sd(values(swapped, "clean_accuracy")),
         f"clean_accuracy_k{k}_without_refit": _mean_sd(
             values(swapped, "clean_accuracy_without_refit")),
         "drop_k0": _mean_sd(drop("cnn_k0")), f"drop_k{k}": _mean_sd(drop(swapped))},
        budget_ok=same_budget(swapped)))
    claims.append(_spread_claim(
        f"P1-A8-world-k{k}-pgd", 1,
        f"A.8.2 on the feature world: {k}-step sparse inference raises accuracy under white-box "
        "PGD L-inf (eps = 0.1).",
        [a - b for a, b in zip(pgd_at(swapped), pgd_at("cnn_k0"), strict=True)],
        f"PGD accuracy (k={k}) - (k=0)",
        {"pgd_accuracy_k0": _mean_sd(pgd_at("cnn_k0")),
         f"pgd_accuracy_k{k}": _mean_sd(pgd_at(swapped))},
        budget_ok=same_budget(swapped)))
    claims.append(_spread_claim(
        "P1-A8-world-proper-prior-corruptions", 1,
        "A.8.1 on the feature world: the CNN trained with proper priors (every hidden bias <= 0)"
        " has a smaller mean corruption accuracy drop than the unconstrained CNN.",
        [a - b for a, b in zip(drop("cnn_k0"), drop("cnn_proper_prior"), strict=True)],
        "mean corruption drop (plain) - (proper priors)",
        {"clean_accuracy_plain": _mean_sd(values("cnn_k0", "clean_accuracy")),
         "clean_accuracy_proper": _mean_sd(values("cnn_proper_prior", "clean_accuracy")),
         "drop_plain": _mean_sd(drop("cnn_k0")), "drop_proper": _mean_sd(drop("cnn_proper_prior")),
         "pgd_accuracy_proper": _mean_sd(pgd_at("cnn_proper_prior")),
         "max_hidden_bias_proper": max(m["cnn_proper_prior"]["max_hidden_bias"]
                                       for m in per_seed)},
        budget_ok=same_budget("cnn_proper_prior")))
    claims.append(_spread_claim(
        "P2-B3-world-constructed-vs-trained", 2,
        "On its feature world the constructed network is more robust than the same architecture"
        " trained by Adam: higher accuracy under white-box PGD L-inf (eps = 0.1).",
        [a - b for a, b in zip(pgd_at("constructed"), pgd_at("cnn_k0"), strict=True)],
        "PGD accuracy (constructed) - (trained CNN)",
        {"pgd_accuracy_constructed": _mean_sd(pgd_at("constructed")),
         "pgd_accuracy_trained": _mean_sd(pgd_at("cnn_k0")),
         "clean_accuracy_constructed": _mean_sd(values("constructed", "clean_accuracy")),
         "drop_constructed": _mean_sd(drop("constructed")), "drop_trained": _mean_sd(
             drop("cnn_k0"))},
        budget_ok=same_budget("constructed")))
    return claims


# -- figures ------------------------------------------------------------------------------------

LABELS = {"cnn_k0": "CNN (one-shot ReLU)", "cnn_k2": "CNN, 2-step ISTA",
          "cnn_k5": "CNN, 5-step ISTA", "cnn_k10": "CNN, 10-step ISTA",
          "cnn_proper_prior": "CNN, proper priors", "relu_front_end": "ReLU front end",
          "lca_front_end": "LCA front end", "constructed": "constructed network (B.3)"}


def _pyplot() -> Any:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_corruption_curves(curves: dict[str, dict[str, dict[str, list[float]]]]) -> Any:
    """``curves[model][corruption] = {"mean": [6 values], "sd": [...]}`` -> a figure with one
    panel per corruption (accuracy vs severity 0..5)."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(CORRUPTIONS), figsize=(16, 3.4), sharey=True)
    for axis, corruption in zip(axes, CORRUPTIONS, strict=True):
        for model, per_corruption in curves.items():
            stats = per_corruption[corruption]
            mean, sd = np.asarray(stats["mean"]), np.asarray(stats["sd"])
            axis.plot(range(6), mean, marker="o", ms=3, label=LABELS.get(model, model))
            axis.fill_between(range(6), mean - sd, mean + sd, alpha=0.15)
        axis.set_title(corruption.replace("_", " "))
        axis.set_xlabel("severity")
        axis.set_ylim(0, 1.02)
    axes[0].set_ylabel("test accuracy")
    axes[-1].legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    return figure


def plot_attack_curves(curves: dict[str, dict[str, dict[str, list[float]]]],
                       epsilons_linf: Sequence[float] = EPSILONS_LINF,
                       epsilons_l2: Sequence[float] = EPSILONS_L2) -> Any:
    """``curves[model][attack] = {"mean": [...], "sd": [...]}`` over ``epsilons_linf``
    (FGSM, PGD L-inf) and ``epsilons_l2`` (PGD L2)."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.4), sharey=True)
    for axis, attack in zip(axes, ("fgsm", "pgd_linf", "pgd_l2"), strict=True):
        epsilons = epsilons_l2 if attack == "pgd_l2" else epsilons_linf
        for model, per_attack in curves.items():
            mean, sd = np.asarray(per_attack[attack]["mean"]), np.asarray(per_attack[attack]["sd"])
            axis.plot(epsilons, mean, marker="o", ms=3, label=LABELS.get(model, model))
            axis.fill_between(epsilons, mean - sd, mean + sd, alpha=0.15)
        axis.set_title({"fgsm": "FGSM (L-inf)", "pgd_linf": "PGD L-inf",
                        "pgd_l2": "PGD L2"}[attack])
        axis.set_xlabel("epsilon")
        axis.set_ylim(0, 1.02)
    axes[0].set_ylabel("test accuracy")
    axes[-1].legend(fontsize=7)
    figure.tight_layout()
    return figure


def plot_roc_curves(in_scores: dict[str, Sequence[float]],
                    out_scores: dict[str, dict[str, Sequence[float]]],
                    score_names: Sequence[str]) -> Any:
    """One panel per OOD set, one ROC curve per score (AUROC in the legend)."""
    plt = _pyplot()
    names = list(out_scores)
    figure, axes = plt.subplots(1, len(names), figsize=(3.3 * len(names), 3.3), sharey=True)
    axes = np.atleast_1d(axes)
    for axis, name in zip(axes, names, strict=True):
        for score in score_names:
            fpr, tpr = roc_curve(in_scores[score], out_scores[name][score])
            area = auroc(in_scores[score], out_scores[name][score])
            axis.plot(fpr, tpr, label=f"{score} ({area:.2f})")
        axis.plot([0, 1], [0, 1], "k:", lw=0.7)
        axis.set_title(name.replace("_", " "))
        axis.set_xlabel("false-positive rate")
        axis.legend(fontsize=6, loc="lower right")
    axes[0].set_ylabel("true-positive rate")
    figure.tight_layout()
    return figure


def _histograms(in_scores: dict[str, Sequence[float]],
                out_scores: dict[str, dict[str, Sequence[float]]], score: str) -> Any:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 3.4))
    values = [np.asarray(in_scores[score])] + [np.asarray(s[score]) for s in out_scores.values()]
    bins = np.histogram_bin_edges(np.concatenate(values), bins=40)
    axis.hist(values[0], bins=bins, alpha=0.6, density=True, label="in distribution (digits)",
              color="black")
    for name, data in zip(out_scores, values[1:], strict=True):
        axis.hist(data, bins=bins, histtype="step", density=True, label=name.replace("_", " "))
    axis.set_xlabel(score)
    axis.set_ylabel("density")
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def _check27_figure(seeds: list[dict[str, Any]]) -> Any:
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    names = ("relu_front_end", "lca_front_end")
    medians = [[s["front_end"][n]["median_minimal_targeted_l2"] for s in seeds] for n in names]
    drops = [[s["front_end"][n]["noise_drop"] for s in seeds] for n in names]
    for axis, data, title in ((left, medians, "median minimal targeted L2"),
                              (right, drops, "accuracy drop, Gaussian noise sigma = 0.3")):
        means = [float(np.mean(d)) for d in data]
        sds = [float(np.std(d, ddof=1)) if len(d) > 1 else 0.0 for d in data]
        axis.bar([LABELS[n] for n in names], means, yerr=sds, color=["#888", "#2d7dd2"],
                 capsize=4)
        for i, d in enumerate(data):
            axis.scatter([i] * len(d), d, color="black", s=8, zorder=3)
        axis.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure


def _world_figure(seeds: list[dict[str, Any]]) -> Any:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.4))
    world = seeds[0]["feature_world"]
    rhos = np.asarray(world["multiples_of_radius"]) * world["certified_radius"]
    for key, label in (("accuracy_structured", "structured worst case"),
                       ("accuracy_random_sign", "random sign noise")):
        axis.plot(rhos, world[key], marker="o", label=label)
    axis.plot(np.asarray(world["pgd_multiples_of_radius"]) * world["certified_radius"],
              world["accuracy_pgd_linf"], marker="s", ls="--", label="PGD L-inf (3 steps)")
    axis.axvline(world["certified_radius"], color="k", ls="--", lw=0.8, label="certified radius")
    if world["structured_flip_radius_min"] is not None:
        axis.axvline(world["structured_flip_radius_min"], color="r", ls=":", lw=0.8,
                     label="smallest structured flip")
    axis.set_xlabel("rho (L-inf perturbation)")
    axis.set_ylabel("accuracy of the constructed network")
    axis.set_ylim(-0.02, 1.02)
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


# -- the study ----------------------------------------------------------------------------------

def _aggregate(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    world_models = seeds[0]["feature_world"]["models"]
    world = {"corruption_curves": {m: {c: _curve_stats(
                [s["feature_world"]["models"][m]["corruptions"][c] for s in seeds])
                for c in CORRUPTIONS} for m in world_models},
             "pgd_linf_curves": {m: _curve_stats(
                 [s["feature_world"]["models"][m]["attacks"]["pgd_linf"] for s in seeds])
                 for m in world_models},
             "clean_accuracy": {m: _mean_sd([s["feature_world"]["models"][m]["clean_accuracy"]
                                             for s in seeds]) for m in world_models},
             "certified_radius": _mean_sd([s["feature_world"]["certified_radius"]
                                           for s in seeds])}
    models = list(seeds[0]["models"])
    corruption = {m: {c: _curve_stats([s["models"][m]["corruptions"][c] for s in seeds])
                      for c in CORRUPTIONS} for m in models}
    attacks = {m: {a: _curve_stats([s["models"][m]["attacks"][a] for s in seeds])
                   for a in ("fgsm", "pgd_linf", "pgd_l2")} for m in models}
    clean = {m: _mean_sd([s["models"][m]["clean_accuracy"] for s in seeds]) for m in models}
    tables = [s["anomaly"]["table"] for s in seeds]
    anomaly = {o: {score: {metric: _mean_sd([t[o][score][metric] for t in tables])
                           for metric in tables[0][o][score]}
                   for score in tables[0][o]} for o in tables[0]}
    return {"clean_accuracy": clean, "corruption_curves": corruption, "attack_curves": attacks,
            "anomaly_table": anomaly, "epsilons_linf": list(EPSILONS_LINF),
            "epsilons_l2": list(EPSILONS_L2), "feature_world": world}


def run(context: StudyContext) -> StudyOutput:
    budget = QUICK if context.quick else FULL
    torch_threads = torch.get_num_threads()
    seeds = []
    for index in context.progress(range(budget.seeds), desc="robustness seeds"):
        seeds.append(_one_seed(context.seed + index, budget, context.progress))
    aggregate = _aggregate(seeds)
    claims = _claims(seeds)
    first = seeds[0]["anomaly"]
    score_names = ["max_softmax", "cnn.layer1.reconstruction_error",
                   "cnn.layer1.relative_reconstruction_error", "cnn.layer2.energy",
                   "lca_dictionary.reconstruction_error"]
    figures = [
        Figure.from_matplotlib(
            "robustness_corruptions", "Digits: test accuracy vs corruption severity (0 = clean) "
            f"for every model, mean +- sd over {budget.seeds} seed(s).",
            plot_corruption_curves(aggregate["corruption_curves"])),
        Figure.from_matplotlib(
            "robustness_attacks", "Digits: accuracy under white-box FGSM, PGD L-inf and PGD L2 "
            f"({budget.pgd_steps} steps) vs epsilon (pixels in [0, 1]).",
            plot_attack_curves(aggregate["attack_curves"])),
        Figure.from_matplotlib(
            "robustness_check27", "THEORY.md check 27: LCA vs ReLU front end with the same "
            f"{FRONT_END_ATOMS}-atom dictionary and lam = {FRONT_END_LAMBDA} (bars: mean +- sd, "
            "dots: seeds).", _check27_figure(seeds)),
        Figure.from_matplotlib(
            "robustness_feature_world", "Feature world (default preset): the constructed "
            "network's accuracy vs L-inf perturbation size, with its certified radius.",
            _world_figure(seeds)),
        Figure.from_matplotlib(
            "robustness_feature_world_models", "Feature world (default preset): test accuracy "
            "vs corruption severity (0 = clean) for the trained B.3-architecture CNN, its k-step "
            "sparse-inference swaps (head refit), the proper-prior CNN and the constructed "
            f"network, mean +- sd over {budget.seeds} seed(s).",
            plot_corruption_curves(aggregate["feature_world"]["corruption_curves"])),
        Figure.from_matplotlib(
            "anomaly_roc", f"Anomaly identification (seed {seeds[0]['seed']}, held-out digit "
            f"{seeds[0]['held_out_class']}): ROC curves per out-of-distribution set; AUROC in "
            "the legend.", plot_roc_curves(first["in_scores"], first["out_scores"],
                                           score_names)),
        Figure.from_matplotlib(
            "anomaly_histograms", "Histogram of the CNN's first-layer reconstruction error "
            "||x - D a||^2 for held-in digits and each out-of-distribution set.",
            _histograms(first["in_scores"], first["out_scores"],
                        "cnn.layer1.reconstruction_error")),
    ]
    per_seed = []
    for s in seeds:
        slim = copy.deepcopy(s)
        slim["anomaly"].pop("in_scores")
        slim["anomaly"].pop("out_scores")
        per_seed.append(slim)
    results = {"budget": budget.__dict__, "aggregate": aggregate, "per_seed": per_seed,
               "torch_threads": torch_threads}
    holds = sum(c.verdict == "holds" for c in claims)
    summary = (f"{len(claims)} robustness/anomaly claims over {budget.seeds} seed(s): {holds} "
               "hold.  Clean accuracy: " + ", ".join(
                   f"{LABELS.get(m, m)} {v['mean']:.3f}"
                   for m, v in aggregate["clean_accuracy"].items()) + ".")
    if not math.isfinite(sum(v["mean"] for v in aggregate["clean_accuracy"].values())):
        raise ValueError("a clean accuracy is not finite; the study cannot report it")
    return StudyOutput(claims=claims, figures=figures, results=results, summary=summary)


STUDY = Study(name="paper1_robustness", paper=1, order=50,
              title="Robustness (corruptions, attacks, certificates) and anomaly "
                    "identification", run=run)
