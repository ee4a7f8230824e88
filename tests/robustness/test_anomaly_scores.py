"""Anomaly scores and detection metrics: AUROC / FPR / ROC against scikit-learn, sparse-coding
scores against explicit matrices and the orthonormal closed form (docs/theory.md A.3, A.5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sklearn_roc_curve
from torch import nn

from sparsecnn.anomaly import (
    anomaly_scores,
    auroc,
    detection_table,
    fpr_at_tpr,
    max_softmax_scores,
    out_of_distribution_sets,
    roc_curve,
    sparse_coding_scores,
)
from sparsecnn.nn import SparseConv2d, from_cnn

score_lists = st.lists(st.integers(-5, 5), min_size=1, max_size=40)


@given(inside=score_lists, outside=score_lists)
def test_auroc_equals_sklearn_with_ties(inside: list[int], outside: list[int]) -> None:
    labels = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    expected = roc_auc_score(labels, np.r_[inside, outside])
    assert auroc(np.array(inside, float), np.array(outside, float)) == pytest.approx(
        expected, abs=1e-12)


@given(seed=st.integers(0, 2**31 - 1), n_in=st.integers(1, 60), n_out=st.integers(1, 60))
def test_auroc_equals_sklearn_on_continuous_scores(seed: int, n_in: int, n_out: int) -> None:
    rng = np.random.default_rng(seed)
    inside, outside = rng.normal(size=n_in), rng.normal(0.7, size=n_out)
    labels = np.r_[np.zeros(n_in), np.ones(n_out)]
    assert auroc(torch.from_numpy(inside), torch.from_numpy(outside)) == pytest.approx(
        roc_auc_score(labels, np.r_[inside, outside]), abs=1e-12)


@given(inside=score_lists, outside=score_lists, tpr=st.sampled_from([0.5, 0.9, 0.95, 1.0]))
def test_fpr_at_tpr_and_roc_curve_equal_sklearn(inside: list[int], outside: list[int],
                                                tpr: float) -> None:
    labels = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    fpr_ref, tpr_ref, _ = sklearn_roc_curve(labels, np.r_[inside, outside],
                                            drop_intermediate=False)
    expected = fpr_ref[np.flatnonzero(tpr_ref >= tpr - 1e-12)[0]]
    assert fpr_at_tpr(inside, outside, tpr) == pytest.approx(expected, abs=1e-12)
    fpr, tpr_values = roc_curve(inside, outside)
    np.testing.assert_allclose(fpr, fpr_ref, atol=1e-12)
    np.testing.assert_allclose(tpr_values, tpr_ref, atol=1e-12)


def test_perfect_and_reversed_detectors() -> None:
    assert auroc([0.0, 1.0], [2.0, 3.0]) == 1.0
    assert auroc([2.0, 3.0], [0.0, 1.0]) == 0.0
    assert fpr_at_tpr([0.0, 1.0], [2.0, 3.0]) == 0.0
    assert fpr_at_tpr([2.0, 3.0], [0.0, 1.0]) == 1.0


def test_dense_layer_scores_equal_the_explicit_energy() -> None:
    # one SparseLinear layer: D = (W/||w||)^T, a = ReLU(W x + b)/||w||, lam = -b/||w||
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(12, 6, generator=generator, dtype=torch.float64)
    bias = torch.randn(12, generator=generator, dtype=torch.float64) * 0.5  # mixed signs
    x = torch.randn(9, 6, generator=generator, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3)).double()
    with torch.no_grad():
        model[0].weight.copy_(weight)
        model[0].bias.copy_(bias)
    scores = sparse_coding_scores(model, x)
    w, b, xs = weight.numpy(), bias.numpy(), x.numpy()
    norms = np.linalg.norm(w, axis=1)
    codes = np.maximum(xs @ w.T + b, 0) / norms
    residual = xs - codes @ (w / norms[:, None])
    error = (residual ** 2).sum(1)
    expected_energy = 0.5 * error + (codes * (-b / norms)).sum(1)
    np.testing.assert_allclose(scores["layer1.reconstruction_error"].numpy(), error,
                               atol=1e-12)
    np.testing.assert_allclose(scores["layer1.energy"].numpy(), expected_energy, atol=1e-12)
    np.testing.assert_allclose(scores["layer1.relative_reconstruction_error"].numpy(),
                               error / (xs ** 2).sum(1), atol=1e-12)
    assert sorted(scores) == ["layer1.energy", "layer1.reconstruction_error",
                              "layer1.relative_reconstruction_error"]


def test_orthonormal_haar_layer_error_is_the_negative_part() -> None:
    # 2x2 Haar filters at stride 2 are an orthonormal dictionary (docs/theory.md check 7):
    # ||x - D ReLU(D^T x)||^2 = ||D^T x - ReLU(D^T x)||^2 = ||min(D^T x, 0)||^2
    haar = torch.tensor([[[1, 1], [1, 1]], [[1, 1], [-1, -1]], [[1, -1], [1, -1]],
                         [[1, -1], [-1, 1]]], dtype=torch.float64).unsqueeze(1) / 2
    layer = SparseConv2d(1, 4, 2, stride=2, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(haar)
        layer.bias.zero_()
    model = nn.Sequential(layer, nn.Flatten(), nn.Linear(256, 2, dtype=torch.float64))
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(5, 1, 16, 16, generator=generator, dtype=torch.float64)
    analysis = torch.nn.functional.conv2d(x, haar, stride=2)
    expected = analysis.clamp(max=0).pow(2).flatten(1).sum(1)
    scores = sparse_coding_scores(model, x)
    torch.testing.assert_close(scores["layer1.reconstruction_error"], expected, atol=1e-12,
                               rtol=0)
    torch.testing.assert_close(scores["layer1.energy"], 0.5 * expected, atol=1e-12, rtol=0)


def test_plain_cnn_scores_equal_the_converted_models() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(96, 3)).double()
    x = torch.rand(7, 1, 8, 8, dtype=torch.float64)
    plain = anomaly_scores(model, x)
    converted = sparse_coding_scores(from_cnn(model, n_iter=0), x)
    assert set(plain) == set(converted) | {"max_softmax"}
    for name, values in converted.items():
        torch.testing.assert_close(plain[name], values)
    probabilities = torch.softmax(model(x), 1).max(1).values.detach()
    torch.testing.assert_close(max_softmax_scores(model, x), -probabilities)


def test_out_of_distribution_sets_are_seeded_shaped_and_in_range() -> None:
    generator = torch.Generator().manual_seed(0)
    digits = torch.rand(50, 1, 8, 8, generator=generator, dtype=torch.float64)
    held = torch.rand(20, 1, 8, 8, generator=generator, dtype=torch.float64)
    sets = out_of_distribution_sets(digits, n=30, seed=3, held_out=held)
    again = out_of_distribution_sets(digits, n=30, seed=3, held_out=held)
    assert sorted(sets) == ["feature_world", "gaussian_noise", "held_out_class", "inverted",
                            "uniform_noise"]
    for name, images in sets.items():
        assert torch.equal(images, again[name])
        assert images.shape[1:] == (1, 8, 8) and images.dtype == torch.float64
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    torch.testing.assert_close(sets["inverted"], 1 - digits[:30])
    assert torch.equal(sets["held_out_class"], held[:20])
    assert not torch.equal(sets["uniform_noise"],
                           out_of_distribution_sets(digits, n=30, seed=4,
                                                    feature_world=False)["uniform_noise"])
    assert torch.allclose(sets["feature_world"].flatten(1).max(1).values,
                          torch.ones(30, dtype=torch.float64))


def test_detection_table_lists_every_set_and_score() -> None:
    inside = {"a": [0.0, 1.0, 2.0], "b": [3.0, 2.0, 1.0]}
    outside = {"noise": {"a": [5.0, 6.0], "b": [0.0, 0.5]}}
    table = detection_table(inside, outside)
    assert table["noise"]["a"] == {"auroc": 1.0, "fpr_at_95_tpr": 0.0}
    assert table["noise"]["b"]["auroc"] == 0.0
    with pytest.raises(ValueError, match=r"out_scores\['noise'\] has score 'c', which "
                                         r"in_scores lacks"):
        detection_table(inside, {"noise": {"c": [1.0]}})


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: auroc([], [1.0]), ValueError,
     r"in_scores must be a non-empty 1-D array of scores; got shape \(0,\)"),
    (lambda: auroc([1.0], [float("nan")]), ValueError,
     r"out_scores must be finite; got 1 NaN/Inf scores"),
    (lambda: fpr_at_tpr([1.0], [2.0], tpr=1.5), ValueError, r"tpr must be in \(0, 1\]; got 1.5"),
    (lambda: out_of_distribution_sets(torch.zeros(3, 8, 8)), ValueError,
     r"in_images must have shape \(n, 1, H, W\); got \(3, 8, 8\)"),
    (lambda: out_of_distribution_sets(torch.zeros(3, 1, 8, 8), n=0), ValueError,
     r"n must be an integer >= 1; got 0"),
    (lambda: out_of_distribution_sets(torch.zeros(3, 1, 8, 8), held_out=torch.zeros(2, 1, 4, 4),
                                      feature_world=False), ValueError,
     r"held_out must have images shaped \(1, 8, 8\) like in_images; got \(1, 4, 4\)"),
    (lambda: sparse_coding_scores("model", torch.zeros(1, 4)), TypeError,
     r"model must be a torch.nn.Module; got str"),
    (lambda: max_softmax_scores(nn.Linear(4, 2), np.zeros((1, 4))), TypeError,
     r"images must be a torch.Tensor .* got ndarray"),
])
def test_bad_anomaly_input(call, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        call()
