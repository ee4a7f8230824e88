"""The one fit loop and the one run loader: seeded fits repeat bit for bit, the recipes on
the loop keep their contracts, and a finished run reads back as it was written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sparsecnn.data import load_digits_split
from sparsecnn.training import (
    TrainingConfig,
    fit_classifier,
    hidden_bias_parameters,
    load_run,
    refit_head,
    small_cnn,
    train,
    train_classifier,
)


@pytest.fixture(scope="module")
def digits():
    data = load_digits_split(seed=0)
    return data.train_images[:200], data.train_labels[:200]


def test_the_same_seed_gives_the_same_weights_bit_for_bit(digits) -> None:
    images, labels = digits
    first = fit_classifier(small_cnn(10, 0), images, labels, epochs=2, batch_size=64,
                           learning_rate=1e-2, seed=3)
    second = fit_classifier(small_cnn(10, 0), images, labels, epochs=2, batch_size=64,
                            learning_rate=1e-2, seed=3)
    other = fit_classifier(small_cnn(10, 0), images, labels, epochs=2, batch_size=64,
                           learning_rate=1e-2, seed=4)
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    assert not all(torch.equal(v, other.state_dict()[k]) for k, v in first.state_dict().items())
    assert not first.training


def test_train_classifier_is_the_adam_fit(digits) -> None:
    images, labels = digits
    recipe = train_classifier(small_cnn(10, 1), images, labels, epochs=1, seed=2,
                              batch_size=50)
    loop = fit_classifier(small_cnn(10, 1), images, labels, epochs=1, batch_size=50,
                          learning_rate=1e-2, seed=2, optimizer="adam")
    for key, value in recipe.state_dict().items():
        assert torch.equal(value, loop.state_dict()[key]), key


def test_proper_prior_keeps_every_hidden_bias_nonpositive(digits) -> None:
    images, labels = digits
    model = train_classifier(small_cnn(10, 2), images, labels, epochs=1, seed=0,
                             proper_prior=True, batch_size=40)
    assert max(float(b.detach().max()) for b in hidden_bias_parameters(model)) <= 0.0


def test_refit_head_changes_only_the_head(digits) -> None:
    images, labels = digits
    model = small_cnn(10, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    refit_head(model, images, labels, steps=3)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]) != key.startswith("head."), key


def test_unknown_optimizer_is_refused(digits) -> None:
    images, labels = digits
    with pytest.raises(ValueError, match="optimizer must be one of"):
        fit_classifier(small_cnn(10, 0), images, labels, epochs=1, batch_size=64,
                       learning_rate=1e-2, seed=0, optimizer="lbfgs")


def test_load_run_reads_back_the_final_weights(tmp_path: Path) -> None:
    config = TrainingConfig(epochs=1, channels=(4,), strides=(2,), batch_size=256)
    result = train(config, tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    assert run.config == config and not run.model.training
    for key, value in result.model.state_dict().items():
        assert torch.equal(value, run.model.state_dict()[key]), key
    assert run.data.test_images.dtype == torch.float32
    reseeded = load_run(tmp_path / "run", seed=1)
    assert not torch.equal(reseeded.data.test_labels, run.data.test_labels)


def test_load_run_names_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    with pytest.raises(ValueError, match=r"not a finished sparsecnn train run: config\.json "
                                         r"is missing"):
        load_run(tmp_path / "run")
    (tmp_path / "run" / "config.json").write_text(json.dumps({"config": {"model": "nope"}}))
    (tmp_path / "run" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="is not a sparsecnn train configuration"):
        load_run(tmp_path / "run")
    (tmp_path / "run" / "config.json").write_text(json.dumps({"config": {"epochs": 1}}))
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        load_run(tmp_path / "run")
