"""The robustness study on other datasets: the budget chosen by training-set size (digits keep
the digits budget exactly), check 27's average pooling of large images, and check 27 / the
anomaly protocol at 28x28."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sparsecnn.data import DatasetSplit, load_digits_split
from sparsecnn.studies._paper1_common import choose_budget
from sparsecnn.studies.paper1_robustness import budget as budgets
from sparsecnn.studies.paper1_robustness.check27 import (
    MAX_CODED_PIXELS,
    OVERCOMPLETENESS,
    CentredCoder,
    max_epsilon,
    pooling_factor,
    sparse_range,
)


def _fake_28x28(n_train: int, n_test: int, seed: int = 0) -> DatasetSplit:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_train + n_test) % 3
    # class c lights up the c-th horizontal band (a learnable signal that varies about the mean)
    images = 0.1 * torch.rand((n_train + n_test, 1, 28, 28), generator=generator)
    for c in range(3):
        images[labels == c, :, 9 * c:9 * c + 9, :] += 0.8
    return DatasetSplit("fake28", images[:n_train], labels[:n_train], images[n_train:],
                        labels[n_train:], 3)


def _context(split: DatasetSplit, quick: bool) -> SimpleNamespace:
    return SimpleNamespace(quick=quick, seed=0, classification_split=lambda seed: split)


@pytest.mark.parametrize("quick", [True, False])
@pytest.mark.parametrize("dataset", ["digits", "small28", "large8x8"])
def test_budget_is_chosen_by_training_set_size(dataset: str, quick: bool) -> None:
    if dataset == "digits":
        split = load_digits_split(seed=0)
    elif dataset == "small28":
        split = _fake_28x28(30, 10)  # 28x28 images, but few of them: the digits budget
    else:  # 8x8 images, as many training images as a large dataset
        n = 20_000
        split = DatasetSplit("many", torch.zeros(n, 1, 8, 8), torch.zeros(n, dtype=torch.long),
                             torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long), 1)
    chosen = choose_budget(_context(split, quick), budgets.QUICK, budgets.FULL, budgets.LARGE)
    expected = (budgets.QUICK if quick else
                budgets.LARGE if dataset == "large8x8" else budgets.FULL)
    assert chosen is expected
    # the embedded digits use their whole split; a large dataset a declared subset
    assert (chosen.train_cap is None) == (chosen is not budgets.LARGE)


@pytest.mark.parametrize(("size", "factor"), [
    ((8, 8), 1), ((16, 16), 1), ((17, 17), 2), ((28, 28), 2), ((32, 32), 2), ((33, 33), 2),
    ((34, 34), 3), ((64, 64), 4), ((16, 40), 2)])
def test_pooling_factor_is_the_smallest_within_the_coded_size(size: tuple[int, int],
                                                              factor: int) -> None:
    height, width = size
    assert pooling_factor(height, width) == factor
    assert (height // factor) * (width // factor) <= MAX_CODED_PIXELS
    if factor > 1:
        assert (height // (factor - 1)) * (width // (factor - 1)) > MAX_CODED_PIXELS


def test_regime_and_search_range_scale_with_the_size() -> None:
    # digits keep their declared numbers: 6.0 = 0.75 sqrt(64); 5 active atoms of 128
    assert max_epsilon(64) == 6.0
    assert max_epsilon(784) == pytest.approx(21.0, abs=1e-12)
    assert sparse_range(128) == (0.5, 1 - 5 / 128)
    low, high = sparse_range(392)
    assert low == 0.5 and (1 - high) * 392 == pytest.approx(5.0, abs=1e-9)


def test_pooling_factor_refuses_an_empty_image() -> None:
    with pytest.raises(ValueError, match="image size must be positive; got 0x8"):
        pooling_factor(0, 8)


@pytest.mark.parametrize("exact", [False, True])
def test_pooled_coder_codes_the_block_means(exact: bool) -> None:
    # P(x) for 2x2 pooling of a 4x4 image is the 4 block means: the pooled coder must equal
    # the unpooled coder applied to the explicit block means, in value and input gradient
    # (the gradient of a block mean spreads 1/4 to each of its pixels)
    rng = np.random.default_rng(5)
    dictionary = torch.from_numpy(rng.normal(size=(4, 7)))
    dictionary = dictionary / dictionary.norm(dim=0)
    mean = torch.from_numpy(rng.normal(size=4))
    x = torch.from_numpy(rng.normal(size=(5, 1, 4, 4))).requires_grad_(True)
    blocks = x.detach().reshape(5, 2, 2, 2, 2).mean(dim=(2, 4)).reshape(5, 4)
    blocks.requires_grad_(True)
    weights = torch.from_numpy(rng.normal(size=(5, 7)))
    pooled = CentredCoder(dictionary, mean, 0.2, exact, pool=2)(x)
    direct = CentredCoder(dictionary, mean, 0.2, exact)(blocks)
    torch.testing.assert_close(pooled.detach(), direct.detach(), rtol=1e-12, atol=1e-12)
    (pooled * weights).sum().backward()
    (direct * weights).sum().backward()
    spread = blocks.grad.reshape(5, 1, 2, 1, 2, 1).expand(5, 1, 2, 2, 2, 2) / 4
    torch.testing.assert_close(x.grad, spread.reshape(5, 1, 4, 4), rtol=1e-10, atol=1e-12)


def test_check27_and_anomaly_protocol_run_at_28x28() -> None:
    from sparsecnn.studies.paper1_robustness.anomaly_protocol import anomaly_experiment
    from sparsecnn.studies.paper1_robustness.check27 import check27
    from sparsecnn.studies.paper1_robustness.experiment import _nine_classes

    data = _fake_28x28(60, 30)
    nine, held = _nine_classes(data, 2)
    images, labels = data.test_images[:12], data.test_labels[:12]
    out, fronts = check27(nine, data, images, labels, 4, 0, dictionary_steps=100)
    # 28x28 is pooled 2x2 to 14x14 = 196 coded pixels, 2 atoms each
    assert out["pooling"] == 2 and out["n_pixels"] == 196
    assert out["n_atoms"] == OVERCOMPLETENESS * 196
    assert fronts["lca_front_end"].features.dictionary.shape == (196, 392)
    for name in ("relu_front_end", "lca_front_end"):
        result = out[name]
        assert 0.0 <= result["unfooled_fraction"] <= 1.0
        # the combined rule can only fool more images than either attack alone
        assert result["success_rate"] >= result["success_rate_pgd_l2"] - 1e-12
        assert result["success_rate"] >= result["success_rate_square"] - 1e-12
        with torch.no_grad():
            logits = fronts[name](images)
        assert logits.shape == (12, 3) and torch.isfinite(logits).all()
    coder = fronts["lca_front_end"].features
    anomaly = anomaly_experiment(nine, held, coder, 1, 10, 0)
    assert set(anomaly["table"]) >= {"held_out_class", "feature_world", "inverted"}
    for scores in anomaly["table"].values():
        for metrics in scores.values():
            assert 0.0 <= metrics["auroc"] <= 1.0
