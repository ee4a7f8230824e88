"""Online/minibatch dictionary learning (dense and convolutional), LISTA and the atom figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsecnn import ConvDictionary, sparse_code
from sparsecnn.dictlearn import (
    LearnedISTA,
    ista_encoder,
    learn_conv_dictionary,
    learn_dictionary,
    plot_atoms,
)


def planted_problem(nonneg: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Signals with 3 active atoms each out of 30 planted unit atoms in R^20."""
    generator = torch.Generator().manual_seed(seed)
    atoms = torch.randn(20, 30, generator=generator, dtype=torch.float64)
    atoms = atoms / torch.linalg.vector_norm(atoms, dim=0)
    n = 3000
    codes = torch.zeros(n, 30, dtype=torch.float64)
    for row in range(n):
        support = torch.randperm(30, generator=generator)[:3]
        values = torch.rand(3, generator=generator, dtype=torch.float64) + 0.5
        if not nonneg:
            values = values * torch.sign(torch.randn(3, generator=generator,
                                                     dtype=torch.float64))
        codes[row, support] = values
    return codes @ atoms.T, atoms


@pytest.mark.parametrize("inference_method", ["fista", "homotopy"])
@pytest.mark.parametrize("nonneg", [False, True])
def test_planted_dictionary_is_a_stable_fixed_point(nonneg: bool, inference_method: str
                                                    ) -> None:
    """Started from the planted atoms perturbed by noise, learning returns to them."""
    signals, atoms = planted_problem(nonneg)
    generator = torch.Generator().manual_seed(5)
    start = atoms + 0.25 * torch.randn(atoms.shape, generator=generator, dtype=torch.float64) \
        / atoms.shape[0] ** 0.5
    before = (atoms.T @ (start / torch.linalg.vector_norm(start, dim=0))).diagonal()
    result = learn_dictionary(signals, 30, 0.05, nonneg=nonneg, n_steps=40, batch_size=128,
                              seed=1, init=start, inference_method=inference_method)
    learned = result.dictionary
    np.testing.assert_allclose(torch.linalg.vector_norm(learned, dim=0).numpy(), 1.0,
                               atol=1e-12)
    after = (atoms.T @ learned).diagonal()
    assert float(before.max()) < 0.99
    assert float(after.min()) >= 0.99
    if nonneg:
        codes = sparse_code(signals[:50], learned, 0.05, method="fista", nonneg=True).codes
        assert float(codes.min()) >= 0.0


@pytest.mark.parametrize("nonneg", [False, True])
def test_learning_from_data_lowers_the_energy(nonneg: bool) -> None:
    signals, atoms = planted_problem(nonneg)
    held_out = signals[2500:]
    start = signals[:30].T / torch.linalg.vector_norm(signals[:30], dim=1)
    result = learn_dictionary(signals[:2500], 30, 0.05, nonneg=nonneg, n_steps=60,
                              batch_size=128, seed=1, init=start)

    def energy(dictionary: torch.Tensor) -> float:
        return float(sparse_code(held_out, dictionary, 0.05, method="fista", nonneg=nonneg,
                                 max_iter=2000, tol=1e-8).energy.mean())

    assert energy(result.dictionary) < 0.75 * energy(start)
    assert energy(atoms) < energy(result.dictionary)  # the planted atoms are better still


@pytest.mark.parametrize("nonneg", [False, True])
def test_exact_codes_equal_tightly_converged_fista(nonneg: bool) -> None:
    """The homotopy's exact codes and FISTA run to 1e-12 give the same dictionary steps."""
    signals, _ = planted_problem(nonneg, seed=4)
    common = {"nonneg": nonneg, "n_steps": 4, "batch_size": 64, "seed": 2}
    exact = learn_dictionary(signals[:400], 12, 0.1, inference_method="homotopy", **common)
    iterative = learn_dictionary(signals[:400], 12, 0.1, inference_method="fista",
                                 inference_iter=200_000, inference_tol=1e-12, **common)
    torch.testing.assert_close(exact.dictionary, iterative.dictionary, atol=1e-7, rtol=0)
    np.testing.assert_allclose(exact.energy_history, iterative.energy_history, rtol=1e-10)


def test_same_seed_same_dictionary() -> None:
    signals, _ = planted_problem(False, seed=3)
    first = learn_dictionary(signals[:500], 10, 0.1, n_steps=5, batch_size=64, seed=7)
    second = learn_dictionary(signals[:500], 10, 0.1, n_steps=5, batch_size=64, seed=7)
    assert torch.equal(first.dictionary, second.dictionary)


@pytest.mark.parametrize(("arguments", "message"), [
    ({"signals": np.zeros((4, 3, 2))}, r"signals must be a 2-D array \(n_signals, n_features\); "
                                       r"got shape \(4, 3, 2\)"),
    ({"lam": 0.0}, r"lam must be a finite number > 0; got 0\.0"),
    ({"n_atoms": 0}, r"n_atoms must be an integer >= 1; got 0"),
    ({"forget": 1.5}, r"forget must be in \(0, 1\]; got 1\.5"),
    ({"inference_method": "lars"}, r"inference_method must be one of 'fista', 'homotopy'; got "
                                   r"'lars'"),
    ({"init": np.zeros((3, 2))}, r"init has 2 zero-norm atom\(s\)"),
    ({"init": np.ones((2, 2))}, r"init must have shape \(n_features, n_atoms\) = \(3, 2\); got "
                                r"\(2, 2\)"),
    ({"signals": np.array([[np.nan, 0, 0]])}, r"signals must be finite"),
])
def test_bad_input(arguments: dict, message: str) -> None:
    values = {"signals": np.ones((10, 3)), "n_atoms": 2, "lam": 0.1, **arguments}
    with pytest.raises(ValueError, match=message):
        learn_dictionary(values.pop("signals"), values.pop("n_atoms"), values.pop("lam"),
                         n_steps=1, **values)


def test_convolutional_dictionary_learning_lowers_the_energy() -> None:
    generator = torch.Generator().manual_seed(0)
    filters = torch.randn(3, 1, 4, 4, generator=generator, dtype=torch.float64)
    filters = filters / torch.linalg.vector_norm(filters.flatten(1), dim=1).view(-1, 1, 1, 1)
    spikes = (torch.rand(40, 3, 9, 9, generator=generator, dtype=torch.float64) < 0.06) * \
        (torch.rand(40, 3, 9, 9, generator=generator, dtype=torch.float64) + 0.5)
    images = ConvDictionary(filters).synthesis(spikes, (40, 1, 12, 12))
    held_out = images[30:]

    def held_out_energy(bank: torch.Tensor) -> float:
        return float(sparse_code(held_out, ConvDictionary(bank), 0.05, method="fista",
                                 nonneg=True, max_iter=300, tol=1e-6, warn=False).energy.mean())

    random_start = torch.randn(3, 1, 4, 4, generator=generator, dtype=torch.float64)
    result = learn_conv_dictionary(images[:30], 3, 4, 0.05, nonneg=True, n_steps=20,
                                   batch_size=10, seed=2, init=random_start)
    norms = torch.linalg.vector_norm(result.filters.flatten(1), dim=1)
    torch.testing.assert_close(norms, torch.ones(3, dtype=torch.float64), atol=1e-12, rtol=0)
    unit_start = random_start / torch.linalg.vector_norm(random_start.flatten(1), dim=1).view(
        -1, 1, 1, 1)
    assert held_out_energy(result.filters) < 0.7 * held_out_energy(unit_start)
    # started near the planted filters, learning returns to them
    near = filters + 0.3 * torch.randn(filters.shape, generator=generator,
                                       dtype=torch.float64) / 4
    near_unit = near / torch.linalg.vector_norm(near.flatten(1), dim=1).view(-1, 1, 1, 1)
    refined = learn_conv_dictionary(images[:30], 3, 4, 0.05, nonneg=True, n_steps=10,
                                    batch_size=10, seed=2, init=near)
    before = (filters.flatten(1) * near_unit.flatten(1)).sum(1)
    after = (filters.flatten(1) * refined.filters.flatten(1)).sum(1)
    assert float(after.min()) >= 0.98
    assert float((after - before).min()) > 0


def test_convolutional_bad_input() -> None:
    with pytest.raises(ValueError, match=r"images must be 4-D \(n_images, C, H, W\); got shape "
                                         r"\(2, 8, 8\)"):
        learn_conv_dictionary(np.ones((2, 8, 8)), 2, 3, 0.1)
    with pytest.raises(ValueError, match=r"kernel_size must fit the padded images of size "
                                         r"\(8, 8\); got 9"):
        learn_conv_dictionary(np.ones((2, 1, 8, 8)), 2, 9, 0.1)


@pytest.mark.parametrize("nonneg", [False, True])
def test_untrained_lista_is_ista(nonneg: bool) -> None:
    """Reference: plain numpy ISTA from zero with step 1/||D||_2^2 (computed by SVD)."""
    rng = np.random.default_rng(0)
    dictionary = rng.standard_normal((16, 40))
    dictionary /= np.linalg.norm(dictionary, axis=0)
    signals = rng.standard_normal((7, 16))
    lam, steps = 0.2, 3
    lipschitz = np.linalg.norm(dictionary, 2) ** 2
    codes = np.zeros((7, 40))
    for _ in range(steps):
        value = codes - (codes @ dictionary.T - signals) @ dictionary / lipschitz
        codes = np.maximum(value - lam / lipschitz, 0) if nonneg else \
            np.sign(value) * np.maximum(np.abs(value) - lam / lipschitz, 0)
    encoded = ista_encoder(torch.from_numpy(signals), torch.from_numpy(dictionary), lam, steps,
                           nonneg=nonneg)
    np.testing.assert_allclose(encoded.numpy(), codes, atol=1e-10)


def test_lista_training_beats_ista() -> None:
    rng = np.random.default_rng(1)
    dictionary = torch.from_numpy(rng.standard_normal((16, 32)))
    dictionary = dictionary / torch.linalg.vector_norm(dictionary, dim=0)
    signals = torch.from_numpy(rng.standard_normal((600, 16)))
    targets = sparse_code(signals, dictionary, 0.3, method="fista", max_iter=5000,
                          tol=1e-10).codes
    torch.manual_seed(0)
    model = LearnedISTA(dictionary, 0.3, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(200):
        loss = ((model(signals[:500]) - targets[:500]) ** 2).sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        lista = float(((model(signals[500:]) - targets[500:]) ** 2).sum(1).mean())
    ista = float(((ista_encoder(signals[500:], dictionary, 0.3, 3) - targets[500:]) ** 2)
                 .sum(1).mean())
    assert lista < 0.8 * ista
    with pytest.raises(ValueError, match=r"signals must have shape \(batch, 16\); got \(2, 5\)"):
        model(torch.zeros(2, 5, dtype=torch.float64))


def test_plot_atoms_draws_every_atom() -> None:
    figure = plot_atoms(np.eye(64)[:, :10], (8, 8), title="ten atoms")
    assert sum(len(axis.images) for axis in figure.axes) == 10
    filters = plot_atoms(torch.ones(6, 3, 5, 5), (5, 5))
    assert sum(len(axis.images) for axis in filters.axes) == 6
    with pytest.raises(ValueError, match=r"dictionary has 10 rows; patch_shape \(8, 8\) needs 64"):
        plot_atoms(np.ones((10, 2)), (8, 8))
