"""The standard OOD baselines (energy score, Mahalanobis) against direct computations with
SciPy, and the true-inference scores against the orthonormal closed form (docs/theory.md A.3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import mahalanobis
from scipy.special import logsumexp
from scipy.stats import ortho_group
from torch import nn

from sparsecnn.anomaly import (
    energy_scores,
    fit_mahalanobis,
    inference_scores,
    mahalanobis_scores,
)


@given(seed=st.integers(0, 2**31 - 1))
@settings(max_examples=20, deadline=None)
def test_energy_score_is_minus_logsumexp_of_the_logits(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5)).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(3 * torch.randn(parameter.shape, generator=generator,
                                            dtype=torch.float64))
    images = torch.randn((7, 1, 3, 4), generator=generator, dtype=torch.float64)
    with torch.no_grad():
        logits = (images.flatten(1) @ model[1].weight.T + model[1].bias).numpy()
    np.testing.assert_allclose(energy_scores(model, images, batch_size=3).numpy(),
                               -logsumexp(logits, axis=1), rtol=1e-12, atol=1e-12)


def test_mahalanobis_equals_scipy_with_the_pooled_covariance() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    features = rng.normal(size=(120, 4)) @ rng.normal(size=(4, 4)) + 2.0 * labels[:, None]
    means, precision = fit_mahalanobis(torch.from_numpy(features), torch.from_numpy(labels),
                                       ridge=1e-6)
    class_means = np.stack([features[labels == c].mean(0) for c in range(3)])
    centred = features - class_means[labels]
    covariance = centred.T @ centred / len(features)
    inverse = np.linalg.inv(covariance + 1e-6 * np.trace(covariance) / 4 * np.eye(4))
    queries = rng.normal(size=(9, 4)) * 3
    expected = [min(mahalanobis(q, m, inverse) ** 2 for m in class_means) for q in queries]
    np.testing.assert_allclose(means.numpy(), class_means, rtol=1e-12)
    np.testing.assert_allclose(mahalanobis_scores(torch.from_numpy(queries), means,
                                                  precision).numpy(), expected, rtol=1e-9)


def test_mahalanobis_names_its_bad_arguments() -> None:
    features = torch.zeros((4, 2), dtype=torch.float64)
    with pytest.raises(ValueError, match="labels must be integer class indices"):
        fit_mahalanobis(features, torch.zeros(4))
    with pytest.raises(ValueError, match=r"every class 0\.\.C-1"):
        fit_mahalanobis(features, torch.tensor([0, 2, 2, 0]))
    means, precision = fit_mahalanobis(torch.randn(6, 2, dtype=torch.float64),
                                       torch.tensor([0, 1, 0, 1, 0, 1]))
    with pytest.raises(ValueError, match="features must have 2 columns"):
        mahalanobis_scores(torch.zeros((3, 5), dtype=torch.float64), means, precision)


@pytest.mark.parametrize("lam", [0.05, 0.4])
def test_inference_scores_match_the_orthonormal_closed_form(lam: float) -> None:
    # D^T D = I: the non-negative lasso minimiser is a* = max(D^T x - lam, 0) (docs/theory.md A.3)
    dictionary = torch.from_numpy(ortho_group.rvs(6, random_state=1))
    signals = torch.from_numpy(np.random.default_rng(2).normal(size=(10, 6)))
    codes = (signals @ dictionary - lam).clamp_min(0)
    error = (signals - codes @ dictionary.T).pow(2).sum(1)
    scores = inference_scores(dictionary, lam, signals)
    torch.testing.assert_close(scores["energy"], 0.5 * error + lam * codes.sum(1),
                               rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(scores["relative_reconstruction_error"],
                               error / signals.pow(2).sum(1), rtol=1e-8, atol=1e-10)
