"""FGSM and PGD L-inf agree with IBM's adversarial-robustness-toolbox (an independent
implementation).  Runs where ``adversarial-robustness-toolbox`` is installed (dev extra)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sparsecnn.robustness import fgsm, pgd

art_classification = pytest.importorskip("art.estimators.classification")
art_evasion = pytest.importorskip("art.attacks.evasion")


def _setup(seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor, object]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(256, 5)).eval()
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(16, 1, 8, 8, generator=generator)
    labels = torch.randint(0, 5, (16,), generator=generator)
    classifier = art_classification.PyTorchClassifier(
        model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=5,
        clip_values=(0.0, 1.0))
    return model, images, labels, classifier


@pytest.mark.parametrize("seed", [0, 1])
def test_fgsm_equals_art_fast_gradient_method(seed: int) -> None:
    model, images, labels, classifier = _setup(seed)
    reference = art_evasion.FastGradientMethod(classifier, norm=np.inf, eps=0.1).generate(
        images.numpy(), y=labels.numpy())
    ours = fgsm(model, images, labels, 0.1)
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_pgd_linf_equals_art_projected_gradient_descent(seed: int) -> None:
    model, images, labels, classifier = _setup(seed)
    attack = art_evasion.ProjectedGradientDescent(
        classifier, norm=np.inf, eps=0.1, eps_step=0.025, max_iter=10, num_random_init=0,
        verbose=False)
    reference = attack.generate(images.numpy(), y=labels.numpy())
    ours = pgd(model, images, labels, 0.1, norm="linf", steps=10, step_size=0.025)
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-5)
