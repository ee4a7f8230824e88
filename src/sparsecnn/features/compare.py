"""Trained versus constructed networks (docs/theory.md B.4, B.7 and check 22; [P2] ICLR 2025).

The public review of [P2] says networks trained in the usual way "do not support the
predictions".  This module measures it: the architecture of :func:`construct` (same layers,
shapes and dilations) is re-initialized and trained with Adam on generated images, for several
training-set sizes and seeds, and compared with the constructed network on:

* test accuracy, and sample efficiency (accuracy against training-set size);
* filter similarity: for every template j, max_i cos(W_i, 2F_j - 1) over the learned
  first-layer filters W_i (the constructed network reaches 1 for every j);
* binarity: the fraction of hidden activations (detector maps h and AND maps g) in
  {0} U [0.9, 1.1] after dividing each channel by its largest absolute value on the test set,
  with |value| <= 1e-9 counted as 0 (the constructed network: 100 %);
* localization: each template j is assigned the trained detector channel whose map correlates
  best with j's ground-truth occurrence map (on the first half of the test set); on the second
  half, the fraction of (image, j present) whose channel peaks at a true position of j (exactly,
  and within one pixel).

Nothing here asserts an outcome: the numbers are reported whichever way they fall.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .construct import ConstructedNetwork, construct
from .samples import FeatureSample
from .world import FeatureWorld

__all__ = ["CompareResult", "RunMetrics", "compare", "network_metrics"]

ZERO_TOLERANCE = 1e-9  # |scaled activation| below this counts as 0 (absorbs float rounding)


@dataclass
class RunMetrics:
    """Metrics of one network (trained run or the constructed network)."""

    train_size: int
    seed: int
    accuracy: float
    filter_similarity: list[float]
    binarity: float
    localization_exact: float
    localization_within_one: float
    final_loss: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"train_size": self.train_size, "seed": self.seed, "accuracy": self.accuracy,
                "filter_similarity": self.filter_similarity,
                "mean_filter_similarity": float(np.mean(self.filter_similarity)),
                "binarity": self.binarity, "localization_exact": self.localization_exact,
                "localization_within_one": self.localization_within_one,
                "final_loss": None if np.isnan(self.final_loss) else self.final_loss}


@dataclass
class CompareResult:
    """All runs, the constructed network's metrics, and summaries per training-set size."""

    train_sizes: list[int]
    seeds: list[int]
    runs: list[RunMetrics]
    constructed: RunMetrics
    steps: int
    learned_filters: np.ndarray  # best-matching learned filter per template (largest size, seed 0)
    trained_maps: torch.Tensor   # matched trained detector maps of one test image
    constructed_maps: torch.Tensor
    example_image: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)
    #: the trained networks by (train_size, seed), kept for further evaluation (not serialized)
    networks: dict[tuple[int, int], ConstructedNetwork] = field(default_factory=dict,
                                                                repr=False)

    def accuracy_table(self) -> np.ndarray:
        """(sizes, seeds) test accuracies."""
        table = np.zeros((len(self.train_sizes), len(self.seeds)))
        for run in self.runs:
            table[self.train_sizes.index(run.train_size), self.seeds.index(run.seed)] = \
                run.accuracy
        return table

    def summary(self) -> dict[str, Any]:
        table = self.accuracy_table()
        by_size = {}
        for index, size in enumerate(self.train_sizes):
            runs = [r for r in self.runs if r.train_size == size]
            by_size[str(size)] = {
                "accuracy_mean": float(table[index].mean()),
                "accuracy_sd": float(table[index].std()),
                "mean_filter_similarity": float(np.mean([np.mean(r.filter_similarity)
                                                         for r in runs])),
                "binarity": float(np.mean([r.binarity for r in runs])),
                "localization_exact": float(np.mean([r.localization_exact for r in runs])),
                "localization_within_one": float(np.mean([r.localization_within_one
                                                          for r in runs]))}
        reaching = [size for index, size in enumerate(self.train_sizes)
                    if table[index].mean() >= 0.99]
        return {"by_train_size": by_size,
                "smallest_size_reaching_99_percent": reaching[0] if reaching else None,
                "constructed": self.constructed.to_dict(), "steps": self.steps}

    def to_dict(self) -> dict[str, Any]:
        return {"train_sizes": self.train_sizes, "seeds": self.seeds,
                "runs": [r.to_dict() for r in self.runs], "summary": self.summary(),
                **self.extra}


def _hidden_maps(network: ConstructedNetwork, images: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return network.level_maps(images)


def _binarity(maps: list[torch.Tensor]) -> float:
    inside, total = 0, 0
    for tensor in maps:
        scale = tensor.abs().amax(dim=(0, 2, 3), keepdim=True).clamp_min(1e-12)
        scaled = tensor / scale
        zero = scaled.abs() <= ZERO_TOLERANCE
        inside += int((zero | ((scaled >= 0.9) & (scaled <= 1.1))).sum())
        total += scaled.numel()
    return inside / max(total, 1)


def _filter_similarity(network: ConstructedNetwork, templates: np.ndarray
                       ) -> tuple[list[float], np.ndarray]:
    first = next(m for m in network.detector if isinstance(m, nn.Conv2d))
    weight = first.weight.detach().to(torch.float64)
    k = templates.shape[-1]
    if weight.shape[-1] != k:
        raise ValueError(f"first-layer kernels are {weight.shape[-1]}x{weight.shape[-1]}; "
                         f"templates are {k}x{k}")
    filters = weight[:, 0].reshape(len(weight), -1)
    kernels = torch.tensor(2 * templates - 1, dtype=torch.float64).reshape(len(templates), -1)
    cos = (torch.nn.functional.normalize(kernels, dim=1)
           @ torch.nn.functional.normalize(filters, dim=1).T)  # (N, filters)
    best = cos.argmax(1)
    return cos.max(1).values.tolist(), weight[best, 0].numpy()


def _occurrence_maps(world: FeatureWorld, sample: FeatureSample) -> torch.Tensor:
    out_h, out_w = world.window_domain
    maps = torch.zeros((len(sample), world.n_features, out_h, out_w))
    ids, positions = sample.truth.feature_ids, sample.truth.feature_positions
    image, slot = np.nonzero(ids >= 0)
    maps[image, ids[image, slot], positions[image, slot, 0], positions[image, slot, 1]] = 1.0
    return maps


def _localization(world: FeatureWorld, detection: torch.Tensor, sample: FeatureSample
                  ) -> tuple[float, float, list[int]]:
    truth = _occurrence_maps(world, sample)
    half = len(sample) // 2
    # channel assignment by correlation on the first half
    centred = detection[:half] - detection[:half].mean(dim=(0, 2, 3), keepdim=True)
    target = truth[:half] - truth[:half].mean(dim=(0, 2, 3), keepdim=True)
    cross = torch.einsum("ncij,nfij->fc", centred.double(), target.double())
    norms = (centred.double().pow(2).sum(dim=(0, 2, 3))[None, :].sqrt()
             * target.double().pow(2).sum(dim=(0, 2, 3))[:, None].sqrt()).clamp_min(1e-12)
    assignment = (cross / norms).argmax(1).tolist()
    exact = within = count = 0
    held_detection, held_truth = detection[half:], truth[half:]
    out_w = held_detection.shape[-1]
    for j, channel in enumerate(assignment):
        present = held_truth[:, j].flatten(1).amax(1) > 0
        if not present.any():
            continue
        flat = held_detection[present, channel].flatten(1)
        peak = flat.argmax(1)
        py, px = peak // out_w, peak % out_w
        true_maps = held_truth[present, j]
        exact += int(true_maps[torch.arange(len(peak)), py, px].sum())
        padded = torch.nn.functional.max_pool2d(true_maps[:, None], 3, stride=1, padding=1)[:, 0]
        within += int(padded[torch.arange(len(peak)), py, px].sum())
        count += len(peak)
    return exact / max(count, 1), within / max(count, 1), assignment


def network_metrics(network: ConstructedNetwork, world: FeatureWorld, test: FeatureSample,
                    *, train_size: int = 0, seed: int = 0) -> tuple[RunMetrics, dict[str, Any]]:
    """Accuracy, filter similarity, binarity and localization of ``network`` on ``test``."""
    network.eval()
    with torch.no_grad():
        predictions = network(test.images).argmax(1)
    maps = _hidden_maps(network, test.images)
    similarity, filters = _filter_similarity(network, world.templates)
    exact, within, assignment = _localization(world, maps[0].float(), test)
    metrics = RunMetrics(train_size=train_size, seed=seed,
                         accuracy=float((predictions == test.labels).float().mean()),
                         filter_similarity=[float(s) for s in similarity],
                         binarity=_binarity(maps), localization_exact=exact,
                         localization_within_one=within)
    return metrics, {"filters": filters, "assignment": assignment, "detection": maps[0]}


def _train(template: ConstructedNetwork, images: torch.Tensor, labels: torch.Tensor, *,
           seed: int, steps: int, batch_size: int, learning_rate: float,
           device: str, bar: Any = None) -> tuple[ConstructedNetwork, float]:
    network = copy.deepcopy(template).to(dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in network.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    network.requires_grad_(True)
    network = network.to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    loss_function = nn.CrossEntropyLoss()
    n = len(images)
    order = torch.randperm(n, generator=generator)
    position = 0
    loss_value = float("nan")
    network.train()
    for _ in range(steps):
        if position + batch_size > n:
            order = torch.randperm(n, generator=generator)
            position = 0
        index = order[position:position + batch_size]
        position += batch_size
        optimizer.zero_grad()
        loss = loss_function(network(images[index].to(device)), labels[index].to(device))
        loss.backward()
        optimizer.step()
        loss_value = float(loss.detach())
        if bar is not None:
            bar.update(1)
    network.eval()
    return network.cpu(), loss_value


def _describe(bar: Any, text: str) -> None:
    if bar is not None:
        bar.set_description_str(text)


def compare(world: FeatureWorld, *, train_sizes: Sequence[int] = (100, 300, 1000, 3000),
            seeds: Sequence[int] = (0, 1, 2), test_size: int = 1000, steps: int = 1500,
            batch_size: int = 32, learning_rate: float = 1e-2, device: str = "cpu",
            progress: bool = False) -> CompareResult:
    """Train the constructed architecture with Adam and compare it with the construction.

    For every seed s a training set of ``max(train_sizes)`` images is drawn with sampling seed
    ``1000 + s`` and its first ``size`` images are used for each size; every run takes
    ``steps`` Adam steps (batch ``batch_size``) from PyTorch's default initialization seeded
    with s.  The test set (``test_size`` images, seed 999) is shared by all runs.
    ``progress`` shows one bar over all the Adam steps, with the phase in its description.
    """
    if not isinstance(world, FeatureWorld):
        raise TypeError(f"world must be a FeatureWorld; got {type(world).__name__}")
    sizes = sorted({int(s) for s in train_sizes})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"train_sizes must be positive integers; got {list(train_sizes)}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must not be empty")
    if test_size < 2:
        raise ValueError(f"test_size must be >= 2; got {test_size}")
    jobs = [(seed, size) for seed in seeds for size in sizes]
    bar: Any = None
    if progress:
        from tqdm.auto import tqdm

        # one bar over every Adam step of every run: the runs are what takes the time
        bar = tqdm(total=len(jobs) * steps, desc="compare: test images", unit="step",
                   leave=False, dynamic_ncols=True)
    constructed = construct(world)
    test = world.sample(test_size, seed=999)
    _describe(bar, "compare: constructed network metrics")
    constructed_metrics, constructed_extra = network_metrics(constructed, world, test)
    runs: list[RunMetrics] = []
    data: dict[int, FeatureSample] = {}
    learned_filters = np.zeros_like(world.templates)
    trained_maps = torch.zeros(0)
    networks: dict[tuple[int, int], ConstructedNetwork] = {}
    for index, (seed, size) in enumerate(jobs):
        if seed not in data:
            _describe(bar, f"compare: sampling {sizes[-1]} training images (seed {seed})")
            data[seed] = world.sample(sizes[-1], seed=1000 + seed)
        train = data[seed]
        _describe(bar, f"compare: run {index + 1}/{len(jobs)} ({size} images, seed {seed})")
        network, loss = _train(constructed, train.images[:size], train.labels[:size], seed=seed,
                               steps=steps, batch_size=min(batch_size, size),
                               learning_rate=learning_rate, device=device, bar=bar)
        metrics, extra = network_metrics(network, world, test, train_size=size, seed=seed)
        metrics.final_loss = loss
        runs.append(metrics)
        networks[(size, seed)] = network
        if seed == seeds[0] and size == sizes[-1]:
            learned_filters = extra["filters"]
            trained_maps = extra["detection"][0, extra["assignment"]].detach()
    if bar is not None:
        bar.close()
    return CompareResult(train_sizes=sizes, seeds=seeds, runs=runs,
                         constructed=constructed_metrics, steps=steps,
                         learned_filters=learned_filters, trained_maps=trained_maps,
                         constructed_maps=constructed_extra["detection"][0].detach(),
                         example_image=test.images[0, 0], networks=networks)
