"""Robustness evaluation: common corruptions and adversarial attacks (docs/theory.md A.8, C9, C10,
check 27).

Bowren (2021, arXiv 2108.06622) proposes two "more robust" forward transforms (docs/theory.md A.8):
proper sparse priors and real sparse inference instead of the one-shot ReLU.  Paiton et al.
(2020, J. Vision 20(12):10) and Teti et al. (2022, ICML) measured the robustness of LCA front
ends (C9, C10).  This package gives the measurements, in pure batched PyTorch:

* :mod:`.corruptions`: :func:`corrupt`, five common corruptions at severities 0..5 (0 is the
  clean image), seeded and nested across severities;
* :mod:`.attacks`: FGSM, PGD (L-infinity, L2, untargeted or targeted) and the minimal L2
  perturbation that flips a label;
* :mod:`.gradient_free`: the Square Attack (L-inf) and random-noise attack, which need no
  gradient; :mod:`.masking`: :func:`gradient_masking_report`, the checklist run before any
  gradient-attack number is believed; :mod:`.surrogate`: a BPDA surrogate gradient for the
  constructed network of docs/theory.md B.3;
* :mod:`.evaluation`: accuracy clean, along each corruption ladder and under each attack, all at
  once in :func:`evaluate_robustness`;
* :mod:`.figures`: the plots of those curves and of anomaly ROC curves (matplotlib, imported
  on use: ``from sparsecnn.robustness.figures import plot_corruption_curves``).
"""

from __future__ import annotations

from .attacks import (
    ATTACKS,
    MinimalPerturbation,
    attack,
    fgsm,
    minimal_l2_perturbation,
    pgd,
    pgd_restarts,
    project_l2,
    project_linf,
    random_targets,
)
from .corruptions import CORRUPTIONS, SEVERITIES, corrupt, corruption_parameter, gaussian_kernel
from .evaluation import accuracy, attack_curve, corruption_curves, evaluate_robustness
from .gradient_free import BlackBoxResult, margins, random_noise_attack, square_attack_linf
from .masking import MaskingReport, gradient_masking_report

__all__ = [
    "ATTACKS",
    "CORRUPTIONS",
    "SEVERITIES",
    "BlackBoxResult",
    "MaskingReport",
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
    "gradient_masking_report",
    "margins",
    "minimal_l2_perturbation",
    "pgd",
    "pgd_restarts",
    "project_l2",
    "project_linf",
    "random_noise_attack",
    "random_targets",
    "square_attack_linf",
]

