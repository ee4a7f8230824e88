"""The shared problem definition (inference/problem.py): the energy, and the two constructors
(validating ``__init__``, trusted ``from_validated``) setting the same fields."""

from __future__ import annotations

import pytest
import torch

import sparsecnn as sc
from sparsecnn.dictionary import ConvDictionary, DenseDictionary
from sparsecnn.inference import SparseCodingProblem
from sparsecnn.nn.functional import LayerProblem


def test_energy_of_infeasible_nonneg_codes_is_infinite(overcomplete_dictionary,
                                                       signals) -> None:
    codes = torch.zeros(6, 128, dtype=torch.float64)
    codes[0, 3] = -1.0
    values = sc.energy(signals, overcomplete_dictionary, codes, 0.1, nonneg=True)
    assert torch.isinf(values[0]) and torch.all(torch.isfinite(values[1:]))
    expected = 0.5 * torch.sum(signals[1:] ** 2, dim=1)
    assert torch.allclose(values[1:], expected, rtol=1e-14)


def _same_fields(trusted: SparseCodingProblem, validated: SparseCodingProblem) -> None:
    assert vars(trusted).keys() == vars(validated).keys()
    for name, value in vars(validated).items():
        other = vars(trusted)[name]
        if isinstance(value, torch.Tensor):
            assert torch.equal(other, value), name
        elif name != "D":
            assert other == value, name


@pytest.mark.parametrize("nonneg", [False, True])
def test_trusted_constructor_sets_every_field_of_the_validating_one(
        overcomplete_dictionary, signals, nonneg) -> None:
    """``from_validated`` and ``LayerProblem`` skip validation, not fields: a field added to
    the problem reaches layers too."""
    lam = torch.full((128,), 0.2, dtype=torch.float64)
    validated = SparseCodingProblem(signals, overcomplete_dictionary, lam, nonneg=nonneg)
    trusted = SparseCodingProblem.from_validated(signals, validated.D, lam, nonneg)
    assert type(trusted) is SparseCodingProblem
    _same_fields(trusted, validated)
    layer = LayerProblem(signals, DenseDictionary(overcomplete_dictionary), lam, nonneg)
    _same_fields(layer, validated)


def test_trusted_constructor_on_a_convolutional_dictionary(generator) -> None:
    weight = torch.randn(4, 2, 3, 3, generator=generator, dtype=torch.float64)
    D = ConvDictionary(weight, stride=2, padding=1).normalized()
    x = torch.randn(3, 2, 9, 9, generator=generator, dtype=torch.float64)
    lam = torch.full((4, 1, 1), 0.1, dtype=torch.float64)
    validated = SparseCodingProblem(x, D, lam, nonneg=True)
    _same_fields(SparseCodingProblem.from_validated(x, D, lam, True), validated)
    _same_fields(LayerProblem(x, D, lam, True), validated)
