"""Paper 1, the exact identities (docs/theory.md A.2-A.8, checks 1-8, 11-14) on fresh random
problems drawn from the run's seed.

Each identity is measured as a worst-case error over the drawn problems and holds when the
error is within docs/theory.md Part D's tolerance.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..dictionary import ConvDictionary
from ..inference import sparse_code
from ..priors import nonneg_threshold, soft_threshold
from ..report.study import Claim, Figure, Study, StudyContext, StudyOutput, verdict
from ._seeding import seeded_generator

HAAR = torch.tensor([[[1, 1], [1, 1]], [[1, 1], [-1, -1]], [[1, -1], [1, -1]],
                     [[1, -1], [-1, 1]]], dtype=torch.float64).unsqueeze(1) / 2
TIGHT = {"max_iter": 100_000, "tol": 1e-12}


def _orthonormal(n: int, generator: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return q


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.max(torch.abs(a - b)))


def _identity_claim(claim_id: str, statement: str, error: float, tolerance: float,
                    n_problems: int, extra: dict | None = None) -> Claim:
    measured = {"max_abs_error": error, "tolerance": tolerance, "n_problems": n_problems}
    measured.update(extra or {})
    return Claim(id=claim_id, paper=1, kind="identity", statement=statement, measured=measured,
                 rule=f"holds iff max_abs_error <= {tolerance:g} over all drawn problems",
                 verdict=verdict(error <= tolerance))


def run(context: StudyContext) -> StudyOutput:
    generator = seeded_generator(context.seed)
    n_problems = 3 if context.quick else 10
    claims: list[Claim] = []
    errors = {"soft": 0.0, "relu": 0.0, "bias": 0.0, "split": 0.0, "split_product": 0.0}
    for _ in context.progress(range(n_problems), desc="orthogonal identities"):
        D = _orthonormal(64, generator)
        x = torch.randn(8, 64, generator=generator, dtype=torch.float64)
        sigma2 = float(torch.rand(1, generator=generator)) * 2 + 0.1
        rate = float(torch.rand(1, generator=generator)) * 2
        theta = sigma2 * rate
        signed = sparse_code(x, D, theta, method="fista", **TIGHT).codes
        errors["soft"] = max(errors["soft"], _max_abs(soft_threshold(x @ D, theta), signed))
        positive = sparse_code(x, D, theta, method="fista", nonneg=True, **TIGHT).codes
        errors["relu"] = max(errors["relu"], _max_abs(torch.relu(x @ D - theta), positive))
        rates = torch.rand(64, generator=generator, dtype=torch.float64) * 3 - 1
        bias = -sigma2 * rates
        modified = sparse_code(x, D, sigma2 * rates, method="fista", nonneg=True,
                               allow_negative_lam=True, **TIGHT).codes
        errors["bias"] = max(errors["bias"], _max_abs(torch.relu(x @ D + bias), modified))
        doubled = sparse_code(x, torch.cat([D, -D], 1), theta + 0.05, method="fista",
                              nonneg=True, **TIGHT).codes
        errors["split"] = max(errors["split"], _max_abs(
            doubled[:, :64] - doubled[:, 64:], soft_threshold(x @ D, theta + 0.05)))
        errors["split_product"] = max(errors["split_product"],
                                      float((doubled[:, :64] * doubled[:, 64:]).abs().max()))
    claims += [
        _identity_claim("P1-A2-soft-threshold", "With orthogonal basis functions the MAP "
                        "coefficients are the soft threshold of D^T x (paper 1, claim 1).",
                        errors["soft"], 1e-6, n_problems),
        _identity_claim("P1-A3-relu", "In non-negative sparse coding the soft threshold "
                        "becomes a ReLU: ReLU(D^T x - sigma^2 lam) (claim 2).",
                        errors["relu"], 1e-6, n_problems),
        _identity_claim("P1-A4-bias-is-prior", "ReLU(D^T x + b) is the MAP code of the "
                        "modified non-negative model with a per-coefficient exponential prior "
                        "of rate -b/sigma^2, biases of both signs (claim 3).",
                        errors["bias"], 1e-6, n_problems),
        _identity_claim("P1-A2-polarity-split", "Non-negative coding on [D, -D] gives "
                        "a+ - a- = S_theta(D^T x) with a+ * a- = 0 (CReLU).",
                        max(errors["split"], errors["split_product"] * 100), 1e-6, n_problems,
                        {"max_abs_product": errors["split_product"]}),
    ]

    # positive homogeneity of ReLU units (check 5)
    w = torch.randn(32, 64, generator=generator, dtype=torch.float64) * 3
    b = torch.randn(32, generator=generator, dtype=torch.float64)
    x = torch.randn(16, 64, generator=generator, dtype=torch.float64)
    norm = torch.linalg.vector_norm(w, dim=1)
    homogeneity = _max_abs(torch.relu(x @ w.T + b),
                           norm * nonneg_threshold(x @ (w / norm[:, None]).T, -b / norm))
    claims.append(_identity_claim(
        "P1-A4-unit-norm-atoms", "ReLU(w^T x + b) = ||w|| ReLU(d^T x - lam) with d = w/||w||, "
        "lam = -b/||w||: every unit is a unit-norm atom with a threshold and an output scale.",
        homogeneity, 1e-12, 1))

    # convolution: D^T x is conv2d, Haar stride 2 exact, stride 1 not (check 7)
    image = torch.randn(4, 1, 8, 8, generator=generator, dtype=torch.float64)
    exact = ConvDictionary(HAAR, stride=2)
    redundant = ConvDictionary(HAAR, stride=1)
    matrix = redundant.to_matrix((1, 8, 8))
    conv_error = _max_abs(redundant.analysis(image).flatten(1), image.flatten(1) @ matrix)
    theta = 0.3
    exact_code = sparse_code(image, exact, theta, nonneg=True, **TIGHT).codes
    exact_error = _max_abs(torch.relu(exact.analysis(image) - theta), exact_code)
    true_code = sparse_code(image, redundant, theta, nonneg=True, **TIGHT).codes
    one_shot = torch.relu(redundant.analysis(image) - theta)
    distance = torch.linalg.vector_norm((one_shot - true_code).flatten(1), dim=1)
    rank = int(torch.linalg.matrix_rank(matrix))
    claims += [
        _identity_claim("P1-A5-conv-is-analysis", "conv2d (strided cross-correlation) "
                        "computes D^T x for the explicit convolutional dictionary.",
                        conv_error, 1e-12, 1),
        _identity_claim("P1-A5-haar-stride2-exact", "2x2 Haar bank at stride 2 is orthonormal,"
                        " so ReLU(D^T x - theta) is the exact non-negative sparse code.",
                        exact_error, 1e-8, 1,
                        {"orthogonality_gap": exact.orthogonality_gap((1, 8, 8))}),
        Claim(id="P1-A5-stride1-not-exact", paper=1, kind="identity",
              statement="The same filters at stride 1 are overcomplete (rank < atoms), and the "
                        "one-shot ReLU is then not the sparse code: the closed form needs "
                        "D^T D = I.",
              measured={"min_l2_distance": float(distance.min()), "rank": rank,
                        "n_atoms": matrix.shape[1],
                        "orthogonality_gap": redundant.orthogonality_gap((1, 8, 8))},
              rule="holds iff rank < n_atoms and every image's one-shot code is > 0.1 (l2) "
                   "from the minimiser",
              verdict=verdict(rank < matrix.shape[1] and float(distance.min()) > 0.1)),
    ]

    # CNN forward pass = layered thresholding, each layer a minimiser (check 8)
    q = _orthonormal(16, generator)
    weights = [HAAR, q.T.reshape(16, 4, 2, 2).contiguous()]
    biases = [-torch.rand(4, generator=generator, dtype=torch.float64) * 0.3,
              -torch.rand(16, generator=generator, dtype=torch.float64) * 0.3]
    layer, worst = image, 0.0
    for weight, bias in zip(weights, biases, strict=True):
        forward = torch.relu(F.conv2d(layer, weight, bias, stride=2))
        minimiser = sparse_code(layer, ConvDictionary(weight, stride=2), -bias, nonneg=True,
                                **TIGHT).codes
        worst = max(worst, _max_abs(forward, minimiser))
        layer = forward
    claims.append(_identity_claim(
        "P1-A6-layered-thresholding", "A CNN forward pass (conv + bias + ReLU, 2 layers, "
        "orthonormal filters) is layered non-negative thresholding: each layer is the exact "
        "minimiser of its energy given the previous layer (claim 4).", worst, 1e-8, 1))

    # rates and LCA (checks 12, 13, 14)
    D = torch.randn(64, 128, generator=generator, dtype=torch.float64)
    D = D / torch.linalg.vector_norm(D, dim=0)
    x = torch.randn(4, 64, generator=generator, dtype=torch.float64)
    lam = 0.3
    best = sparse_code(x, D, lam, nonneg=True, **TIGHT)
    lipschitz = 1 / best.step_size
    radius2 = torch.sum(best.codes ** 2, 1)
    k = torch.arange(1, 501, dtype=torch.float64)[:, None]
    curves, bound_ok = {}, True
    for method, restart, bound in (("ista", False, lipschitz * radius2 / (2 * k)),
                                   ("fista", False, 2 * lipschitz * radius2 / (k + 1) ** 2),
                                   ("fista", True, None), ("lca", False, None)):
        history = sparse_code(x, D, lam, method=method, nonneg=True, restart=restart,
                              max_iter=500, tol=1e-15, return_history=True, warn=False).history
        gap = (history[1:] - best.energy).clamp(min=0)
        if bound is not None:
            bound_ok = bound_ok and bool(torch.all(gap <= bound + 1e-10))
        label = f"{method}{' + restart' if restart else ''}"
        curves[label] = gap.mean(1).numpy()
    claims.append(Claim(
        id="P1-C4-rates", paper=1, kind="identity",
        statement="ISTA and FISTA meet the Beck-Teboulle bounds F(a^k) - F* <= L||a*||^2/(2k) "
                  "and <= 2L||a*||^2/(k+1)^2 for every k <= 500.",
        measured={"ista_gap_at_500": float(curves["ista"][-1]),
                  "fista_gap_at_500": float(curves["fista"][-1]),
                  "fista_restart_gap_at_500": float(curves["fista + restart"][-1])},
        rule="holds iff both bounds hold at every k <= 500 for every signal",
        verdict=verdict(bound_ok)))
    lca_codes = sparse_code(x, D, lam, method="lca", nonneg=True, **TIGHT).codes
    claims.append(_identity_claim(
        "P1-A8-lca-is-sparse-coding", "The LCA steady state (lateral inhibition -(D^T D - I)a) "
        "equals the sparse-coding minimiser: the 'neural inhibition network'.",
        _max_abs(lca_codes, best.codes), 1e-6, 1))
    first = sparse_code(x, D, lam, method="ista", nonneg=True, max_iter=1, warn=False)
    claims.append(_identity_claim(
        "P1-A8-one-step", "One projected-ISTA step from 0 equals ReLU(D^T x - lam)/L: the ReLU "
        "layer is a one-step approximate sparse code.",
        _max_abs(first.codes, torch.relu(x @ D - lam) * first.step_size), 1e-12, 1))

    figures = [_convergence_figure(curves, lipschitz, radius2),
               _gap_figure(image, theta, generator, context)]
    results = {"errors": errors, "convergence_mean_gap": {k: v.tolist() for k, v in
                                                          curves.items()}}
    return StudyOutput(
        claims=claims, figures=figures, results=results,
        summary="Exact identities of the sparse-coding reading of a ReLU layer, checked on "
                f"{n_problems} random 64-dimensional problems per identity (seed "
                f"{context.seed}); minimisers from FISTA to tol 1e-12.")


def _convergence_figure(curves: dict[str, np.ndarray], lipschitz: float,
                        radius2: torch.Tensor) -> Figure:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    k = np.arange(1, 501)
    for label, gap in curves.items():
        ax.loglog(k[:len(gap)], np.maximum(gap, 1e-16), label=label)
    r2 = float(radius2.mean())
    ax.loglog(k, lipschitz * r2 / (2 * k), "k--", lw=0.8, label="ISTA bound L||a*||^2/2k")
    ax.loglog(k, 2 * lipschitz * r2 / (k + 1) ** 2, "k:", lw=0.8,
              label="FISTA bound 2L||a*||^2/(k+1)^2")
    ax.set_xlabel("iteration k")
    ax.set_ylabel("E(a^k) - E*  (mean over signals)")
    ax.set_title("Non-negative sparse coding, 64x128 dictionary")
    ax.legend(fontsize=8)
    return Figure.from_matplotlib("paper1_convergence", "Energy gap per iteration for ISTA, "
                                  "FISTA (with and without restart) and LCA, with the "
                                  "Beck-Teboulle bounds.", fig)


def _gap_figure(image: torch.Tensor, theta: float, generator: torch.Generator,
                context: StudyContext) -> Figure:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = {"Haar 2x2, stride 2": ConvDictionary(HAAR, stride=2),
             "Haar 2x2, stride 1": ConvDictionary(HAAR, stride=1)}
    random = torch.randn(8, 1, 3, 3, generator=generator, dtype=torch.float64)
    cases["random 8 x 3x3, stride 1"] = ConvDictionary(random, padding=1).normalized()
    cases["random 8 x 3x3, stride 2"] = ConvDictionary(random, stride=2, padding=1).normalized()
    names, gaps, distances = [], [], []
    for name, D in cases.items():
        true_code = sparse_code(image, D, theta, nonneg=True, **TIGHT).codes
        one_shot = torch.relu(D.analysis(image) - theta)
        relative = torch.linalg.vector_norm((one_shot - true_code).flatten(1), dim=1) / \
            torch.linalg.vector_norm(true_code.flatten(1), dim=1).clamp(min=1e-12)
        names.append(name)
        gaps.append(D.orthogonality_gap((1, 8, 8)))
        distances.append(float(relative.mean()))
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.barh(names, distances, color=["#2da44e" if g < 1e-9 else "#cf222e" for g in gaps])
    for i, g in enumerate(gaps):
        ax.text(distances[i], i, f"  ||D^T D - I||_F = {g:.3g}", va="center", fontsize=8)
    ax.set_xlabel("relative distance: one-shot ReLU code vs true non-negative sparse code")
    ax.set_xlim(0, max(distances) * 1.9 + 1e-3)
    ax.set_title("The ReLU layer is the sparse code only for orthonormal dictionaries")
    return Figure.from_matplotlib("paper1_one_shot_gap", "How far the CNN's one-shot ReLU code "
                                  "is from the true sparse code, against the orthogonality gap "
                                  "of the dictionary (8x8 random images, theta = 0.3).", fig)


STUDY = Study(name="paper1_identities", paper=1, order=10,
              title="The sparse-coding identities behind a ReLU layer (A.2-A.8)", run=run,
              cost=(25, 30), has_units=False)
