"""The interpretation says what each layer is (docs/theory.md A.7) and why a number is missing.

A CNN is hierarchical sparse coding *plus logistic regression*: the last affine map, with no
ReLU after it, is the classifier softmax(Wz + b), so its bias carries no prior verdict.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from sparsecnn.interpret import LOGISTIC_HEAD, SPARSE_CODING, interpret

DTYPE = torch.float64


def two_layer(first_bias: float, head_bias: float) -> nn.Sequential:
    """Linear(1 -> 2) with atoms +1 and -1 (a non-negative combination a = (t, t) lies in the
    null space of D), ReLU, then a linear head."""
    hidden, head = nn.Linear(1, 2, dtype=DTYPE), nn.Linear(2, 3, dtype=DTYPE)
    with torch.no_grad():
        hidden.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        hidden.bias.fill_(first_bias)
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        head.bias.fill_(head_bias)
    return nn.Sequential(hidden, nn.ReLU(), head)


@pytest.mark.parametrize("head_bias", [-1.0, 0.0, 2.0])
def test_head_is_logistic_regression_with_no_prior(head_bias: float) -> None:
    x = torch.tensor([[0.5], [-0.25]], dtype=DTYPE)
    report = interpret(two_layer(-0.1, head_bias), x, max_iter=200)
    hidden, head = report.layers
    assert hidden.role == SPARSE_CODING and head.role == LOGISTIC_HEAD
    # the head's positive bias is a class offset, not an improper prior
    assert head.improper_prior_fraction is None and head.flat_prior_fraction is None
    assert head.improper_units == [] and head.energy_gap is None
    assert head.gap_status.startswith("not a sparse-coding layer")
    row = report.table().splitlines()[3]
    assert LOGISTIC_HEAD in row and "n/a (head)" in row and "%" not in row
    data = json.loads(json.dumps(report.to_dict(include_arrays=False)))
    assert [layer["role"] for layer in data["layers"]] == [SPARSE_CODING, LOGISTIC_HEAD]
    # the hidden layer keeps its prior reading: b = -0.1 < 0 is proper for both units
    assert hidden.improper_prior_fraction == 0.0 and hidden.flat_prior_fraction == 0.0


def test_last_layer_followed_by_relu_is_sparse_coding() -> None:
    model = nn.Sequential(nn.Linear(3, 4, dtype=DTYPE), nn.ReLU())
    entry = interpret(model).layers[0]
    assert entry.role == SPARSE_CODING and entry.improper_prior_fraction is not None


def test_table_says_why_the_energy_gap_is_missing() -> None:
    # b = 1 > 0 on atoms +1, -1: E(t, t) = 1/2 x^2 - 2t -> -inf, the energy is unbounded below
    x = torch.tensor([[0.5], [-0.25]], dtype=DTYPE)
    report = interpret(two_layer(1.0, 0.0), x, max_iter=200)
    hidden = report.layers[0]
    assert hidden.energy_gap is None and hidden.gap_status.startswith("unbounded")
    table = report.table()
    assert table.splitlines()[2].split()[-2:] == ["unbounded", "unbounded"]
    assert f"0: {hidden.gap_status}" in table


def test_table_without_inputs_says_so() -> None:
    report = interpret(two_layer(-0.1, 0.0))
    assert "- (no inputs)" in report.table().splitlines()[2]
