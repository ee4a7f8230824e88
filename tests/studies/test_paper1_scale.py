"""Budgets chosen by dataset size and check 9's dataset-calibrated rule (paper-1 model and
feature studies; docs/theory.md checks 9, 10, 23, 24, 26)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sparsecnn.report.study import StudyContext
from sparsecnn.studies import _paper1_common, paper1_features, paper1_models
from sparsecnn.studies._paper1_unfolding import UnfoldBudget, converged
from sparsecnn.training import TrainingConfig
from sparsecnn.training.models import build_model


def _idx(array: np.ndarray) -> bytes:
    # IDX: two zero bytes, type 0x08 (unsigned byte), the number of dimensions, big-endian sizes
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx(directory: Path, n_train: int, n_test: int, size: int = 4) -> Path:
    """An IDX dataset of ``n_train`` / ``n_test`` random ``size x size`` images, 10 classes
    in turn (so every class has n/10 images)."""
    rng = np.random.default_rng(0)
    directory.mkdir()
    for split, n in (("train", n_train), ("t10k", n_test)):
        (directory / f"{split}-images-idx3-ubyte").write_bytes(
            _idx(rng.integers(0, 256, size=(n, size, size))))
        (directory / f"{split}-labels-idx1-ubyte").write_bytes(_idx(np.arange(n) % 10))
    return directory


def _context(tmp_path: Path, data: str, quick: bool) -> StudyContext:
    return StudyContext(quick=quick, seed=0, device="cpu", scratch_dir=tmp_path, data=data)


# (training images, quick) -> the budget's name: the size decides, never the name
@pytest.mark.parametrize(("n_train", "quick", "expected"), [
    (None, False, "FULL"),  # the embedded digits (~900 training images)
    (None, True, "QUICK"),
    (_paper1_common.LARGE_TRAIN_IMAGES - 10, False, "FULL"),
    (_paper1_common.LARGE_TRAIN_IMAGES, False, "LARGE"),
    (_paper1_common.LARGE_TRAIN_IMAGES, True, "QUICK"),
])
@pytest.mark.parametrize("module", [paper1_models, paper1_features])
def test_budget_is_chosen_by_training_set_size(tmp_path: Path, module, n_train: int | None,
                                               quick: bool, expected: str) -> None:
    data = "digits" if n_train is None else str(_write_idx(tmp_path / "idx", n_train, 20))
    chosen = _paper1_common.choose_budget(_context(tmp_path, data, quick),
                                          module.QUICK, module.FULL, module.LARGE)
    assert chosen is getattr(module, expected)


def test_digits_budgets_are_unchanged() -> None:
    # the embedded `make reproduce` runs these: the large-dataset budgets must not leak in
    assert paper1_models.FULL == paper1_models.Budget(
        seeds=5, complete_channels=(32, 64), complete_epochs=30,
        unfold=UnfoldBudget(channels=(16, 32), epochs=24, batch=128, learning_rate=1e-2,
                            pilot=5, max_seeds=9))
    assert paper1_models.FULL.unfold.subset is None
    # --quick's cap keeps the whole digits split (fewer than 1000 images in each half)
    digits = StudyContext(quick=True, seed=0, device="cpu", scratch_dir=Path("."))
    whole = digits.classification_split(0)
    capped = _paper1_common.capped_split(digits, 0, paper1_models.QUICK.unfold.subset)
    assert capped.train_labels.shape == whole.train_labels.shape
    assert capped.test_labels.shape == whole.test_labels.shape
    assert paper1_features.FULL == paper1_features.Budget(
        seeds=5, n_atoms=256, dictionary_steps=30, lista_steps=150)


def test_large_budgets_declare_their_subsets() -> None:
    # checks 9/10 on the whole training set (literature scale), the expensive parts on subsets
    assert paper1_models.LARGE.unfold.subset[0] < _paper1_common.LARGE_TRAIN_IMAGES
    assert paper1_features.LARGE.subset[0] < _paper1_common.LARGE_TRAIN_IMAGES
    # the convergence criterion compares epoch floor(3E/4) with E: they must differ
    assert 3 * paper1_models.LARGE.complete_epochs // 4 < paper1_models.LARGE.complete_epochs


@pytest.mark.parametrize("cap", [None, (100, 40), (10_000, 10_000)])
def test_capped_split_is_a_stratified_subset_of_the_split(tmp_path: Path,
                                                          cap: tuple[int, int] | None) -> None:
    data = str(_write_idx(tmp_path / "idx", 300, 60))
    context = _context(tmp_path, data, quick=False)
    whole = context.classification_split(3)
    part = _paper1_common.capped_split(context, 3, cap)
    n_train = 300 if cap is None else min(cap[0], 300)
    n_test = 60 if cap is None else min(cap[1], 60)
    assert part.train_labels.shape[0] == n_train and part.test_labels.shape[0] == n_test
    # stratified: every class keeps its share, n / 10 images each
    assert np.bincount(part.train_labels.numpy(), minlength=10).tolist() == [n_train // 10] * 10
    # every kept image is an image of the whole split (rows matched exactly)
    flat_whole = whole.train_images.flatten(1)
    for image in part.train_images.flatten(1)[:20]:
        assert bool((flat_whole == image).all(1).any())
    again = _paper1_common.capped_split(context, 3, cap)
    assert bool((again.train_images == part.train_images).all())


@pytest.mark.parametrize(("data", "rule"), [("digits", "absolute"), ("fashion-mnist", "baseline"),
                                            ("/some/idx/directory", "baseline")])
def test_check9_rule_is_absolute_only_on_the_digits_it_was_calibrated_on(data: str,
                                                                          rule: str) -> None:
    assert paper1_models.pair_rule(data) == rule


@pytest.mark.parametrize(("channels", "strides", "size"), [((4, 8), (1, 2), 10),
                                                           ((3, 5), (1, 2), 28)])
def test_standard_cnn_is_the_complete_model_plus_batch_norm_and_pooling(channels, strides,
                                                                        size) -> None:
    config = TrainingConfig(model=paper1_models.STANDARD_CNN, channels=channels,
                            strides=strides, seed=0)
    model = build_model(config, (1, size, size), 10)
    complete = build_model(TrainingConfig.from_dict({**config.to_dict(), "model": "cnn"}),
                           (1, size, size), 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.stride[0], c.kernel_size[0]) for c in convs] == \
        [(c.out_channels, c.stride[0], c.kernel_size[0]) for c in complete.modules()
         if isinstance(c, nn.Conv2d)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == len(channels)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 1
    # the head sees channels[-1] x floor(H_L / 2)^2, H_L the last layer's height
    height = size
    for stride in strides:
        height = (height - 1) // stride + 1
    assert model.head.in_features == channels[-1] * (height // 2) ** 2
    assert model(torch.zeros(2, 1, size, size)).shape == (2, 10)


@pytest.mark.parametrize(("late", "earlier", "expected"), [(0.96, 1.0, True), (0.94, 1.0, False),
                                                           (1.2, 1.0, True)])
def test_convergence_criterion_of_checks_9_and_10(late: float, earlier: float,
                                                  expected: bool) -> None:
    # mean over seeds of L(E) against L(floor(3E/4)): E = 4 compares epochs 4 and 3
    pairs = [{"free_heldout_loss": {3: earlier + d, 4: late + d}} for d in (-0.1, 0.1)]
    check = converged(pairs, "free", 4)
    assert check["relative_fall"] == pytest.approx((earlier - late) / earlier)
    assert check["converged"] is expected


@pytest.mark.parametrize("subset", [(5,), (100, 5), (0, 100)])
def test_unfold_budget_rejects_a_bad_subset(subset) -> None:
    with pytest.raises(ValueError, match="subset"):
        UnfoldBudget(channels=(4, 8), epochs=4, batch=16, learning_rate=1e-2, pilot=2,
                     max_seeds=2, subset=subset)


@pytest.mark.parametrize(("quick", "large", "expected"), [(True, False, 1.0), (False, False, 2.0),
                                                          (True, True, 3.0), (False, True, 4.0)])
def test_study_cost_depends_on_the_dataset_size(quick: bool, large: bool,
                                                expected: float) -> None:
    from sparsecnn.report.study import Study

    study = Study("s", 1, "t", run=lambda context: None, cost=(1, 2), cost_large=(3, 4))
    assert study.expected_seconds(quick, large) == expected
    # without a large-dataset cost the digits cost stands for every dataset
    plain = Study("s", 1, "t", run=lambda context: None, cost=(1, 2))
    assert plain.expected_seconds(quick, large) == (1.0 if quick else 2.0)


@pytest.mark.parametrize("cost_large", [(1.0,), (0.0, 5.0), (1.0, float("nan"))])
def test_study_rejects_a_bad_large_cost(cost_large) -> None:
    from sparsecnn.report.study import Study

    with pytest.raises(ValueError, match="cost_large"):
        Study("s", 1, "t", run=lambda context: None, cost_large=cost_large)


@pytest.mark.parametrize("threads", [None, 1, 2])
def test_torch_threads_restores_the_setting(threads: int | None) -> None:
    before = torch.get_num_threads()
    with _paper1_common.torch_threads(threads):
        assert torch.get_num_threads() == (before if threads is None else threads)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(("epochs", "judged"), [(1, False), (2, True), (4, True), (30, True)])
def test_a_budget_too_short_to_judge_is_not_converged(epochs: int, judged: bool) -> None:
    # evaluations at floor(3E/4) and E; E = 1 has no earlier epoch >= 1 to compare with
    earlier = 3 * epochs // 4
    pairs = [{"free_heldout_loss": {e: 1.0 for e in {max(earlier, 1), epochs}}}]
    check = paper1_models._plateau(pairs, "free", epochs)
    assert (check["relative_fall"] is not None) is judged
    assert check["converged"] is judged  # equal losses: no fall, converged when judged
