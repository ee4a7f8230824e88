"""from_cnn / to_cnn: exact one-shot conversion, kept layers, round trip, bad input."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsecnn import ConvDictionary, sparse_code
from sparsecnn.nn import (
    AbsorbedReLU,
    HierarchicalSparseCoding,
    SparseCodingClassifier,
    SparseConv2d,
    SparseLinear,
    UnmappedLayerWarning,
    from_cnn,
    to_cnn,
)

DTYPE = torch.float64


@pytest.fixture(autouse=True)
def _seeded_default_initialisation() -> None:
    """Layers built with PyTorch's default initialisation (nn.Conv2d, nn.Linear) are the same
    whatever the test order or worker."""
    torch.manual_seed(0)


class Block(nn.Module):
    """A custom module holding a nested Sequential (conversion must reach inside)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.body(x)


def make_model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
        nn.BatchNorm2d(4),
        Block(),
        nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.Tanh()),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 8), nn.ReLU(),
        nn.Linear(8, 3),
    ).to(DTYPE).eval()


@pytest.fixture
def inputs() -> torch.Tensor:
    return torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=DTYPE)


def test_from_cnn_one_shot_reproduces_outputs_exactly(inputs):
    model = make_model()
    with pytest.warns(UnmappedLayerWarning) as record:
        converted = from_cnn(model)
    message = str(record[0].message)
    for kept in ("2 (BatchNorm2d: no sparse-coding reading)", "4.1 (Tanh", "5 (MaxPool2d",
                 "4.0 (Conv2d: not followed by nn.ReLU inside an nn.Sequential)"):
        assert kept in message
    assert "9 (Linear" not in message  # the logistic-regression head is expected
    assert isinstance(converted[0], SparseConv2d) and isinstance(converted[1], AbsorbedReLU)
    assert isinstance(converted[3].body[0], SparseConv2d)
    assert isinstance(converted[7], SparseLinear) and isinstance(converted[8], AbsorbedReLU)
    assert type(converted[4][0]) is nn.Conv2d  # not followed by ReLU: kept
    with torch.no_grad():
        assert torch.equal(converted(inputs), model(inputs))
    assert list(converted.state_dict()) == list(model.state_dict())
    converted.load_state_dict(model.state_dict())  # the original weights load unchanged
    assert isinstance(model[0], nn.Conv2d)  # the input model is untouched


@pytest.mark.parametrize("method", ["ista", "fista", "lca"])
def test_from_cnn_k_steps_run_sparse_inference(inputs, method):
    model = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU()).to(DTYPE)
    converted = from_cnn(model, n_iter=4, method=method)
    layer = converted[0]
    assert (layer.n_iter, layer.method) == (4, method)
    with torch.no_grad():
        norms = torch.linalg.vector_norm(model[0].weight.flatten(1), dim=1)
        atoms = model[0].weight / norms.view(-1, 1, 1, 1)
        step = 1.0 / layer.lipschitz(inputs.shape[1:])
        result = sparse_code(inputs, ConvDictionary(atoms, 2, 1), -model[0].bias / norms,
                             method=method, nonneg=True, max_iter=4, tol=1e-300,
                             step_size=step, allow_negative_lam=True, warn=False)
        torch.testing.assert_close(converted(inputs), result.codes * norms.view(1, -1, 1, 1),
                                   rtol=1e-12, atol=1e-13)


def test_to_cnn_round_trip(inputs):
    model = make_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnmappedLayerWarning)
        converted = from_cnn(model, n_iter=0)
    plain = to_cnn(converted)
    kinds = {type(module) for module in plain.modules()}
    assert not kinds & {SparseConv2d, SparseLinear, AbsorbedReLU}
    assert isinstance(plain[1], nn.ReLU) and isinstance(plain[3].body[1], nn.ReLU)
    with torch.no_grad():
        assert torch.equal(plain(inputs), model(inputs))
    original = model.state_dict()
    assert list(plain.state_dict()) == list(original)
    for key, value in plain.state_dict().items():
        assert torch.equal(value, original[key]), key


def test_to_cnn_of_unit_norm_layers_and_classifier(inputs):
    features = HierarchicalSparseCoding(
        SparseConv2d(1, 4, 3, stride=2, padding=1, unit_norm=True, dtype=DTYPE),
        SparseConv2d(4, 5, 3, stride=2, padding=1, proper_prior=True, dtype=DTYPE))
    model = SparseCodingClassifier(features, 3, (1, 8, 8))
    model.head.to(DTYPE)
    plain = to_cnn(model)
    assert isinstance(plain, nn.Sequential)
    assert not {type(m) for m in plain.modules()} & {SparseConv2d, SparseLinear}
    with torch.no_grad():
        torch.testing.assert_close(plain(inputs), model(inputs), rtol=0, atol=1e-12)


def test_to_cnn_warns_about_dropped_iterations(inputs):
    converted = from_cnn(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), n_iter=3)
    with pytest.warns(UserWarning, match=r"layer\(s\) 0 use n_iter > 0"):
        plain = to_cnn(converted)
    assert type(plain[0]) is nn.Linear and type(plain[1]) is nn.ReLU


def test_model_without_convertible_layer_is_a_clear_error():
    with pytest.raises(ValueError, match=r"model has no convertible layer.*"
                                         r"\['Conv2d', 'Tanh'\]"):
        from_cnn(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh()))
    with pytest.raises(ValueError, match=r"rejected: 0 \(groups=2\)"):
        from_cnn(nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.ReLU()))
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module; got str"):
        from_cnn("model")


def test_rejected_convolution_is_listed(inputs):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2), nn.ReLU(), nn.Conv2d(2, 2, 1),
                          nn.ReLU()).to(DTYPE)
    with pytest.warns(UnmappedLayerWarning, match=r"0 \(Conv2d: dilation=\(2, 2\)\)"):
        converted = from_cnn(model)
    assert type(converted[0]) is nn.Conv2d and isinstance(converted[2], SparseConv2d)
    with torch.no_grad():
        assert torch.equal(converted(inputs), model(inputs))


def test_to_cnn_refuses_signed_layers():
    with pytest.raises(ValueError, match="nonneg=False"):
        to_cnn(nn.Sequential(SparseLinear(3, 2, nonneg=False)))


def test_converted_layer_matches_functional_relu(inputs):
    conv = nn.Conv2d(1, 3, 2, stride=2).to(DTYPE)
    converted = from_cnn(nn.Sequential(conv, nn.ReLU()))
    with torch.no_grad():
        assert torch.equal(converted(inputs), F.relu(F.conv2d(inputs, conv.weight, conv.bias,
                                                              stride=2)))
