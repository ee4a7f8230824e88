"""A surrogate gradient (BPDA) for the constructed network of docs/theory.md B.3.

The constructed detector ``h_j = clamp((s_j - theta_lo) / (theta_hi - theta_lo), 0, 1)`` of the
score ``s_j = <2F_j - 1, I[u:u+k]>`` is constant outside its ramp, and under B.1(i)-(ii) no score
lies in the ramp, so the network's input gradient is exactly 0 and PGD cannot move.  Backward
Pass Differentiable Approximation (Athalye, Carlini & Wagner 2018, Sec. 4.1) keeps the forward
pass exact and differentiates a smooth stand-in instead:

    h_j = sigma(4 (s_j - m_j) / g_j) + stopgrad(h_j^exact - sigma(4 (s_j - m_j) / g_j)),

``m_j = (theta_lo + theta_hi) / 2``, ``g_j = theta_hi - theta_lo``: the logistic's slope at
``m_j`` equals the ramp's, ``1 / g_j``, and it never vanishes, so the gradient of the true
object's features points along ``-(2F_j - 1)``, the structured attack's direction.  The AND
units' ReLUs get the same treatment (backward through ``softplus(4x) / 4``), so that the gradient
also reaches the features of objects that are absent, which an attack must complete to change
the label of an image whose own object it has erased.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..features.construct import ConstructedNetwork, _apply

__all__ = ["SmoothReluSurrogate", "SurrogateGradientNetwork"]


def _smooth_relu_hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...],
                      output: torch.Tensor) -> torch.Tensor:
    """``relu(x)`` forward, ``sigmoid(4x)`` backward (the derivative of ``softplus(4x) / 4``)."""
    smooth = torch.nn.functional.softplus(4 * inputs[0]) / 4
    return smooth + (output - smooth).detach()


class SmoothReluSurrogate(nn.Module):
    """BPDA for any ReLU network: a copy of ``model`` whose every ``nn.ReLU`` keeps its exact
    output but passes the gradient ``sigmoid(4x)``, so units that are off for an input (a dead
    path, e.g. a class predicted when no detector fires) still carry a gradient."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        self.model = copy.deepcopy(model)
        relus = [m for m in self.model.modules() if isinstance(m, nn.ReLU)]
        if not relus:
            raise ValueError("model has no nn.ReLU module to give a surrogate gradient")
        for module in relus:
            module.register_forward_hook(_smooth_relu_hook)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


class SurrogateGradientNetwork(nn.Module):
    """``network``'s exact outputs with the BPDA backward pass of the module docstring (binary
    templates: the detector ``Conv2d(1, 2N) -> ReLU -> Conv2d(2N, N, 1)`` of
    :func:`sparsecnn.features.construct`)."""

    def __init__(self, network: ConstructedNetwork) -> None:
        super().__init__()
        if not isinstance(network, ConstructedNetwork):
            raise TypeError(f"network must be a ConstructedNetwork; got "
                            f"{type(network).__name__}")
        layers = list(network.detector)
        if (len(layers) != 3 or not isinstance(layers[0], nn.Conv2d)
                or not isinstance(layers[1], nn.ReLU) or not isinstance(layers[2], nn.Conv2d)):
            raise ValueError("network must have the binary-template detector Conv2d -> ReLU -> "
                             "Conv2d (a real-valued-template world has no surrogate here)")
        self.network = network
        match = layers[0]
        n = layers[2].out_channels
        with torch.no_grad():
            low, high = -match.bias[:n], -match.bias[n:]
            self.register_buffer("kernels", match.weight[:n].clone())
            self.register_buffer("middle", ((low + high) / 2).clone())
            self.register_buffer("gap", (high - low).clamp_min(1e-12).clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        network = self.network
        inputs = network._input(images)
        exact = network.detector(inputs)
        scores = torch.nn.functional.conv2d(inputs, self.kernels)
        smooth = torch.sigmoid(4 * (scores - self.middle[:, None, None])
                               / self.gap[:, None, None])
        current = smooth + (exact - smooth).detach()
        for layer in network.hierarchy:
            if isinstance(layer, nn.ReLU):
                # the AND units are off for every object not present, which blocks the path
                # towards another class; softplus(4x)/4 passes a gradient sigmoid(4x) there
                smooth = torch.nn.functional.softplus(4 * current) / 4
                current = smooth + (torch.relu(current) - smooth).detach()
            else:
                current = _apply(layer, current)
        return network.classifier(current)
