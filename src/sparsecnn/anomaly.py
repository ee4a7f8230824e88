"""Anomaly identification from sparse-coding reconstruction error and energy (Bowren 2021,
arXiv 2108.06622, abstract; docs/theory.md A.1, A.6).

Read as hierarchical sparse coding (docs/theory.md A.6), every layer ``l`` of a CNN codes its input
``Gamma_{l-1}`` with unit-norm atoms ``D_l = W_l / ||w||`` and thresholds ``lam_l = -b_l /
||w||``.  The generative model says how well an input is explained, layer by layer:

* reconstruction error  ``r_l(x) = ||Gamma_{l-1} - D_l a_l||^2`` and its relative form
  ``r_l(x) / ||Gamma_{l-1}||^2`` (insensitive to the input's overall energy);
* energy                ``E+_l(x) = 1/2 ||Gamma_{l-1} - D_l a_l||^2 + sum_i lam_{l,i} a_{l,i}``,

with ``a_l = Gamma_l / ||w||`` the layer's code (one-shot ReLU or k-step inference).  An input
that the dictionaries do not explain (out of distribution) should score high.  The baseline is
the maximum softmax probability (Hendrycks & Gimpel 2017): score ``-max_c p(c | x)``; beside it
the energy score ``-logsumexp_c f_c(x)`` (Liu et al. 2020) and the Mahalanobis score
``min_c (z - mu_c)^T Sigma^{-1} (z - mu_c)`` on penultimate features ``z`` with class means
``mu_c`` and one shared covariance ``Sigma`` fitted on training data (Lee et al. 2018).

With true inference (:func:`inference_scores`) the code is the minimiser
``a*(x) = argmin_{a >= 0} 1/2 ||x - D a||^2 + lam sum a`` of a learned dictionary instead of
a layer's one-shot code, and the scores are the energy ``E(x, a*)`` and the relative error
``||x - D a*||^2 / ||x||^2`` (docs/theory.md A.1, A.3).

Every score here is "higher = more anomalous".  Detection quality is summarised by the AUROC
(the probability that an out-of-distribution input scores above an in-distribution one, ties
counting 1/2: the Mann-Whitney statistic ``U / (n_in n_out)``) and by the false-positive rate
at 95 % true-positive rate (out-of-distribution = positive).

:func:`out_of_distribution_sets` makes offline OOD sets for digits: feature-world images
(docs/theory.md B.1) resized to the digits' size, uniform and Gaussian noise images, inverted digits
and, when given, a held-out digit class.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_batch, check_positive_float, check_positive_int
from .inference import energy
from .nn import SparseConv2d, SparseLinear, UnmappedLayerWarning, from_cnn

__all__ = [
    "anomaly_scores",
    "auroc",
    "detection_table",
    "energy_scores",
    "fit_mahalanobis",
    "fpr_at_tpr",
    "inference_scores",
    "mahalanobis_scores",
    "max_softmax_scores",
    "out_of_distribution_sets",
    "roc_curve",
    "sparse_coding_scores",
]


def _as_model_input(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    parameter = next(iter(model.parameters()), None)
    if parameter is not None and parameter.is_floating_point():
        return images.to(dtype=parameter.dtype, device=parameter.device)
    return images


# -- scores -------------------------------------------------------------------------------------

def max_softmax_scores(model: nn.Module, images: torch.Tensor, batch_size: int = 1024
                       ) -> torch.Tensor:
    """Baseline anomaly score ``-max_c softmax(f(x))_c`` per image (higher = more anomalous)."""
    images = _as_model_input(model, check_batch(images))
    batch_size = check_positive_int(batch_size, "batch_size")
    with torch.no_grad():
        parts = [torch.softmax(model(images[i:i + batch_size]), dim=1).max(1).values
                 for i in range(0, images.shape[0], batch_size)]
    return -torch.cat(parts) if parts else torch.zeros(0, dtype=images.dtype)


def energy_scores(model: nn.Module, images: torch.Tensor, batch_size: int = 1024
                  ) -> torch.Tensor:
    """Energy score ``-logsumexp_c f_c(x)`` per image (temperature 1; higher = more
    anomalous)."""
    images = _as_model_input(model, check_batch(images))
    batch_size = check_positive_int(batch_size, "batch_size")
    with torch.no_grad():
        parts = [-torch.logsumexp(model(images[i:i + batch_size]), dim=1)
                 for i in range(0, images.shape[0], batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=images.dtype)


def fit_mahalanobis(features: torch.Tensor, labels: torch.Tensor, *, ridge: float = 1e-6
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means ``mu_c`` ``(n_classes, d)`` and the precision ``(Sigma + r I)^{-1}`` of the
    shared covariance ``Sigma = 1/n sum_i (z_i - mu_{y_i})(z_i - mu_{y_i})^T`` of training
    features ``z`` ``(n, d)``; ``r = ridge * tr(Sigma)/d`` keeps it invertible."""
    features = check_batch(features, "features").flatten(1).to(torch.float64)
    labels = torch.as_tensor(labels)
    if labels.shape != (features.shape[0],) or labels.dtype.is_floating_point:
        raise ValueError(f"labels must be integer class indices of shape ({features.shape[0]},)"
                         f"; got dtype {labels.dtype} and shape {tuple(labels.shape)}")
    ridge = check_positive_float(ridge, "ridge")
    classes = torch.unique(labels)
    if classes.min() < 0 or len(classes) != int(classes.max()) + 1:
        raise ValueError(f"labels must use every class 0..C-1 at least once; got classes "
                         f"{classes.tolist()}")
    means = torch.stack([features[labels == c].mean(0) for c in classes])
    centred = features - means[labels]
    covariance = centred.T @ centred / features.shape[0]
    shift = ridge * float(torch.trace(covariance)) / covariance.shape[0]
    precision = torch.linalg.inv(covariance + shift * torch.eye(covariance.shape[0],
                                                                 dtype=torch.float64))
    return means, precision


def mahalanobis_scores(features: torch.Tensor, means: torch.Tensor, precision: torch.Tensor
                       ) -> torch.Tensor:
    """``min_c (z - mu_c)^T P (z - mu_c)`` per row of ``features`` (higher = more anomalous),
    ``means`` and ``P`` from :func:`fit_mahalanobis`."""
    features = check_batch(features, "features").flatten(1).to(torch.float64)
    if features.shape[1] != means.shape[1]:
        raise ValueError(f"features must have {means.shape[1]} columns like the fitted means; "
                         f"got {features.shape[1]}")
    difference = features[:, None, :] - means[None, :, :]
    distances = torch.einsum("ncd,de,nce->nc", difference, precision, difference)
    return distances.min(1).values


def inference_scores(dictionary: torch.Tensor, lam: float, signals: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
    """``"energy"`` ``1/2 ||x - D a*||^2 + lam sum a*`` and ``"relative_reconstruction_error"``
    ``||x - D a*||^2 / ||x||^2`` (0/0 counts as 0) of the exact non-negative lasso codes
    ``a*`` of ``signals`` ``(n, d)`` on ``dictionary`` ``(d, n_atoms)`` (homotopy, the
    LARS-lasso path; docs/theory.md A.3)."""
    from .inference import sparse_code

    signals = check_batch(signals, "signals").flatten(1).to(torch.float64)
    lam = check_positive_float(lam, "lam")
    dictionary = torch.as_tensor(dictionary, dtype=torch.float64)
    result = sparse_code(signals, dictionary, lam, method="homotopy", nonneg=True,
                         max_iter=1000, tol=1e-8, warn=True)
    residual = signals - result.codes @ dictionary.T
    error = residual.pow(2).sum(1)
    power = signals.pow(2).sum(1)
    return {"energy": 0.5 * error + lam * result.codes.sum(1),
            "relative_reconstruction_error": error / power.clamp_min(torch.finfo(
                power.dtype).tiny)}


def _sparse_layers(model: nn.Module) -> list[tuple[str, SparseConv2d | SparseLinear]]:
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, (SparseConv2d, SparseLinear))]


def _layer_scores(layer: SparseConv2d | SparseLinear, inputs: torch.Tensor,
                  outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    scales = layer.output_scales().detach()
    lam = layer.thresholds().detach()
    if isinstance(layer, SparseConv2d):
        codes = outputs / scales.view(1, -1, 1, 1)
        dictionary = layer.dictionary()
        reconstruction = dictionary.synthesis(codes, tuple(inputs.shape[1:]))
        lam_shaped = lam.view(-1, 1, 1)
    else:
        flat_inputs = inputs.reshape(-1, inputs.shape[-1])
        codes = outputs.reshape(-1, outputs.shape[-1]) / scales
        dictionary = layer.dictionary()
        reconstruction = dictionary.synthesis(codes)
        inputs, lam_shaped = flat_inputs, lam
    error = (inputs - reconstruction).flatten(1).pow(2).sum(1)
    power = inputs.flatten(1).pow(2).sum(1)
    relative = error / power.clamp_min(torch.finfo(power.dtype).tiny)
    if layer.nonneg:
        values = energy(inputs, dictionary, codes, lam_shaped, nonneg=True,
                        allow_negative_lam=True)
    else:
        values = 0.5 * error + (lam_shaped * codes.abs()).flatten(1).sum(1)
    return error, relative, values


def sparse_coding_scores(model: nn.Module, images: torch.Tensor, batch_size: int = 512
                         ) -> dict[str, torch.Tensor]:
    """Per sparse-coding layer ``l`` (1-based, in forward order): ``"layer{l}.reconstruction
    _error"`` ``||Gamma_{l-1} - D_l a_l||^2``, ``"layer{l}.relative_reconstruction_error"``
    (divided by ``||Gamma_{l-1}||^2``; 0/0 counts as 0) and ``"layer{l}.energy"`` ``E+_l``
    (module docstring), each a tensor ``(n,)``.

    ``model`` may contain :class:`~sparsecnn.nn.SparseConv2d`/:class:`~sparsecnn.nn.SparseLinear`
    layers (any ``n_iter``); a plain CNN is first converted with ``from_cnn(model, n_iter=0)``,
    which computes exactly the same forward pass.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    images = _as_model_input(model, check_batch(images))
    batch_size = check_positive_int(batch_size, "batch_size")
    if not _sparse_layers(model):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnmappedLayerWarning)
            model = from_cnn(model, n_iter=0)
    layers = _sparse_layers(model)
    captured: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    handles = []
    for index, (_, layer) in enumerate(layers):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor,
                 index: int = index) -> None:
            captured.append((index, inputs[0], output))
        handles.append(layer.register_forward_hook(hook))
    results: dict[str, list[torch.Tensor]] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                captured.clear()
                model(images[start:start + batch_size])
                for index, inputs, output in captured:
                    error, relative, values = _layer_scores(layers[index][1], inputs, output)
                    results.setdefault(f"layer{index + 1}.reconstruction_error",
                                       []).append(error)
                    results.setdefault(f"layer{index + 1}.relative_reconstruction_error",
                                       []).append(relative)
                    results.setdefault(f"layer{index + 1}.energy", []).append(values)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: torch.cat(parts) for name, parts in sorted(results.items())}


def anomaly_scores(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`sparse_coding_scores` and ``"max_softmax"`` (:func:`max_softmax_scores`)."""
    scores = sparse_coding_scores(model, images)
    scores["max_softmax"] = max_softmax_scores(model, images)
    return scores


# -- detection metrics --------------------------------------------------------------------------

def _scores(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of scores; got shape "
                         f"{array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite; got {int((~np.isfinite(array)).sum())} "
                         "NaN/Inf scores")
    return array


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their positions."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2.0  # mean of start+1 .. end
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auroc(in_scores: Any, out_scores: Any) -> float:
    """Area under the ROC curve with out-of-distribution as the positive class:
    ``P(s_out > s_in) + P(s_out = s_in)/2 = (R_out - n_out (n_out + 1)/2) / (n_in n_out)``,
    ``R_out`` the sum of the out-of-distribution scores' average ranks in the pooled sample."""
    inside = _scores(in_scores, "in_scores")
    outside = _scores(out_scores, "out_scores")
    ranks = _average_ranks(np.concatenate([inside, outside]))
    n_in, n_out = len(inside), len(outside)
    rank_sum = ranks[n_in:].sum()
    return float((rank_sum - n_out * (n_out + 1) / 2.0) / (n_in * n_out))


def fpr_at_tpr(in_scores: Any, out_scores: Any, tpr: float = 0.95) -> float:
    """False-positive rate at the largest threshold ``t`` whose true-positive rate
    ``#{s_out >= t} / n_out`` is at least ``tpr``: ``#{s_in >= t} / n_in``."""
    inside = _scores(in_scores, "in_scores")
    outside = _scores(out_scores, "out_scores")
    tpr = check_positive_float(tpr, "tpr")
    if tpr > 1:
        raise ValueError(f"tpr must be in (0, 1]; got {tpr!r}")
    needed = math.ceil(round(tpr * len(outside), 9))
    threshold = np.sort(outside)[::-1][needed - 1]
    return float(np.mean(inside >= threshold))


def roc_curve(in_scores: Any, out_scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` at every distinct threshold (decreasing), starting at ``(0, 0)``."""
    inside = _scores(in_scores, "in_scores")
    outside = _scores(out_scores, "out_scores")
    thresholds = np.unique(np.concatenate([inside, outside]))[::-1]
    sorted_in, sorted_out = np.sort(inside), np.sort(outside)
    above_in = len(inside) - np.searchsorted(sorted_in, thresholds, side="left")
    above_out = len(outside) - np.searchsorted(sorted_out, thresholds, side="left")
    fpr = np.r_[0.0, above_in / len(inside)]
    tpr = np.r_[0.0, above_out / len(outside)]
    return fpr, tpr


def detection_table(in_scores: Mapping[str, Any], out_scores: Mapping[str, Mapping[str, Any]],
                    tpr: float = 0.95) -> dict[str, dict[str, dict[str, float]]]:
    """``table[ood_set][score] = {"auroc": ..., "fpr_at_95_tpr": ...}`` for every score name
    present in ``in_scores`` and in each ``out_scores[ood_set]``."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    key = f"fpr_at_{round(100 * tpr)}_tpr"
    for ood_name, scores in out_scores.items():
        table[ood_name] = {}
        for score_name, values in scores.items():
            if score_name not in in_scores:
                raise ValueError(f"out_scores[{ood_name!r}] has score {score_name!r}, which "
                                 f"in_scores lacks; in_scores has {sorted(in_scores)}")
            table[ood_name][score_name] = {
                "auroc": auroc(in_scores[score_name], values),
                key: fpr_at_tpr(in_scores[score_name], values, tpr)}
    return table


# -- out-of-distribution sets -------------------------------------------------------------------

def _feature_world_images(n: int, size: tuple[int, int], seed: int, dtype: torch.dtype
                          ) -> torch.Tensor:
    from .features import preset

    world = preset("default", seed=seed)
    images = world.sample(n, seed=seed).images.to(torch.float64).clamp(0.0, 1.0)
    small = F.adaptive_avg_pool2d(images, size)
    peak = small.flatten(1).max(1).values.clamp_min(1e-12).view(-1, 1, 1, 1)
    return (small / peak).to(dtype)


def out_of_distribution_sets(in_images: torch.Tensor, *, n: int = 300, seed: int = 0,
                             held_out: torch.Tensor | None = None,
                             feature_world: bool = True) -> dict[str, torch.Tensor]:
    """Offline out-of-distribution images shaped like ``in_images`` ``(n, 1, H, W)`` in
    ``[0, 1]``, all drawn from ``seed``:

    * ``"feature_world"``: images of the ``"default"`` feature world (docs/theory.md B.3's 28x28
      example), area-averaged to ``H x W`` and scaled to peak 1;
    * ``"uniform_noise"``: pixels ``U[0, 1]``;
    * ``"gaussian_noise"``: pixels ``N(m, s^2)`` clipped to ``[0, 1]``, ``m``, ``s`` the mean and
      standard deviation of ``in_images``;
    * ``"inverted"``: ``1 - x`` for the first ``n`` in-distribution images;
    * ``"held_out_class"``: ``held_out`` (images of a class the model never saw), if given.
    """
    in_images = check_batch(in_images, "in_images")
    if in_images.ndim != 4 or in_images.shape[1] != 1:
        raise ValueError(f"in_images must have shape (n, 1, H, W); got "
                         f"{tuple(in_images.shape)}")
    n = check_positive_int(n, "n")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    size = (int(in_images.shape[2]), int(in_images.shape[3]))
    dtype = in_images.dtype
    generator = torch.Generator().manual_seed(seed)
    shape = (n, 1, *size)
    sets: dict[str, torch.Tensor] = {}
    if feature_world:
        sets["feature_world"] = _feature_world_images(n, size, seed, dtype)
    sets["uniform_noise"] = torch.rand(shape, generator=generator, dtype=torch.float64).to(dtype)
    mean, std = float(in_images.mean()), float(in_images.std())
    gaussian = mean + std * torch.randn(shape, generator=generator, dtype=torch.float64)
    sets["gaussian_noise"] = gaussian.clamp(0.0, 1.0).to(dtype)
    sets["inverted"] = 1.0 - in_images[:n]
    if held_out is not None:
        held_out = check_batch(held_out, "held_out")
        if tuple(held_out.shape[1:]) != tuple(in_images.shape[1:]):
            raise ValueError(f"held_out must have images shaped {tuple(in_images.shape[1:])} "
                             f"like in_images; got {tuple(held_out.shape[1:])}")
        sets["held_out_class"] = held_out[:n].to(dtype)
    return sets
