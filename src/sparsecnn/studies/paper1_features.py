"""Paper 1, one-shot thresholding vs sparse inference as feature extractors on digits or a larger
dataset (docs/theory.md A.8; checks 24 and 26).

For every seed ``s`` a dictionary ``D`` (``n_atoms`` unit-norm atoms, 4x overcomplete in full
mode) is learned on the centred training half of digits split ``s``
(:func:`sparsecnn.dictlearn.learn_dictionary`, l1 weight ``lam``).  Then:

* **Check 24** (C11, Coates & Ng 2011; Denil & de Freitas 2012): logistic regression on
  standardised features -- (i) the one-shot *split ReLU* ``[ReLU(D^T x - lam),
  ReLU(-D^T x - lam)]`` (one ISTA step, up to the factor 1/L: A.8), (ii) the polarity split of the
  exact LASSO codes ``argmin_a 1/2 ||x - D a||^2 + lam ||a||_1`` on the same dictionary
  (:func:`sparsecnn.sparse_code`, FISTA), (iii) the raw pixels.  Expectation (b): (i) within
  2 points of (ii); both >= (iii) - 1 point.
* **Check 26** (C8, Gregor & LeCun 2010): LISTA with ``T = 3`` layers, initialised at ISTA's
  values and trained (Adam, full batch) to regress the exact LASSO codes of the training
  signals, against ``T = 3`` steps of ISTA: test MSE(LISTA) <= 0.5 x MSE(ISTA).

Every rule compares the features with each other on the same data, so none is calibrated on a
dataset.  Budgets are chosen by size (:func:`._paper1_common.choose_budget`): :data:`QUICK`,
:data:`FULL` (digits: the whole split, 256 atoms = 4x overcomplete for 64 pixels) and
:data:`LARGE` (>= 20000 training images, e.g. Fashion-MNIST): dictionary learning, the exact
LASSO codes (FISTA to tolerance 1e-7, the cost that forces it) and LISTA run on a seeded
stratified subset of ``subset = (n_train, n_test)`` images, with 256 atoms (undercomplete for 784
pixels: a 4x overcomplete dictionary, 3136 atoms, would cost ~12x more per code), 3 seeds, on
2 torch threads.  The sizes
used are in the claims' measurements and the study's results.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..dictlearn import LearnedISTA, ista_encoder, learn_dictionary, plot_atoms
from ..inference import ConvergenceWarning, sparse_code
from ..priors import polarity_split
from ..report.study import (
    Claim,
    Figure,
    Study,
    StudyContext,
    StudyOutput,
    spread_band,
    verdict_with_spread,
)
from ._paper1_common import (
    capped_split,
    choose_budget,
    mean_sd,
    paired,
    spread_claim,
    spread_reason,
    tabulate,
    torch_threads,
)
from ._seeding import seeded_global_rng, study_seeds

__all__ = ["FULL", "LARGE", "QUICK", "STUDY", "Budget", "run"]


@dataclass(frozen=True)
class Budget:
    seeds: int
    n_atoms: int
    dictionary_steps: int
    lista_steps: int
    lam: float = 0.1
    lista_layers: int = 3
    #: at most (n_train, n_test) images of the split; None: all of it
    subset: tuple[int, int] | None = None
    #: torch intra-op threads of one seed's work (None: the study's setting, one thread)
    threads: int | None = None


QUICK = Budget(seeds=1, n_atoms=128, dictionary_steps=20, lista_steps=100)
FULL = Budget(seeds=5, n_atoms=256, dictionary_steps=30, lista_steps=150)
LARGE = Budget(seeds=3, n_atoms=256, dictionary_steps=30, lista_steps=150,
               subset=(5000, 2000), threads=2)
LISTA_LEARNING_RATE = 3e-3

WITHIN_POINTS = 0.02
RAW_MARGIN = 0.01
MSE_RATIO = 0.5


def _logistic_accuracy(train_features: np.ndarray, train_labels: np.ndarray,
                       test_features: np.ndarray, test_labels: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs iteration-limit notices on separable features
        model.fit(train_features, train_labels)
    return float(model.score(test_features, test_labels))


def _lasso_codes(signals: torch.Tensor, dictionary: torch.Tensor, lam: float, *,
                 tol: float) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return sparse_code(signals, dictionary, lam, method="fista", max_iter=20000,
                           tol=tol).codes


def _one_seed(budget: Budget, seed: int, context: StudyContext) -> dict[str, Any]:
    with torch_threads(budget.threads):
        return _one_seed_threads(budget, seed, context)


def _one_seed_threads(budget: Budget, seed: int, context: StudyContext) -> dict[str, Any]:
    data = capped_split(context, seed, budget.subset, dtype=torch.float64)
    train_x = data.train_images.flatten(1)
    test_x = data.test_images.flatten(1)
    mean = train_x.mean(0)
    train_x, test_x = train_x - mean, test_x - mean
    train_y, test_y = data.train_labels.numpy(), data.test_labels.numpy()
    lam = budget.lam
    dictionary = learn_dictionary(train_x, budget.n_atoms, lam,
                                  n_steps=budget.dictionary_steps, batch_size=256,
                                  seed=seed).dictionary

    def split_relu(x: torch.Tensor) -> np.ndarray:
        return polarity_split(x @ dictionary, lam).numpy()

    train_codes = _lasso_codes(train_x, dictionary, lam, tol=1e-7)
    test_codes = _lasso_codes(test_x, dictionary, lam, tol=1e-7)

    def split_codes(codes: torch.Tensor) -> np.ndarray:
        return torch.cat([torch.relu(codes), torch.relu(-codes)], dim=1).numpy()

    result: dict[str, Any] = {
        "seed": seed,
        "split_relu_accuracy": _logistic_accuracy(split_relu(train_x), train_y,
                                                  split_relu(test_x), test_y),
        "lasso_accuracy": _logistic_accuracy(split_codes(train_codes), train_y,
                                             split_codes(test_codes), test_y),
        "raw_pixel_accuracy": _logistic_accuracy(train_x.numpy(), train_y, test_x.numpy(),
                                                 test_y),
        "lasso_zero_fraction": float((test_codes == 0).double().mean()),
        "n_train": int(train_y.shape[0]), "n_test": int(test_y.shape[0]),
    }
    # check 26: LISTA vs ISTA, T = 3, regressing the exact LASSO codes
    with seeded_global_rng(seed):  # LearnedISTA initialises from the dictionary, no draw
        lista = LearnedISTA(dictionary, lam, budget.lista_layers)
    optimizer = torch.optim.Adam(lista.parameters(), lr=LISTA_LEARNING_RATE)
    for _ in range(budget.lista_steps):
        loss = ((lista(train_x) - train_codes) ** 2).sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        lista_mse = float(((lista(test_x) - test_codes) ** 2).sum(1).mean())
    ista_codes = ista_encoder(test_x, dictionary, lam, budget.lista_layers)
    ista_mse = float(((ista_codes - test_codes) ** 2).sum(1).mean())
    result.update({"lista_mse": lista_mse, "ista_mse": ista_mse,
                   "mse_ratio": lista_mse / ista_mse,
                   "code_energy": float((test_codes ** 2).sum(1).mean())})
    result["dictionary"] = dictionary
    result["image_shape"] = list(data.image_shape[-2:])
    return result


def _within_claim(differences: dict[str, Any], measured: dict[str, Any],
                  data_name: str = "digits") -> Claim:
    mean, sd = differences["mean"], differences["sd"]
    band = spread_band(sd, differences["n_seeds"])
    if abs(mean) + band <= WITHIN_POINTS:
        result = "holds"
    elif abs(mean) - band > WITHIN_POINTS:
        result = "does not hold"
    else:
        result = "inconclusive"
    return Claim(
        id="P1-check24-split-relu-vs-lasso", paper=1,
        statement="One-shot split-ReLU features [ReLU(D^T x - lam), ReLU(-D^T x - lam)] are "
                  "competitive with (within 2 points of) the exact LASSO codes on the same "
                  f"dictionary for logistic regression on {data_name} (expectation "
                  "(b), C11; "
                  "docs/theory.md check 24).",
        **tabulate({**measured, "difference": differences, "within": WITHIN_POINTS}),
        rule=f"d = accuracy(split ReLU) - accuracy(LASSO) per seed; holds if |mean(d)| + b "
             f"<= {WITHIN_POINTS}, does not hold if |mean(d)| - b > {WITHIN_POINTS}, "
             "inconclusive otherwise, b = max(sd(d), t_0.975,n-1 sd(d) / sqrt(n))",
        verdict=result,
        reason="" if result == "holds" else (
            f"d = accuracy(split ReLU) - accuracy(LASSO) has mean {mean:+.3g} and sd {sd:.3g} "
            f"over {differences['n_seeds']} seed(s), b = {band:.3g}: |mean| "
            + ("- b exceeds" if result == "does not hold" else "+ b exceeds, but |mean| - b "
               "does not exceed,") + f" the {WITHIN_POINTS} tolerance."))


def _figure(results: list[dict[str, Any]], data_name: str) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    names = [("split ReLU", "split_relu_accuracy"), ("LASSO codes", "lasso_accuracy"),
             ("raw pixels", "raw_pixel_accuracy")]
    for index, (_, key) in enumerate(names):
        values = [r[key] for r in results]
        left.bar(index, np.mean(values), yerr=np.std(values, ddof=1) if len(values) > 1 else 0,
                 capsize=4, color="tab:blue")
        left.scatter([index] * len(values), values, color="k", s=8, zorder=3)
    left.set_xticks(range(len(names)), [n for n, _ in names])
    low = min(r[key] for r in results for _, key in names)
    left.set_ylim(max(0.0, low - 0.03), 1.0)
    left.set_ylabel("logistic-regression test accuracy")
    left.set_title("check 24", fontsize=9)
    x = np.arange(len(results))
    right.bar(x - 0.2, [r["ista_mse"] for r in results], width=0.4, label="ISTA, T=3")
    right.bar(x + 0.2, [r["lista_mse"] for r in results], width=0.4, label="LISTA, T=3")
    right.set_xticks(x, [f"seed {r['seed']}" for r in results])
    right.set_ylabel("test MSE to the exact LASSO code")
    right.set_title("check 26", fontsize=9)
    right.legend(fontsize=8)
    figure.tight_layout()
    return Figure.from_matplotlib(
        "paper1_features",
        f"Left: {data_name} accuracy of logistic regression on one-shot split-ReLU features, exact "
        "LASSO codes (same learned dictionary) and raw pixels. Right: error of 3 ISTA steps vs "
        "3 trained LISTA layers in reaching the exact LASSO code.", figure)


def run(context: StudyContext) -> StudyOutput:
    budget = choose_budget(context, QUICK, FULL, LARGE)
    seeds = study_seeds(context.seed, budget.seeds)
    results = [context.unit(f"seed{seed}", lambda seed=seed: _one_seed(budget, seed, context))
               for seed in context.progress(seeds, desc=f"checks 24/26: {context.data} "
                                                        "dictionary")]
    dictionary = results[0].pop("dictionary")
    for result in results[1:]:
        result.pop("dictionary")
    relu = [r["split_relu_accuracy"] for r in results]
    lasso = [r["lasso_accuracy"] for r in results]
    raw = [r["raw_pixel_accuracy"] for r in results]
    accuracies = {"split_relu_accuracy": mean_sd(relu), "lasso_accuracy": mean_sd(lasso),
                  "raw_pixel_accuracy": mean_sd(raw), "n_atoms": budget.n_atoms,
                  "lam": budget.lam, "dataset": context.data,
                  "n_train": results[0]["n_train"], "n_test": results[0]["n_test"],
                  "lasso_zero_fraction": mean_sd([r["lasso_zero_fraction"] for r in results])}
    claims = [
        _within_claim(paired(relu, lasso), accuracies, context.data),
        spread_claim("P1-check24-split-relu-vs-raw",
                     "Split-ReLU features are at least as good as raw pixels, up to 1 point "
                     "(docs/theory.md check 24).", paired(relu, raw),
                     "accuracy(split ReLU) - accuracy(raw pixels)", accuracies,
                     margin=RAW_MARGIN),
        spread_claim("P1-check24-lasso-vs-raw",
                     "LASSO-code features are at least as good as raw pixels, up to 1 point "
                     "(docs/theory.md check 24).", paired(lasso, raw),
                     "accuracy(LASSO) - accuracy(raw pixels)", accuracies, margin=RAW_MARGIN),
    ]
    ratios = mean_sd([r["mse_ratio"] for r in results])
    claims.append(Claim(
        id="P1-check26-lista", paper=1,
        statement=f"LISTA (Gregor & LeCun 2010) with T = {budget.lista_layers} trained layers "
                  f"approximates the exact LASSO codes of {context.data} with at most half the "
                  f"test MSE of T = {budget.lista_layers} ISTA steps "
                  "(C8; docs/theory.md check 26).",
        **tabulate({"mse_ratio_lista_over_ista": ratios,
                    "lista_mse": mean_sd([r["lista_mse"] for r in results]),
                    "ista_mse": mean_sd([r["ista_mse"] for r in results]),
                    "mean_squared_norm_of_exact_codes":
                        mean_sd([r["code_energy"] for r in results]),
                    "training_steps": budget.lista_steps, "n_train": results[0]["n_train"],
                    "n_test": results[0]["n_test"]}),
        reason=spread_reason({**ratios, "mean": MSE_RATIO - ratios["mean"],
                              "values": [MSE_RATIO - v for v in ratios["values"]]},
                             f"{MSE_RATIO} - MSE(LISTA)/MSE(ISTA)"),
        rule=f"r = MSE(LISTA)/MSE(ISTA) per seed; holds if {MSE_RATIO} - mean(r) >= b, does "
             f"not hold if {MSE_RATIO} - mean(r) <= -b, inconclusive otherwise, b = max(sd(r), "
             "t_0.975,n-1 sd(r) / sqrt(n))",
        verdict=verdict_with_spread(MSE_RATIO - ratios["mean"], ratios["sd"],
                                    n=ratios["n_seeds"])))
    atoms = Figure.from_matplotlib(
        "paper1_digit_dictionary", f"The {budget.n_atoms} atoms learned on {context.data} (seed "
        f"{seeds[0]}), used for checks 24 and 26.",
        plot_atoms(dictionary, tuple(results[0]["image_shape"]),
                   title=f"{context.data} dictionary, lam = {budget.lam}"))
    summary = (f"{context.data}, {budget.n_atoms}-atom dictionary: split ReLU "
               f"{np.mean(relu):.3f}, LASSO {np.mean(lasso):.3f}, raw pixels {np.mean(raw):.3f}; "
               f"LISTA/ISTA test MSE ratio {ratios['mean']:.2f} +- {ratios['sd']:.2f}.")
    return StudyOutput(claims=claims, figures=[_figure(results, context.data), atoms],
                       results={"budget": budget.__dict__, "n_train": results[0]["n_train"],
                                "n_test": results[0]["n_test"], "seeds": results}, summary=summary)


STUDY = Study(name="paper1_features", paper=1, order=40,
              title="One-shot thresholding vs sparse inference as features; LISTA "
                    "(checks 24, 26)", run=run, threads=1, cost=(10, 75),
              # on a large dataset: quick ~14 s (2000/1000 images, 128 atoms); full: one
              # seed of 5000/2000 images and 256 atoms: 155 s CPU on 1 thread, 68 s wall on 2;
              cost_large=(15, 210))
