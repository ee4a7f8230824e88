"""The zero-error network of docs/theory.md B.3 ([P2], construction [reconstructed]).

Layer by layer, with plain PyTorch layers so the network can be inspected, exported and
fine-tuned:

1. Template matching.  Binary templates: kernel K_j = 2F_j - 1, score s_j(u) = <K_j, I[u:u+k]>,
   clipped ramp h_j = [ReLU(s_j - theta_lo) - ReLU(s_j - theta_hi)] / (theta_hi - theta_lo) with
   theta_lo = |F_j|_1 - Delta + k^2 eps, theta_hi = |F_j|_1 - k^2 eps (Delta = 1).  Real-valued
   templates: d_j(u) = sum |I[u:u+k] - F_j| from 2k^2 ReLU units per template
   (|z| = ReLU(z) + ReLU(-z)), then h_j = [ReLU(tau_hi - d_j) - ReLU(tau_lo - d_j)] /
   (tau_hi - tau_lo), tau_lo = k^2 eps, tau_hi = Delta - k^2 eps.  h_j is exactly 1 on a noisy
   occurrence and exactly 0 elsewhere under B.1(i)-(ii).
2. Displacement tolerance: MaxPool2d(2 delta + 1, stride 1, padding delta) per level.
3. AND: one Conv2d output channel per configuration, weight 1 at (child, offset), bias
   -(m - 1), ReLU: g(u) = ReLU(sum_r P_(c_r)(u + o_r) - (m - 1)).  When all offsets of a level
   are multiples of a step (true for every randomly drawn world) the kernel is stored dilated
   by that step: the same function with far fewer multiplications.
4. Global max-pool: z_O = max_u g_O(u).
5. OR / logits: Linear with score_c = sum_(O in class c) z_O.
Steps 2-3 repeat for every configuration level.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

from .well_posedness import WellPosednessWarning
from .world import FeatureWorld

__all__ = ["ConstructedNetwork", "construct"]

MINIMUM_GAP = 1e-6


class ConstructedNetwork(nn.Module):
    """The B.3 network: ``detector`` (template matching, clipped ramp), ``hierarchy`` (per level
    MaxPool2d -> Conv2d AND -> ReLU, then global max-pool and flatten) and ``classifier``
    (Linear OR).  Inputs are cast to the weights' dtype (float64 by default, so that scores are
    exact to ~1e-15).

    Attributes:
        detector_gap: theta_hi - theta_lo (smallest over templates); a detector score moves by
            at most ``detector_norm * rho`` under an L-inf perturbation rho.
        detector_norm: k^2.
        leaves_per_object: number of level-1 features in the largest object (A).
        variants_per_class: most objects of one class (V).
    """

    def __init__(self, detector: nn.Sequential, hierarchy: nn.Sequential, classifier: nn.Linear,
                 *, detector_gap: float, detector_norm: float, leaves_per_object: int,
                 variants_per_class: int, well_posed: bool) -> None:
        super().__init__()
        self.detector = detector
        self.hierarchy = hierarchy
        self.classifier = classifier
        self.detector_gap = detector_gap
        self.detector_norm = detector_norm
        self.leaves_per_object = leaves_per_object
        self.variants_per_class = variants_per_class
        self.well_posed = well_posed

    @property
    def dtype(self) -> torch.dtype:
        return self.classifier.weight.dtype

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor; got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"images must have shape (n, 1, H, W); got {tuple(images.shape)}")
        return images.to(device=self.classifier.weight.device, dtype=self.dtype)

    def detection_maps(self, images: torch.Tensor) -> torch.Tensor:
        """h_j(u) for every template j: (n, N, H - k + 1, W - k + 1)."""
        return self.detector(self._input(images))

    def level_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """h, then the AND maps g of every configuration level (before global pooling)."""
        maps = [self.detection_maps(images)]
        current = maps[0]
        for layer in self.hierarchy:
            current = _apply(layer, current)
            if isinstance(layer, nn.ReLU):
                maps.append(current)
        return maps

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        current = self.detector(self._input(images))
        for layer in self.hierarchy:
            current = _apply(layer, current)
        return self.classifier(current)


def _apply(layer: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``layer(inputs)``, with stride-1 max-pools computed as separable running maxima.

    PyTorch's CPU kernel for stride-1 max-pooling is several times slower than 2(2 delta)
    elementwise maxima of shifted views; the values are identical (max is exact)."""
    if isinstance(layer, nn.MaxPool2d):
        kernel, stride, padding = layer.kernel_size, layer.stride, layer.padding
        if (isinstance(kernel, int) and stride in (1, (1, 1)) and isinstance(padding, int)
                and kernel == 2 * padding + 1 and layer.dilation == 1 and not layer.ceil_mode):
            return separable_max_pool(inputs, padding)
    return layer(inputs)


def separable_max_pool(inputs: torch.Tensor, delta: int) -> torch.Tensor:
    """P(u) = max_{||v - u||_inf <= delta} h(v) (padding -inf), as rows then columns."""
    if delta == 0:
        return inputs
    height, width = inputs.shape[-2:]
    padded = torch.nn.functional.pad(inputs, (delta, delta, delta, delta),
                                     value=float("-inf"))
    rows = padded[..., 0:height, :]
    for shift in range(1, 2 * delta + 1):
        rows = torch.maximum(rows, padded[..., shift:shift + height, :])
    out = rows[..., 0:width]
    for shift in range(1, 2 * delta + 1):
        out = torch.maximum(out, rows[..., shift:shift + width])
    return out


def _binary_detector(world: FeatureWorld, dtype: torch.dtype) -> tuple[nn.Sequential, float]:
    templates = torch.tensor(world.templates, dtype=dtype)
    n, k = world.n_features, world.feature_size
    ones = templates.sum(dim=(1, 2))
    slack = k * k * world.noise
    low = ones - world.separation + slack
    high = ones - slack
    gap = float((high - low).min())
    if gap < MINIMUM_GAP:
        middle = ones - world.separation / 2
        low, high = middle - MINIMUM_GAP / 2, middle + MINIMUM_GAP / 2
    match = nn.Conv2d(1, 2 * n, k, bias=True, dtype=dtype)
    combine = nn.Conv2d(2 * n, n, 1, bias=True, dtype=dtype)
    with torch.no_grad():
        kernels = (2 * templates - 1).unsqueeze(1)
        match.weight.copy_(torch.cat([kernels, kernels]))
        match.bias.copy_(torch.cat([-low, -high]))
        combine.weight.zero_()
        combine.bias.zero_()
        index = torch.arange(n)
        scale = 1.0 / (high - low)
        combine.weight[index, index, 0, 0] = scale
        combine.weight[index, index + n, 0, 0] = -scale
    return nn.Sequential(match, nn.ReLU(), combine), max(gap, 0.0)


def _real_detector(world: FeatureWorld, dtype: torch.dtype) -> tuple[nn.Sequential, float]:
    templates = torch.tensor(world.templates, dtype=dtype)
    n, k = world.n_features, world.feature_size
    units = 2 * k * k
    slack = k * k * world.noise
    low, high = slack, world.separation - slack
    gap = high - low
    if gap < MINIMUM_GAP:
        middle = world.separation / 2
        low, high = middle - MINIMUM_GAP / 2, middle + MINIMUM_GAP / 2
    difference = nn.Conv2d(1, n * units, k, bias=True, dtype=dtype)
    distance = nn.Conv2d(n * units, 2 * n, 1, bias=True, dtype=dtype)
    combine = nn.Conv2d(2 * n, n, 1, bias=True, dtype=dtype)
    with torch.no_grad():
        difference.weight.zero_()
        eye = torch.eye(k * k, dtype=dtype).reshape(k * k, 1, k, k)
        signs = torch.tensor([1.0, -1.0], dtype=dtype)
        weight = (signs[:, None, None, None, None] * eye).reshape(units, 1, k, k)
        difference.weight.copy_(weight.repeat(n, 1, 1, 1))
        values = templates.reshape(n, 1, k * k)
        difference.bias.copy_((-signs[None, :, None] * values).reshape(-1))
        distance.weight.zero_()
        for j in range(n):
            distance.weight[j, j * units:(j + 1) * units] = -1.0
            distance.weight[j + n, j * units:(j + 1) * units] = -1.0
        distance.bias.copy_(torch.cat([torch.full((n,), high, dtype=dtype),
                                       torch.full((n,), low, dtype=dtype)]))
        combine.weight.zero_()
        combine.bias.zero_()
        index = torch.arange(n)
        combine.weight[index, index, 0, 0] = 1.0 / (high - low)
        combine.weight[index, index + n, 0, 0] = -1.0 / (high - low)
    return (nn.Sequential(difference, nn.ReLU(), distance, nn.ReLU(), combine), max(gap, 0.0))


def construct(world: FeatureWorld, *, dtype: torch.dtype = torch.float64,
              device: str | torch.device = "cpu") -> ConstructedNetwork:
    """Build the network of docs/theory.md B.3 for ``world`` with analytically set weights.

    Binary templates get the clipped-ramp detector, real-valued ones the L1 detector; one
    MaxPool2d + AND Conv2d + ReLU per configuration level; global max-pool; Linear OR head.
    If B.1(i) fails (k^2 eps >= Delta/2) the ramp collapses to a step at the midpoint and a
    :class:`WellPosednessWarning` is issued: the network is then not guaranteed to be exact.
    """
    if not isinstance(world, FeatureWorld):
        raise TypeError(f"world must be a FeatureWorld; got {type(world).__name__}")
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64; got {dtype}")
    binary = bool(np.all((world.templates == 0) | (world.templates == 1)))
    detector, gap = (_binary_detector if binary else _real_detector)(world, dtype)
    if gap < MINIMUM_GAP:
        warnings.warn(f"feature_size**2 * noise = {world.feature_size ** 2 * world.noise:.4g} >= "
                      f"separation/2 = {world.separation / 2:.4g}: the clipped ramp has no room "
                      f"(theta_lo >= theta_hi); the network is not guaranteed to be exact",
                      WellPosednessWarning, stacklevel=2)
    layers: list[nn.Module] = []
    n_children = world.n_features
    for level in range(2, world.levels + 1):
        delta = world.displacement[level - 2]
        configurations = world.hierarchy[level - 2]
        # offsets on a lattice (every random world's are): a dilated kernel, same function
        steps = tuple(math.gcd(*[o[axis] for c in configurations for _, o in c]) or 1
                      for axis in (0, 1))
        extent = world.kernel_extent(level)
        kernel = tuple((extent[axis] - 1) // steps[axis] + 1 for axis in (0, 1))
        conv = nn.Conv2d(n_children, len(configurations), kernel, dilation=steps, bias=True,
                         dtype=dtype)
        with torch.no_grad():
            conv.weight.zero_()
            for index, configuration in enumerate(configurations):
                for child, (dy, dx) in configuration:
                    conv.weight[index, child, dy // steps[0], dx // steps[1]] += 1.0
                conv.bias[index] = -(len(configuration) - 1)
        layers += [nn.MaxPool2d(2 * delta + 1, stride=1, padding=delta), conv, nn.ReLU()]
        n_children = len(configurations)
    layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten()]
    classifier = nn.Linear(world.n_objects, world.n_classes, bias=True, dtype=dtype)
    with torch.no_grad():
        classifier.weight.zero_()
        classifier.bias.zero_()
        classifier.weight[torch.as_tensor(world.object_classes),
                          torch.arange(world.n_objects)] = 1.0
    leaves = int((world._tables.leaf_ids >= 0).sum(1).max())
    network = ConstructedNetwork(detector, nn.Sequential(*layers), classifier,
                                 detector_gap=gap, detector_norm=world.detector_norm,
                                 leaves_per_object=leaves,
                                 variants_per_class=int(np.bincount(world.object_classes).max()),
                                 well_posed=world.zero_error_guaranteed and gap >= MINIMUM_GAP)
    network.requires_grad_(False)
    return network.to(device)
