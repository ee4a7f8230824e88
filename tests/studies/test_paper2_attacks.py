"""Paper 2 under attack: only attacks that pass the masking check are judged, and a failed check
of an attack that must work makes the claim inconclusive with the broken set-up named."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from sparsecnn.report.study import Figure
from sparsecnn.robustness.masking import CHECKS, MaskingReport
from sparsecnn.studies.paper2_feature_world import (
    ATTACK_EPSILONS,
    _attack_claim,
    _attack_figure,
    _robust_accuracy,
)


def _report(passed: bool, pgd_correct: list[list[bool]], square_correct: list[list[bool]]
            ) -> MaskingReport:
    checks = {name: True for name in CHECKS}
    reasons = []
    if not passed:
        checks["gradient"] = False
        reasons = ["gradient: 1 of the inputs have an exactly zero ..."]
    n = len(pgd_correct[0])
    return MaskingReport(
        epsilons=[0.1, 0.2], n_images=n, zero_gradient_fraction=0.0 if passed else 1.0,
        nonfinite_gradient_fraction=0.0, pgd_accuracy=[0.0, 0.0],
        pgd_mean_linf_over_eps=[1.0, 1.0], pgd_loss=[1.0, 2.0], noise_accuracy=[1.0, 1.0],
        square_accuracy=[1.0, 1.0], unbounded_epsilon=1.0, unbounded_pgd_accuracy=0.0,
        unbounded_pgd_max_linf=1.0, checks=checks, reasons=reasons, settings={},
        pgd_correct=[torch.tensor(c) for c in pgd_correct],
        square_correct=[torch.tensor(c) for c in square_correct])


def test_robust_accuracy_ignores_pgd_that_failed_the_masking_check() -> None:
    clean = torch.tensor([True, True, True, False])
    structured = [torch.tensor([True, True, False, True])] * 2
    square = [[True, True, True, True], [True, False, True, True]]
    pgd = [[False, True, True, True], [False, False, True, True]]
    trusted = _robust_accuracy(torch.nn.Identity(), _report(True, pgd, square), structured,
                               clean)
    masked = _robust_accuracy(torch.nn.Identity(), _report(False, pgd, square), structured,
                              clean)
    # per image: clean & square & structured (& pgd when trusted)
    assert trusted == [0.25, 0.0]
    assert masked == [0.5, 0.25]
    # a passing BPDA report adds its PGD even when the model's own PGD is masked
    with_bpda = _robust_accuracy(torch.nn.Identity(), _report(False, pgd, square), structured,
                                 clean, _report(True, pgd, square))
    assert with_bpda == trusted


def _entry(passed: bool, robust: list[float], clean: float = 1.0) -> dict[str, Any]:
    reasons = [] if passed else ["budget: PGD's mean ||delta||_inf / eps is [0] ..."]
    k = len(robust)
    return {"masking": {"passed": passed, "reasons": reasons, "zero_gradient_fraction": 0.0,
                        "pgd_accuracy": [1.0] * k, "square_accuracy": [0.9] * k,
                        "noise_accuracy": [0.95] * k},
            "clean_accuracy": clean, "robust_accuracy": robust,
            "structured_accuracy": [0.5] * k}


def _attacks(trained_passed: bool = True, bpda_passed: bool = True,
             trained_bpda_passed: bool = True, constructed: float = 0.3,
             trained: tuple[float, float] = (0.9, 0.85)) -> dict[str, Any]:
    k = len(ATTACK_EPSILONS)
    return {"constructed": _entry(False, [constructed] * k),
            "constructed_bpda": _entry(bpda_passed, [constructed] * k),
            "trained_seed0": _entry(trained_passed, [trained[0]] * k, 0.98),
            "trained_seed0_bpda": _entry(trained_bpda_passed, [trained[0]] * k, 0.98),
            "trained_seed1": _entry(True, [trained[1]] * k, 0.99),
            "trained_seed1_bpda": _entry(True, [trained[1]] * k, 0.99)}


def test_attack_claim_is_judged_from_trusted_attacks() -> None:
    claim = _attack_claim(_attacks(), [0, 1], 60)
    assert claim.paper == 2 and claim.kind == "empirical"
    assert claim.verdict == "does not hold"
    assert "d = mean over the eps sweep" in claim.reason
    rows = {m.name: m for m in claim.measurements}
    assert rows["difference"].mean == pytest.approx(0.3 - 0.875)
    assert rows["difference"].n == 2 and rows["difference"].low is not None
    assert claim.measured["masking_check_passed"]["constructed_pgd"] is False
    better = _attack_claim(_attacks(constructed=0.95, trained=(0.5, 0.49)), [0, 1], 60)
    assert better.verdict == "holds" and better.reason == ""
    # d = (0.05, 0.10): the mean 0.075 is two sd above 0, but two seeds' 95 % interval
    # (t_0.975,1 = 12.7) reaches 0, so the rule settles nothing
    close = _attack_claim(_attacks(constructed=0.95), [0, 1], 60)
    assert close.verdict == "inconclusive" and "2 seeds are too few" in close.reason


def test_one_trusted_pgd_per_trained_network_is_enough() -> None:
    """A trained net whose own PGD is masked but whose BPDA PGD passes is still judged."""
    assert _attack_claim(_attacks(trained_passed=False), [0, 1], 60).verdict == "does not hold"
    assert _attack_claim(_attacks(trained_bpda_passed=False), [0, 1],
                         60).verdict == "does not hold"


@pytest.mark.parametrize(("options", "named"), [
    ({"trained_passed": False, "trained_bpda_passed": False}, "trained_seed0_bpda_pgd"),
    ({"bpda_passed": False}, "constructed_bpda_pgd"),
])
def test_a_failed_masking_check_makes_the_claim_inconclusive_naming_it(
        options: dict[str, bool], named: str) -> None:
    claim = _attack_claim(_attacks(**options), [0, 1], 60)
    assert claim.verdict == "inconclusive"
    assert claim.reason.startswith("broken attack set-up")
    assert named in claim.reason and "constructed_pgd'" not in claim.reason


def test_attack_figure_marks_masked_pgd_in_its_legend() -> None:
    figure = _attack_figure(_attacks(), [0, 1])
    labels = [[text.get_text() for text in axis.get_legend().get_texts()]
              for axis in figure.axes]
    assert "PGD (masked, not judged)" in labels[0] and "BPDA PGD" in labels[0]
    assert "PGD" in labels[1] and "BPDA PGD" in labels[1]
    masked = _attack_figure(_attacks(trained_bpda_passed=False), [0, 1])
    assert "BPDA PGD (masked, not judged)" in [t.get_text()
                                               for t in masked.axes[1].get_legend().get_texts()]
    assert Figure.from_matplotlib("x", "x", figure).png.startswith(b"\x89PNG")
