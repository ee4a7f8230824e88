"""How much work the robustness study does per mode, and the constants its models and claims
share."""

from __future__ import annotations

from dataclasses import dataclass

from ...robustness.evaluation import EPSILONS_L2, EPSILONS_LINF

__all__ = [
    "CLEAN_BUDGET",
    "EPSILONS_L2",
    "EPSILONS_LINF",
    "FINETUNE_LEARNING_RATE",
    "FULL",
    "JUDGED_EPSILON",
    "LARGE",
    "NOISE_SEVERITY",
    "QUICK",
    "STRONG_EPSILONS_LINF",
    "WORLD_BATCH_SIZE",
    "WORLD_LEARNING_RATE",
    "Budget",
]

NOISE_SEVERITY = 4  # gaussian_noise severity 4 is sigma = 0.3 (docs/theory.md check 27)
WORLD_LEARNING_RATE = 1e-2  # Adam on the feature world (B.3 architecture)
WORLD_BATCH_SIZE = 16
FINETUNE_LEARNING_RATE = 1e-2  # Adam, every k-step variant (k = 0 too): kstep.py
#: PGD radii of the k-step claims (eps = 0 is the clean accuracy, reported apart)
STRONG_EPSILONS_LINF = (0.05, 0.1, 0.2)
JUDGED_EPSILON = 0.1  # the k-step PGD claims judge accuracy at this radius
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
    check27_images: int = 100  # test images of check 27's minimal-perturbation search
    # the k-step swap (kstep.py): fine-tuning epochs after the swap, and the strong PGD
    finetune_epochs: int = 6
    world_finetune_epochs: int = 2
    n_attack: int = 60
    strong_pgd_steps: int = 50
    pgd_restarts: int = 1
    # the world judges the largest k only: its sweep is the reference and the judged k
    world_swap_steps: tuple[int, ...] = (0, 10)
    # the proper-prior claims (proper_priors.py): at most this many seeds in all, the study's
    # own seeds included (a cap below 2 runs no extra seed: no power analysis)
    proper_max_seeds: int = 8
    world_proper_max_seeds: int = 5
    # a large dataset's declared stratified subset (n_train, n_test) per seed; None: whole
    train_cap: tuple[int, int] | None = None


QUICK = Budget(seeds=1, epochs=6, n_eval=100, n_minimal=30, pgd_steps=3, lca_steps=30,
               dictionary_steps=15, n_ood=100, n_feature_world=80, tolerance=0.05,
               swap_steps=(0, 10), world_train=1500, world_epochs=4, world_eval=40,
               finetune_epochs=3, world_finetune_epochs=1, n_attack=30, check27_images=40,
               proper_max_seeds=1, world_proper_max_seeds=1)
FULL = Budget(seeds=5, epochs=12, n_eval=250, n_minimal=50, pgd_steps=6, lca_steps=30,
              dictionary_steps=30, n_ood=250, n_feature_world=200, tolerance=0.03,
              world_train=1500, world_epochs=4)

#: a large dataset (at least 20 000 training images, e.g. Fashion-MNIST's 60k 28x28): every
#: seed's models on a declared stratified subset of 10 000 training and 2 000 test images
LARGE = Budget(seeds=3, epochs=6, n_eval=250, n_minimal=50, pgd_steps=6, lca_steps=30,
               dictionary_steps=30, n_ood=250, n_feature_world=200, tolerance=0.03,
               world_train=1500, world_epochs=4, finetune_epochs=2, check27_images=30,
               proper_max_seeds=6, train_cap=(10_000, 2_000))
