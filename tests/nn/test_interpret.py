"""sparsecnn.interpret: numbers against hand computations and independent solvers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from torch import nn

from sparsecnn.interpret import DeadLayerWarning, interpret
from sparsecnn.nn import from_cnn

DTYPE = torch.float64


@pytest.fixture(autouse=True)
def _seeded_default_initialisation() -> None:
    """Layers built with PyTorch's default initialisation (nn.Conv2d, nn.Linear) are the same
    whatever the test order or worker."""
    torch.manual_seed(0)


def haar_bank() -> torch.Tensor:
    bank = torch.tensor([[[1, 1], [1, 1]], [[1, 1], [-1, -1]], [[1, -1], [1, -1]],
                         [[1, -1], [-1, 1]]], dtype=DTYPE) / 2.0
    return bank.unsqueeze(1)


def haar_model(stride: int, biases: list[float]) -> nn.Sequential:
    conv = nn.Conv2d(1, 4, 2, stride=stride, dtype=DTYPE)
    with torch.no_grad():
        conv.weight.copy_(haar_bank())
        conv.bias.copy_(torch.tensor(biases, dtype=DTYPE))
    return nn.Sequential(conv, nn.ReLU())


def analysis_matrix(weight: torch.Tensor, shape: tuple[int, ...], stride: int = 1,
                    padding: int = 0) -> torch.Tensor:
    size = math.prod(shape)
    return torch.autograd.functional.jacobian(
        lambda v: F.conv2d(v.view(1, *shape), weight, stride=stride, padding=padding).flatten(),
        torch.zeros(size, dtype=DTYPE))


def test_thresholds_and_priors_by_hand():
    linear = nn.Linear(2, 5, dtype=DTYPE)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[3, 4], [0, 2], [1, 0], [6, 8], [0, -0.5]]))
        linear.bias.copy_(torch.tensor([-10.0, 0.0, 0.0, 2.0, 3.0]))
    entry = interpret(nn.Sequential(linear, nn.ReLU())).layers[0]
    assert entry.name == "0" and entry.kind == "linear" and entry.followed_by_relu
    assert entry.thresholds.tolist() == [2.0, 0.0, 0.0, -0.2, -6.0]  # -b/||w||
    assert entry.output_scale.tolist() == [5.0, 2.0, 1.0, 10.0, 0.5]
    assert entry.improper_prior_fraction == 0.4 and entry.flat_prior_fraction == 0.4
    assert entry.improper_units == [3, 4]
    torch.testing.assert_close(entry.dictionary, torch.tensor(
        [[0.6, 0.8], [0, 1], [1, 0], [0.6, 0.8], [0, -1]], dtype=DTYPE), rtol=0, atol=1e-15)
    assert entry.coherence == pytest.approx(1.0)  # rows 0 and 3 are the same atom
    gram = entry.dictionary @ entry.dictionary.T
    assert entry.orthogonality_gap == pytest.approx(
        float(torch.linalg.matrix_norm(gram - torch.eye(5, dtype=DTYPE))), rel=1e-12)


def test_haar_stride_two_is_orthogonal_and_one_shot_is_optimal():
    model = haar_model(2, [-0.1, 0.0, 0.2, -0.3])
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    entry = interpret(model, x).layers[0]
    assert entry.orthogonality_gap <= 1e-12
    assert entry.coherence <= 1e-12
    assert entry.orthogonality_signal_shape == (1, 8, 8) and entry.n_atoms == 64
    assert entry.improper_prior_fraction == 0.25 and entry.flat_prior_fraction == 0.25
    assert entry.gap_status == "ok"
    assert abs(entry.energy_gap) <= 1e-10
    assert entry.code_distance <= 1e-8


def test_haar_stride_one_gap_and_coherence_against_explicit_matrix():
    model = haar_model(1, [-0.1, -0.1, -0.1, -0.1])
    x = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(2), dtype=DTYPE)
    entry = interpret(model, x).layers[0]
    analysis = analysis_matrix(haar_bank(), (1, 6, 6))  # rows are atoms (no padding: uncropped)
    gram = analysis @ analysis.T
    identity = torch.eye(gram.shape[0], dtype=DTYPE)
    assert entry.orthogonality_gap == pytest.approx(
        float(torch.linalg.matrix_norm(gram - identity)), rel=1e-10)
    assert entry.coherence == pytest.approx(float((gram - identity).abs().max()), rel=1e-12)
    assert entry.coherence == pytest.approx(0.5, rel=1e-12)
    assert entry.code_distance > 0.05 and entry.energy_gap > 0  # not the sparse code (A.5)


def test_sparse_coding_gap_against_scipy():
    torch.manual_seed(5)
    conv = nn.Conv2d(1, 4, 3, padding=1, dtype=DTYPE)
    with torch.no_grad():
        conv.bias.copy_(-conv.bias.abs() - 0.05)  # proper priors: a bounded energy
    model = nn.Sequential(conv, nn.ReLU())
    x = torch.randn(2, 1, 5, 5, generator=torch.Generator().manual_seed(3), dtype=DTYPE)
    entry = interpret(model, x, max_iter=20000, tol=1e-12).layers[0]
    norms = torch.linalg.vector_norm(conv.weight.detach().flatten(1), dim=1)
    atoms = conv.weight.detach() / norms.view(-1, 1, 1, 1)
    dictionary = analysis_matrix(atoms, (1, 5, 5), padding=1).T.numpy()
    lam = np.repeat((-conv.bias.detach() / norms).numpy(), 25)
    one_shot_energies, optimal_energies, distances = [], [], []
    for signal in x.flatten(1).numpy():
        def energy(a, signal=signal):
            residual = signal - dictionary @ a
            return 0.5 * residual @ residual + lam @ a, -dictionary.T @ residual + lam

        one_shot = np.maximum(dictionary.T @ signal - lam, 0.0)  # ReLU(D^T x - lam)
        reference = minimize(energy, np.zeros(dictionary.shape[1]), jac=True,
                             method="L-BFGS-B", bounds=[(0, None)] * dictionary.shape[1],
                             options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 20000})
        one_shot_energies.append(energy(one_shot)[0])
        optimal_energies.append(reference.fun)
        distances.append(np.linalg.norm(one_shot - reference.x) / np.linalg.norm(reference.x))
    assert entry.one_shot_energy == pytest.approx(np.mean(one_shot_energies), rel=1e-12)
    assert entry.optimal_energy == pytest.approx(np.mean(optimal_energies), rel=1e-8)
    assert entry.energy_gap == pytest.approx(np.mean(one_shot_energies)
                                             - np.mean(optimal_energies), rel=1e-6)
    assert entry.code_distance == pytest.approx(np.mean(distances), rel=1e-4)


def test_converted_model_reads_the_same():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(48, 4)).to(DTYPE)
    x = torch.randn(4, 1, 9, 9, generator=torch.Generator().manual_seed(4), dtype=DTYPE)
    plain = interpret(model, x)
    sparse = interpret(from_cnn(model, n_iter=3), x)
    for a, b in zip(plain.layers, sparse.layers, strict=True):
        assert a.name == b.name
        assert torch.equal(a.thresholds, b.thresholds)
        assert a.orthogonality_gap == b.orthogonality_gap
    assert plain.layers[0].followed_by_relu and not plain.layers[1].followed_by_relu


def test_dead_layer_warns():
    model = haar_model(2, [-100.0, -100.0, -100.0, -100.0])
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    with pytest.warns(DeadLayerWarning, match="make every code zero for the given inputs"):
        entry = interpret(model, x).layers[0]
    assert entry.zero_code_fraction == 1.0


def test_report_serialises_prints_and_draws(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 2))
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    report = interpret(model, x, max_iter=50)
    data = json.loads(json.dumps(report.to_dict()))
    assert [layer["name"] for layer in data["layers"]] == ["0", "3"]
    assert len(data["layers"][0]["thresholds"]) == 4 and data["n_inputs"] == 2
    assert "dictionary" not in report.to_dict(include_arrays=False)["layers"][0]
    text = str(report)
    assert "||DtD-I||_F" in text and text.splitlines()[2].startswith("0 ")
    paths = report.save(tmp_path / "report")
    for name in ("atoms.png", "thresholds.png", "gaps.png"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(paths["report.json"].read_text())["layers"][1]["kind"] == "linear"
    with pytest.raises(ValueError, match="figure_gaps needs a report computed with inputs"):
        interpret(model).figure_gaps()
    with pytest.raises(FileExistsError, match="exists"):
        report.save(tmp_path / "report")


def test_bad_models_are_clear_errors():
    with pytest.raises(ValueError, match="model has no Conv2d/Linear layer to interpret"):
        interpret(nn.Sequential(nn.ReLU()))
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU())
    with torch.no_grad():
        model[0].weight[2].zero_()
    with pytest.raises(ValueError, match=r"layer '0' has 1 zero filter\(s\) \(output units "
                                         r"\[2\]\)"):
        interpret(model)
    with pytest.raises(ValueError, match=r"inputs of shape \(1, 2, 5, 5\) cannot be run"):
        interpret(nn.Sequential(nn.Conv2d(1, 3, 3)), torch.zeros(1, 2, 5, 5))
    with pytest.raises(ValueError, match="groups=2"):
        interpret(nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)))


def test_iterative_layers_report_their_own_gap():
    """A converted layer with n_iter = k: its own code (output / ||w||) is compared with the
    optimum; with k = 1 ISTA step that code is ReLU(D^T x - lam)/L (check 14), and many FISTA
    steps close the gap."""
    torch.manual_seed(1)
    conv = nn.Conv2d(1, 3, 3, padding=1, dtype=DTYPE)
    with torch.no_grad():
        conv.bias.copy_(-conv.bias.abs() - 0.05)
    model = nn.Sequential(conv, nn.ReLU())
    x = torch.randn(2, 1, 5, 5, generator=torch.Generator().manual_seed(2), dtype=DTYPE)
    one_step = interpret(from_cnn(model, n_iter=1), x, max_iter=20000, tol=1e-12).layers[0]
    assert one_step.layer_n_iter == 1
    norms = torch.linalg.vector_norm(conv.weight.detach().flatten(1), dim=1)
    atoms = conv.weight.detach() / norms.view(-1, 1, 1, 1)
    lipschitz = float(torch.linalg.matrix_norm(analysis_matrix(atoms, (1, 5, 5), padding=1),
                                               ord=2) ** 2)
    one_shot = torch.relu(F.conv2d(x, atoms, padding=1) + (conv.bias.detach() / norms).view(
        1, -1, 1, 1))
    expected_codes = one_shot / lipschitz
    optimum_distance = one_step.code_distance  # of the one-shot code
    assert one_step.layer_code_distance != pytest.approx(optimum_distance)
    converged = interpret(from_cnn(model, n_iter=3000, method="fista"), x, max_iter=20000,
                          tol=1e-12).layers[0]
    assert converged.layer_code_distance <= 1e-6 and abs(converged.layer_energy_gap) <= 1e-9
    assert one_step.layer_energy_gap > converged.layer_energy_gap
    # the one-step code itself, checked through its energy against a direct computation
    dictionary = analysis_matrix(atoms, (1, 5, 5), padding=1).T
    lam = (-conv.bias.detach() / norms).repeat_interleave(25)
    codes = expected_codes.flatten(1)
    residual = x.flatten(1) - codes @ dictionary.T
    energy = (0.5 * (residual ** 2).sum(1) + codes @ lam).mean()
    assert one_step.layer_energy_gap == pytest.approx(float(energy) - one_step.optimal_energy,
                                                      rel=1e-9)
