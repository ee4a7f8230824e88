"""docs/theory.md checks 9 and 10 at small scale: the complete model (layered thresholding +
softmax, no normalisation or pooling) reaches >= 0.95 test accuracy on digits; training with
proper priors keeps max(b) <= 0 after every step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsecnn.training import TrainingConfig, hidden_bias_parameters, train


def test_check9_complete_model_on_digits() -> None:
    accuracies = []
    for seed in (0, 1):
        config = TrainingConfig(channels=(16, 32), strides=(1, 2), epochs=20, seed=seed)
        result = train(config, None, progress=False, eval_every=20)
        accuracies.append(result.final["test_accuracy"])
        model = result.model.double()
        forbidden = (nn.modules.batchnorm._BatchNorm, nn.modules.pooling._MaxPoolNd,
                     nn.modules.pooling._AvgPoolNd, nn.LayerNorm, nn.GroupNorm)
        assert not any(isinstance(m, forbidden) for m in model.modules())
        with torch.no_grad():
            logits = model(torch.rand(50, 1, 8, 8, dtype=torch.float64))
        probabilities = torch.softmax(logits, dim=1)
        assert float((probabilities.sum(1) - 1).abs().max()) <= 1e-12
    assert sum(accuracies) / len(accuracies) >= 0.95


@pytest.mark.parametrize("model", ["cnn", "sparse"])
def test_check10_proper_priors_hold_at_every_step(model: str) -> None:
    common = {"model": model, "channels": (8, 16), "strides": (1, 2), "epochs": 3, "seed": 2,
              "learning_rate": 0.01}
    traces: dict[bool, list[float]] = {True: [], False: []}
    for proper in (True, False):
        def record(event: str, info: dict, proper: bool = proper) -> None:
            if event == "step":
                traces[proper].append(info["max_hidden_bias"])

        result = train(TrainingConfig(proper_prior=proper, **common), None, progress=False,
                       callback=record)
        if proper:
            biases = hidden_bias_parameters(result.model)
            assert len(biases) == 2
            assert max(float(b.detach().max()) for b in biases) <= 0.0
            assert result.final["test_accuracy"] >= 0.5
    assert len(traces[True]) == 3 * 15
    assert max(traces[True]) <= 0.0
    # the constraint is active: the unconstrained twin does grow positive biases
    assert max(traces[False]) > 0.0
