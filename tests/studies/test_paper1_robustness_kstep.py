"""The k-step swap of the robustness study (docs/theory.md A.8.2): the strong PGD against a
linear classifier's closed-form worst case, the masking check, the dead-unit fraction, the
claims' broken-set-up guards, and small_cnn on other image sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsecnn.studies.paper1_robustness.budget import STRONG_EPSILONS_LINF
from sparsecnn.studies.paper1_robustness.kstep import dead_fraction, strong_pgd
from sparsecnn.studies.paper1_robustness.kstep_claims import kstep_claims
from sparsecnn.training import small_cnn


def _linear(seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(2, 16, generator=generator))
    # pixels in [0.3, 0.7]: no L-inf step of size <= 0.2 reaches the [0, 1] clip
    images = 0.3 + 0.4 * torch.rand(64, 1, 4, 4, generator=generator)
    with torch.no_grad():
        labels = model(images).argmax(1)
    return model, images, labels


@pytest.mark.parametrize("seed", [0, 1])
def test_strong_pgd_matches_the_closed_form_worst_case_of_a_linear_classifier(seed: int) -> None:
    # two classes, logits W x: the L-inf worst case lowers the margin (w_y - w_o) x by exactly
    # eps ||w_y - w_o||_1, so an image stays correct iff its margin exceeds that
    model, images, labels = _linear(seed)
    weight = model[1].weight.detach()
    direction = weight[labels] - weight[1 - labels]
    margin = (direction * images.flatten(1)).sum(1)
    result = strong_pgd(model, images, labels, STRONG_EPSILONS_LINF, steps=50, restarts=1,
                        seed=seed)
    for epsilon, got in zip(STRONG_EPSILONS_LINF, result["accuracy"], strict=True):
        expected = float((margin > epsilon * direction.abs().sum(1)).double().mean())
        assert got == pytest.approx(expected, abs=1.5 / len(labels))  # ties at the boundary
    assert all(0 < d <= e + 1e-6 for d, e in zip(result["max_abs_delta"], STRONG_EPSILONS_LINF,
                                                 strict=True))
    assert result["masking_check_passed"] and result["loss_increases_with_eps"]
    assert result["accuracy"][0] < 1.0  # the attack does something at these radii


class _Masked(nn.Module):
    """Logits whose input gradient is exactly 0 (the input reaches them only through
    ``detach``), like a network of hard thresholds."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.detach() + 0.0 * x)


def test_masking_check_fails_when_the_input_gradient_is_zero() -> None:
    model, images, labels = _linear(0)
    result = strong_pgd(_Masked(model), images, labels, STRONG_EPSILONS_LINF, steps=5,
                        restarts=0, seed=0)
    assert not result["masking_check_passed"]
    assert result["max_abs_delta"] == [0.0] * len(STRONG_EPSILONS_LINF)
    assert result["accuracy"] == [1.0] * len(STRONG_EPSILONS_LINF)  # the masked artefact


def test_masking_check_fails_on_a_constant_network() -> None:
    # a dead network: constant logits, the random start moves the input but the loss is flat
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2), nn.ReLU())
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.fill_(-1.0)
    _, images, labels = _linear(0)
    result = strong_pgd(model, images, labels, STRONG_EPSILONS_LINF, steps=3, restarts=1,
                        seed=0)
    assert all(d > 0 for d in result["max_abs_delta"])
    assert not result["loss_increases_with_eps"] and not result["masking_check_passed"]


def test_strong_pgd_rejects_negative_restarts() -> None:
    model, images, labels = _linear(0)
    with pytest.raises(ValueError, match="restarts must be >= 0; got -1"):
        strong_pgd(model, images, labels, (0.1,), steps=2, restarts=-1, seed=0)


class _Features(nn.Module):
    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features


def test_dead_fraction_counts_units_zero_on_every_image() -> None:
    # unit j of ReLU(x_j - j): dead iff every x_j <= j; with x in [0, 2.5) units 3.. are dead
    offsets = torch.arange(8, dtype=torch.float32)
    model = _Features(nn.Sequential(nn.Flatten(), _Shift(offsets), nn.ReLU()))
    images = 2.5 * torch.rand(50, 1, 1, 8, generator=torch.Generator().manual_seed(0))
    images[0, 0, 0, :3] = 2.4  # units 0, 1, 2 are alive on image 0
    assert dead_fraction(model, images) == pytest.approx(5 / 8)
    assert dead_fraction(model, -images) == 1.0


class _Shift(nn.Module):
    def __init__(self, offsets: torch.Tensor) -> None:
        super().__init__()
        self.offsets = offsets

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.offsets


def _seed(k_values: dict[int, dict], **overrides) -> dict:
    models = {}
    for k, numbers in k_values.items():
        entry = {"k": k, "clean_accuracy": 0.9, "mean_corruption_accuracy": 0.7,
                 "clean_accuracy_swap_only": 0.3, "dead_fraction": 0.2,
                 "finetune_epochs": 3, "finetune_learning_rate": 1e-2,
                 "strong_pgd_linf": {"accuracy": [0.6, 0.4, 0.1], "mean_loss": [1.0, 2.0, 3.0],
                                     "steps": 50, "restarts": 2, "n_images": 100,
                                     "masking_check_passed": True}}
        entry.update(numbers)
        entry.update(overrides.get(k, {}))
        models[f"cnn_k{k}_tuned"] = entry
    return models


def _pgd(accuracy_at_01: float, passed: bool = True) -> dict:
    return {"strong_pgd_linf": {"accuracy": [0.6, accuracy_at_01, 0.1],
                                "mean_loss": [1.0, 2.0, 3.0], "steps": 50, "restarts": 2,
                                "n_images": 100, "masking_check_passed": passed}}


def test_kstep_claims_follow_the_spread_rule_on_a_healthy_setup() -> None:
    seeds = [_seed({0: _pgd(0.40), 2: _pgd(0.45),
                    10: {**_pgd(0.40 + d), "mean_corruption_accuracy": 0.7 - d}})
             for d in (0.10, 0.12, 0.08)]
    claims = {c.id: c for c in kstep_claims(seeds, world=False)}
    pgd = claims["P1-A8-k10-pgd"]  # judged: the largest k of the sweep, not the best one
    assert pgd.verdict == "holds" and pgd.reason == ""
    row = {m.name: m for m in pgd.measurements}["difference"]
    assert row.mean == pytest.approx(0.10)
    # the k = 10 drop is larger by 0.10 +- 0.02: d = drop(k0) - drop(k10) is one sd below 0
    corruptions = claims["P1-A8-k10-corruptions"]
    assert corruptions.verdict == "does not hold"
    assert {m.name: m for m in corruptions.measurements}["difference"].mean == pytest.approx(-0.1)


def test_kstep_claims_are_inconclusive_naming_a_dead_network() -> None:
    seeds = [_seed({0: _pgd(0.40), 10: {**_pgd(0.9), "dead_fraction": 1.0}}) for _ in range(3)]
    for claim in kstep_claims(seeds, world=True):
        assert claim.id.startswith("P1-A8-world-k10-")
        assert claim.verdict == "inconclusive"
        assert claim.reason.startswith("broken set-up: the k=10 network is dead on 3 seed(s)")


def test_kstep_pgd_claim_is_inconclusive_when_the_masking_check_fails() -> None:
    seeds = [_seed({0: _pgd(0.40), 5: _pgd(0.95, passed=seed != 1)}) for seed in range(3)]
    claims = {c.id: c for c in kstep_claims(seeds, world=False)}
    assert claims["P1-A8-k5-pgd"].verdict == "inconclusive"
    assert "masking check failed for k=5 on 1 seed(s)" in claims["P1-A8-k5-pgd"].reason
    assert "masking" in claims["P1-A8-k5-pgd"].rule


@pytest.mark.parametrize("size", [(8, 8), (28, 28), (32, 20)])
def test_small_cnn_takes_the_image_size(size: tuple[int, int]) -> None:
    model = small_cnn(10, 0, image_size=size, in_channels=3 if size == (32, 20) else 1)
    channels = 3 if size == (32, 20) else 1
    logits = model(torch.zeros(2, channels, *size))
    assert logits.shape == (2, 10)
    # conv 3x3 padding 1, then stride 2: the head reads 16 x ceil(h/2) x ceil(w/2) codes
    assert model.head.in_features == 16 * ((size[0] + 1) // 2) * ((size[1] + 1) // 2)


def test_small_cnn_default_is_the_8x8_digits_model() -> None:
    assert torch.equal(small_cnn(10, 4).head.weight,
                       small_cnn(10, 4, image_size=(8, 8)).head.weight)
    assert small_cnn(10, 4).head.in_features == 16 * 4 * 4


@pytest.mark.parametrize("bad", [(8,), (0, 8), [8, 8], (8.0, 8)])
def test_small_cnn_rejects_a_bad_image_size(bad) -> None:
    with pytest.raises(ValueError, match="image_size must be a \\(height, width\\) tuple"):
        small_cnn(10, 0, image_size=bad)
