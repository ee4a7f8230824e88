"""The robustness study's powered proper-prior claims (docs/theory.md A.8.1) and the k-step
swap's read-out calibration on the feature world (A.8.2)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torch import nn

from sparsecnn.studies.paper1_robustness.claims import _proper_claim
from sparsecnn.studies.paper1_robustness.kstep import calibrate_readout
from sparsecnn.studies.paper1_robustness.models import swap
from sparsecnn.studies.paper1_robustness.proper_priors import (
    minimal_detectable_effect,
    powered_seeds,
)


@pytest.mark.parametrize("sd", [0.01, 0.05])
def test_minimal_detectable_effect_approaches_the_normal_closed_form(sd: float) -> None:
    # for many seeds the t-test is the z-test: e = (z_{1 - alpha/2} + z_{power}) sd / sqrt(n)
    n = 2000
    closed = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * sd / math.sqrt(n)
    assert minimal_detectable_effect(n, sd) == pytest.approx(closed, rel=2e-3)
    # with few seeds the t distribution's heavier tails need a larger effect
    assert minimal_detectable_effect(5, sd) > (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * \
        sd / math.sqrt(5)


def _models(d: float) -> dict:
    return {"cnn_k0": {"clean_accuracy": 0.9, "mean_corruption_accuracy": 0.7},
            "cnn_proper_prior": {"clean_accuracy": 0.9, "mean_corruption_accuracy": 0.7 + d}}


def test_powered_seeds_runs_what_the_normal_approximation_asks_within_the_cap() -> None:
    # pilot d = +-0.02 around 0: sd 0.0283; 1 point at power 0.8 needs about
    # ((1.96 + 0.84) * 2.83)^2 ~ 63 seeds, more than the cap of 7: 7 run, the need reported
    own = [_models(0.02), _models(-0.02)]
    calls = []

    def run_seed(seed: int) -> dict:
        calls.append(seed)
        return _models(0.01 * (-1) ** seed)

    models, power = powered_seeds(own, 10, 7, 250, run_seed)
    assert calls == [10, 11, 12, 13, 14] and len(models) == 7
    normal = ((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * math.sqrt(8e-4) / 0.01) ** 2
    assert normal <= power["seeds_needed"] <= normal + 5
    assert power["seeds_run"] == 7 and power["pilot_seeds"] == 2
    assert 0 < power["power_at_smallest_effect"] < 0.8


def test_powered_seeds_adds_one_seed_to_a_single_seed_pilot_and_none_below_a_cap_of_2() -> None:
    models, power = powered_seeds([_models(0.0)], 3, 1, 100, lambda seed: _models(0.0))
    assert len(models) == 1 and power == {}
    models, power = powered_seeds([_models(0.0)], 3, 2, 100, lambda seed: _models(0.5))
    assert len(models) == 2 and power["seeds_run"] == 2


def test_underpowered_proper_prior_claim_says_what_its_seeds_can_detect() -> None:
    own = [_models(d) for d in (0.02, -0.01, 0.03)]
    models, power = powered_seeds(own, 3, 3, 250, lambda seed: _models(0.0))
    claim = _proper_claim("P1-A8-proper-prior-corruptions", "statement", models, power, {})
    assert claim.verdict == "inconclusive"
    expected = (f"inconclusive: 3 seeds detect >= {power['minimal_detectable_effect'] * 100:.2f}"
                f" points (power 0.8), the effect is +1.33 points")
    assert claim.reason.startswith(expected), claim.reason
    assert f"{power['seeds_needed']} seeds are needed" in claim.reason


def _world_like(seed: int) -> nn.Module:
    # conv + ReLU (swapped), then a kept conv + ReLU read by a global max-pool, then a head
    torch.manual_seed(seed)
    features = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Conv2d(6, 3, 3, dilation=2),
                             nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten())

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features, self.head = features, nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x))

    return Model()


def _largest(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.features[:3](images).amax(dim=(2, 3)).double()


@pytest.mark.parametrize("k", [0, 4])
def test_readout_calibration_matches_the_one_shot_mean_and_spread(k: int) -> None:
    plain = _world_like(0)
    images = torch.rand(64, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    swapped = swap(plain, k)
    before = [p.detach().clone() for p in swapped.features[2].parameters()]
    calibrate_readout(plain, swapped, images)
    reference, calibrated = _largest(plain, images), _largest(swapped, images)
    torch.testing.assert_close(calibrated.mean(0), reference.mean(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(calibrated.std(0), reference.std(0), atol=1e-4, rtol=1e-4)
    if k == 0:  # the one-shot network is its own reference: unchanged
        for old, new in zip(before, swapped.features[2].parameters(), strict=True):
            torch.testing.assert_close(new.detach(), old, atol=1e-6, rtol=1e-6)
