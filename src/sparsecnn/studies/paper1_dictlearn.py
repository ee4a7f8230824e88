"""Paper 1 background: sparse coding of natural images learns oriented, localised atoms with
heavy-tailed codes (Olshausen & Field 1996; docs/theory.md A.1, C7, check 25).

For every seed ``s``: 8x8 patches of the bundled natural images, whitened with
``R(f) = f exp(-(f/f0)^4)``, ``f0 = 0.4`` Nyquist (:func:`sparsecnn.data.natural_image_patches`);
a complete dictionary of 64 unit-norm atoms learned by online sparse coding with l1 weight
``lam`` (:func:`sparsecnn.dictlearn.learn_dictionary`); codes of held-out patches by FISTA.
Compared with the PCA basis of the same patches:

* median excess kurtosis of the sparse codes >= 5 x that of the PCA coefficients;
* >= 80 % of the sparse coefficients are exactly zero;
* atoms are oriented (structure-tensor coherence) and localised (energy in the best 4x4
  window) more than random unit-norm atoms
  (:func:`sparsecnn.dictlearn.atom_orientation_coherence`,
  :func:`sparsecnn.dictlearn.atom_localization`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data import natural_image_patches
from ..dictlearn import (
    atom_localization,
    atom_orientation_coherence,
    excess_kurtosis,
    learn_dictionary,
    pca_basis,
    plot_atoms,
    zero_fraction,
)
from ..inference import ConvergenceWarning, sparse_code
from ..report.study import Figure, Study, StudyContext, StudyOutput
from ._paper1_common import mean_sd, shifted, spread_claim
from ._seeding import seeded_generator, study_seeds

__all__ = ["FULL", "QUICK", "STUDY", "Budget", "measure_natural_image_dictionary", "run"]

PATCH = (8, 8)
KURTOSIS_FACTOR = 5.0
ZERO_TARGET = 0.8


@dataclass(frozen=True)
class Budget:
    seeds: int
    n_steps: int
    batch_size: int
    n_train: int = 20000
    n_test: int = 4000
    n_atoms: int = 64
    lam: float = 0.5


QUICK = Budget(seeds=1, n_steps=25, batch_size=1024, n_train=10000, n_test=2000)
FULL = Budget(seeds=5, n_steps=300, batch_size=256)


def measure_natural_image_dictionary(seed: int, budget: Budget) -> dict[str, Any]:
    """Learn the dictionary of one seed and measure the statistics of check 25."""
    train = natural_image_patches(budget.n_train, PATCH[0], seed=2 * seed)
    test = natural_image_patches(budget.n_test, PATCH[0], seed=2 * seed + 1)
    learned = learn_dictionary(train, budget.n_atoms, budget.lam, n_steps=budget.n_steps,
                               batch_size=budget.batch_size, seed=seed, inference_iter=50)
    dictionary = learned.dictionary
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        codes = sparse_code(test, dictionary, budget.lam, method="fista", max_iter=1000,
                            tol=1e-6).codes
    pca = pca_basis(train)
    pca_coefficients = (test - train.mean(0)) @ pca
    sparse_kurtosis = float(excess_kurtosis(codes[:, codes.abs().sum(0) > 0]).median())
    pca_kurtosis = float(excess_kurtosis(pca_coefficients).median())
    generator = seeded_generator(seed)
    random_atoms = torch.randn((PATCH[0] * PATCH[1], budget.n_atoms), generator=generator,
                               dtype=torch.float64)
    random_atoms = random_atoms / torch.linalg.vector_norm(random_atoms, dim=0)
    return {
        "seed": seed,
        "sparse_kurtosis_median": sparse_kurtosis,
        "pca_kurtosis_median": pca_kurtosis,
        "kurtosis_ratio": sparse_kurtosis / pca_kurtosis,
        "zero_fraction": zero_fraction(codes),
        "orientation_learned": float(np.median(atom_orientation_coherence(dictionary, PATCH))),
        "orientation_random": float(np.median(atom_orientation_coherence(random_atoms, PATCH))),
        "orientation_pca": float(np.median(atom_orientation_coherence(pca, PATCH))),
        "localization_learned": float(np.median(atom_localization(dictionary, PATCH))),
        "localization_random": float(np.median(atom_localization(random_atoms, PATCH))),
        "localization_pca": float(np.median(atom_localization(pca, PATCH))),
        "energy_first_batch": learned.energy_history[0],
        "energy_last_batch": learned.energy_history[-1],
        "dictionary": dictionary,
        "pca": pca,
    }


def run(context: StudyContext) -> StudyOutput:
    budget = QUICK if context.quick else FULL
    seeds = study_seeds(context.seed, budget.seeds)
    results = [context.unit(f"seed{seed}",
                            lambda seed=seed: measure_natural_image_dictionary(seed, budget))
               for seed in context.progress(seeds, desc="check 25: natural-image atoms")]
    first = results[0]
    dictionary, pca = first["dictionary"], first["pca"]
    for result in results:
        result.pop("dictionary")
        result.pop("pca")

    def stats(key: str) -> dict[str, Any]:
        return mean_sd([r[key] for r in results])

    measured = {key: stats(key) for key in (
        "sparse_kurtosis_median", "pca_kurtosis_median", "kurtosis_ratio", "zero_fraction",
        "orientation_learned", "orientation_random", "orientation_pca", "localization_learned",
        "localization_random", "localization_pca")}
    measured.update({"lam": budget.lam, "n_atoms": budget.n_atoms, "steps": budget.n_steps})
    ratio = stats("kurtosis_ratio")
    zeros = stats("zero_fraction")
    claims = [
        spread_claim(
            "P1-check25-kurtosis",
            "Sparse codes of whitened natural 8x8 patches (64 learned atoms) are far more "
            "heavy-tailed than PCA coefficients: median excess kurtosis >= 5x PCA's "
            "(Olshausen & Field 1996, C7; docs/theory.md check 25).",
            shifted(ratio, KURTOSIS_FACTOR),
            f"kurtosis ratio - {KURTOSIS_FACTOR:g}", measured),
        spread_claim(
            "P1-check25-zeros",
            f"At least {ZERO_TARGET:.0%} of the sparse coefficients are exactly zero "
            "(docs/theory.md check 25).",
            shifted(zeros, ZERO_TARGET),
            f"zero fraction - {ZERO_TARGET}", measured),
        spread_claim(
            "P1-check25-oriented",
            "Learned atoms are oriented (edge/bar-like): their median structure-tensor "
            "coherence exceeds that of random unit-norm atoms (C7; docs/theory.md check 25).",
            _difference(results, "orientation_learned", "orientation_random"),
            "median coherence(learned) - median coherence(random atoms)", measured),
        spread_claim(
            "P1-check25-localised",
            "Learned atoms are localised: the median fraction of an atom's energy in its best "
            "4x4 window exceeds that of random unit-norm atoms (C7; docs/theory.md check 25).",
            _difference(results, "localization_learned", "localization_random"),
            "median localisation(learned) - median localisation(random atoms)", measured),
    ]
    figures = [
        Figure.from_matplotlib(
            "paper1_natural_atoms", f"The {budget.n_atoms} atoms learned on whitened natural "
            f"8x8 patches (seed {seeds[0]}, lam = {budget.lam}).",
            plot_atoms(dictionary, PATCH, title="sparse coding (Olshausen-Field)")),
        Figure.from_matplotlib(
            "paper1_natural_pca", "The PCA basis of the same patches, for comparison.",
            plot_atoms(pca, PATCH, title="PCA")),
    ]
    summary = (f"Natural patches: code kurtosis {ratio['mean']:.1f}x PCA's, "
               f"{zeros['mean']:.1%} zeros.")
    return StudyOutput(claims=claims, figures=figures,
                       results={"budget": budget.__dict__, "seeds": results}, summary=summary)


def _difference(results: list[dict[str, Any]], first: str, second: str) -> dict[str, Any]:
    return mean_sd([r[first] - r[second] for r in results])


STUDY = Study(name="paper1_dictlearn", paper=1, order=45,
              title="Dictionary learning on natural images: oriented atoms, heavy-tailed "
                    "codes (check 25)", run=run, threads=1, cost=(5, 20))
