"""Joint multi-layer ISTA and FISTA (Sulam, Aberdam, Beck, Elad 2020, arXiv 1806.00701,
Algorithms ML-ISTA and ML-FISTA; docs/theory.md A.6-A.8.3) for
:class:`~sparsecnn.nn.HierarchicalSparseCoding`.

In unit-atom coordinates (``D_l = W_l/||w_l||``, ``lam_l = -b_l/||w_l||``, ``Gamma_l = ||w_l||
a_l``, step ``eta_l``, ``Gamma_0 = x``), from layered thresholding ``a_l^0 = ReLU(D_l^T
Gamma_{l-1}^0 - lam_l)``, one unfolding is

    top-down:   a_hat_L = z;  a_hat_{l-1} = D_l a_hat_l / ||w_{l-1}||                (l = L..2)
    bottom-up:  a_l^+ = ReLU(a_hat_l - eta_l D_l^T (D_l a_hat_l - Gamma_{l-1}^+) - eta_l lam_l)

with ``z = a_L`` (ML-ISTA) or, for ML-FISTA, ``z = a_L^k + (t_{k-1} - 1)/t_k (a_L^k -
a_L^{k-1})``, ``t_0 = 1``, ``t_k = (1 + sqrt(1 + 4 t_{k-1}^2))/2`` (the first extrapolation is the
identity).  It is run in code coordinates ``Gamma = ||w|| a``, where it reads

    Gamma_hat_{l-1} = conv_transpose(Gamma_hat_l, W_l/||w_l||^2)
    Gamma_l^+ = ReLU(Gamma_hat_l + conv2d(Gamma_{l-1}^+ - conv_transpose(Gamma_hat_l,
                W_l/||w_l||^2), eta_l W_l, bias=eta_l b_l))

(``||w|| D^T y = conv2d(y, W)`` and ``||w|| eta lam = -eta b``), so that every layer costs one
synthesis and one analysis convolution, the bias rides on the convolution, and the synthesis
``conv_transpose(Gamma_hat_l, .)`` of layer ``l >= 2`` is the top-down estimate
``Gamma_hat_{l-1}`` already computed (one transposed convolution per layer and unfolding fewer
than the recurrence as written in the paper's code).

Each stage evaluates its two operators in the fastest exact form (:func:`conv_form`): a kernel
covering the input is a matrix product, a stride dividing kernel and input a stride-1
convolution of the polyphase components; the filters are converted once per forward pass.  The
default step ``eta_l = 1/L_l`` takes ``L_l`` on a geometric grid above the layer's Lipschitz
bound, certified after an optimizer step by warm-started power iteration (from below) and a
perturbation bound (from above) instead of recomputing it
(:func:`~sparsecnn.nn.lipschitz.grid_lipschitz`; docs/theory.md A.8.3).

Relation to Sulam et al.'s ``ML_ISTA_NET``: their unfolding is ``Gamma_l^+ = ReLU(Gamma_hat_l -
W_l^T (W_l Gamma_hat_l - Gamma_{l-1}^+) + b_l)`` with ``Gamma_hat_{l-1} = W_l Gamma_hat_l``, which
is this recurrence with unit-norm filters (``||w_l|| = 1``) and ``eta_l = 1``; their learned step
``c_l`` is ``eta_l``.  With other filter norms the two models differ (theirs synthesises
``Gamma_{l-1} = W_l Gamma_l``, ours ``Gamma_{l-1} = D_l a_l``).  Zero unfoldings is the CNN
forward pass ``Gamma_l = ReLU(W_l Gamma_{l-1} + b_l)`` in both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import SparseConv2d, SparseLinear

__all__ = ["INFERENCES", "Stage", "conv_form", "multi_layer_codes", "polyphase_filters",
           "prepare_stages"]

INFERENCES = ("layered", "ml_ista", "ml_fista")


#: the polyphase form is used up to this many polyphase channels ``C s^2``: measured (batch 64,
#: 2 threads, forward+backward) it is 2x faster than the strided convolution for the 1-channel
#: 28x28 input of the benchmark's first layer, but 1.3-1.4x slower for its 32-channel second
#: layer, where the strided kernels' backward is the better one
POLYPHASE_MAX_CHANNELS = 16


def conv_form(layer: SparseConv2d, signal_shape: tuple[int, ...]) -> str:
    """How a convolutional stage runs its two operators (results equal to rounding):

    * ``"full"``: the kernel covers the whole unpadded input (a ``1 x 1`` output), so the
      correlation is the dense product with the flattened filters (``linear``/``matmul``:
      about 3x faster than ``conv2d``/``conv_transpose2d`` on CPU);
    * ``"polyphase"``: stride ``s`` in both directions, no padding, ``s`` dividing the kernel
      and the input size, at most :data:`POLYPHASE_MAX_CHANNELS` channels ``C s^2``: with
      ``P[k, (c, u, v), i, j] = W[k, c, s i + u, s j + v]`` the strided correlation is
      ``conv2d(pixel_unshuffle(x, s), P)`` (stride 1) and its adjoint is
      ``pixel_shuffle(conv_transpose2d(a, P), s)``: 2-4x faster on CPU than the strided
      ``conv2d``/``conv_transpose2d`` for few input channels;
    * ``"conv"``: ``conv2d``/``conv_transpose2d`` as given.
    """
    height, width = signal_shape[-2:]
    kh, kw = layer.kernel_size
    (sh, sw), (ph, pw) = layer.stride, layer.padding
    if (ph, pw) == (0, 0) and (kh, kw) == (height, width):
        return "full"
    if (ph, pw) == (0, 0) and sh == sw > 1 and kh % sh == 0 and kw % sw == 0 \
            and height % sh == 0 and width % sw == 0 \
            and signal_shape[-3] * sh * sw <= POLYPHASE_MAX_CHANNELS:
        return "polyphase"
    return "conv"


def polyphase_filters(weight: torch.Tensor, stride: int) -> torch.Tensor:
    """``P[k, c s^2 + u s + v, i, j] = W[k, c, s i + u, s j + v]``: the channel order of
    ``pixel_unshuffle(x, s)`` (:func:`conv_form`)."""
    n_filters, channels, kh, kw = weight.shape
    return (weight.reshape(n_filters, channels, kh // stride, stride, kw // stride, stride)
            .permute(0, 1, 3, 5, 2, 4).reshape(n_filters, channels * stride * stride,
                                                 kh // stride, kw // stride))


@dataclass
class Stage:
    """One sparse layer of the recurrence: its weight ``W``, synthesis filters ``W/||w||^2``,
    analysis filters ``eta W`` and bias ``eta b``, and the shape of its input signal.  The
    filters are stored in the layout of the stage's ``form`` (:func:`conv_form`; ``"dense"``
    for a :class:`SparseLinear`), converted once per forward pass, not once per unfolding."""

    layer: SparseConv2d | SparseLinear
    weight: torch.Tensor
    bias: torch.Tensor | None
    synthesis_weight: torch.Tensor
    analysis_weight: torch.Tensor
    analysis_bias: torch.Tensor | None
    signal_shape: tuple[int, ...]
    form: str = "dense"

    @classmethod
    def build(cls, layer: SparseConv2d | SparseLinear, weight: torch.Tensor,
              bias: torch.Tensor | None, synthesis_weight: torch.Tensor,
              step: float | torch.Tensor, signal_shape: tuple[int, ...]) -> Stage:
        form = "dense" if isinstance(layer, SparseLinear) else conv_form(layer, signal_shape)
        analysis_weight = step * weight
        if form == "full":
            synthesis_weight = synthesis_weight.flatten(1)
            analysis_weight = analysis_weight.flatten(1)
        elif form == "polyphase":
            stride = layer.stride[0]
            synthesis_weight = polyphase_filters(synthesis_weight, stride)
            analysis_weight = polyphase_filters(analysis_weight, stride)
        return cls(layer, weight, bias, synthesis_weight, analysis_weight,
                   None if bias is None else step * bias, signal_shape, form)

    def analysis(self, signal: torch.Tensor) -> torch.Tensor:
        """``conv2d(signal, eta W, bias=eta b)`` (``linear`` for a dense layer)."""
        return self.correlate(signal, self.analysis_weight, self.analysis_bias)

    def layer_forward(self, signal: torch.Tensor) -> torch.Tensor:
        """``ReLU(conv2d(signal, W, bias=b))``: the layer's CNN forward pass in the stage's
        form."""
        weight = self.weight
        if self.form == "full":
            weight = weight.flatten(1)
        elif self.form == "polyphase":
            weight = polyphase_filters(weight, self.layer.stride[0])
        return torch.relu_(self.correlate(signal, weight, self.bias))

    def correlate(self, signal: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor | None) -> torch.Tensor:
        """``D^T signal`` for filters ``weight`` in the stage's form, plus ``bias``."""
        if self.form == "dense":
            return F.linear(signal, weight, bias)
        if self.form == "full":
            out = F.linear(signal.reshape(signal.shape[0], -1), weight, bias)
            return out.view(out.shape[0], out.shape[1], 1, 1)
        if self.form == "polyphase":
            return F.conv2d(F.pixel_unshuffle(signal, self.layer.stride[0]), weight, bias)
        return F.conv2d(signal, weight, bias, self.layer.stride, self.layer.padding)

    def synthesis(self, codes: torch.Tensor) -> torch.Tensor:
        """``D_l codes / ||w_l||`` in the shape of the layer's input signal."""
        if self.form == "dense":
            return codes @ self.synthesis_weight
        if self.form == "full":
            return (codes.reshape(codes.shape[0], -1) @ self.synthesis_weight).view(
                codes.shape[0], *self.signal_shape[1:])
        if self.form == "polyphase":
            return F.pixel_shuffle(F.conv_transpose2d(codes, self.synthesis_weight),
                                   self.layer.stride[0])
        layer = self.layer
        height, width = self.signal_shape[-2:]
        kh, kw = layer.kernel_size
        out_h, out_w = codes.shape[-2:]
        # output_padding restores the rows/columns a strided correlation never reached
        extra = (height + 2 * layer.padding[0] - kh - (out_h - 1) * layer.stride[0],
                 width + 2 * layer.padding[1] - kw - (out_w - 1) * layer.stride[1])
        return F.conv_transpose2d(codes, self.synthesis_weight, None, layer.stride,
                                  layer.padding, extra)


def _lipschitz(layer: SparseConv2d | SparseLinear, signal_shape: tuple[int, ...]) -> float:
    """The certified step constant of the joint modes: the smallest point of a geometric grid
    above the layer's ``L`` (:func:`~sparsecnn.nn.lipschitz.grid_lipschitz`), which a few
    warm-started power iterations and a perturbation bound certify after an optimizer step
    without recomputing ``L``."""
    parameters = layer._lipschitz_parameters()
    if isinstance(layer, SparseConv2d) and conv_form(layer, signal_shape) == "full":
        # a kernel covering the unpadded input: the dictionary is the dense matrix of the
        # flattened filters, whose exact norm is cheap (the Fourier bound is loose here)
        return layer._lipschitz.grid(parameters, lambda: layer.atoms().flatten(1), None, None,
                                     signal_shape[1:])
    if isinstance(layer, SparseConv2d):
        return layer._lipschitz.grid(parameters, layer.atoms, layer.stride, layer.padding,
                                     signal_shape[1:])
    return layer._lipschitz.grid(parameters, layer.atoms, None, None, ())


def prepare_stages(modules: Sequence[nn.Module], x: torch.Tensor,
                   steps: Sequence[float | torch.Tensor | None]
                   ) -> tuple[list[Stage], list[torch.Tensor], torch.Tensor]:
    """Layered thresholding (the CNN forward pass) with the per-layer operators of the
    recurrence; ``steps[l]`` is ``eta_l`` (``None``: ``1/L_l`` of the layer for its input
    size).  Returns the stages, the codes ``Gamma_l^0`` and the input after any leading
    ``nn.Flatten``."""
    stages: list[Stage] = []
    codes: list[torch.Tensor] = []
    signal = x
    steps = list(steps)
    for module in modules:
        if isinstance(module, nn.Flatten):
            signal = module(signal)
            continue
        if isinstance(module, SparseLinear):
            signal = signal.reshape(signal.shape[0], -1)
        weight = module.effective_weight()
        bias = module.bias
        scales = torch.linalg.vector_norm(weight.flatten(1), dim=1)
        shape = (-1,) + (1,) * (weight.ndim - 1)
        step = steps[len(stages)]
        if step is None:
            step = 1.0 / _lipschitz(module, tuple(signal.shape))
        synthesis_weight = weight / (scales * scales).view(shape)
        stage = Stage.build(module, weight, bias, synthesis_weight, step, tuple(signal.shape))
        output = stage.layer_forward(signal)
        stages.append(stage)
        codes.append(output)
        signal = output
    if len(stages) != len(steps):
        raise ValueError(f"got {len(steps)} step sizes for {len(stages)} sparse layers")
    return stages, codes, x


def _bottom_up(stages: list[Stage], estimates: list[torch.Tensor], top_synthesis: torch.Tensor,
               x: torch.Tensor) -> list[torch.Tensor]:
    """``Gamma_l^+`` for ``l = 1..L`` from the estimates ``Gamma_hat_l`` (module docstring);
    ``top_synthesis`` is ``conv_transpose(Gamma_hat_1, W_1/||w_1||^2)``."""
    new_codes = []
    signal = x
    for index, (stage, estimate) in enumerate(zip(stages, estimates, strict=True)):
        signal = signal.reshape(stage.signal_shape)
        synthesized = top_synthesis if index == 0 else \
            estimates[index - 1].reshape(stage.signal_shape)
        # the convolution's output is a fresh tensor whose value its backward does not need:
        # adding the estimate and thresholding in place saves two allocations per layer
        update = stage.analysis(signal - synthesized)
        signal = torch.relu_(update.add_(estimate))
        new_codes.append(signal)
    return new_codes


def multi_layer_codes(stages: list[Stage], codes: list[torch.Tensor], x: torch.Tensor,
                      n_unfold: int, accelerated: bool) -> torch.Tensor:
    """``Gamma_L`` after ``n_unfold`` unfoldings of ML-ISTA (``accelerated=False``) or ML-FISTA
    from the layered codes ``codes`` (module docstring)."""
    top = codes[-1]
    previous_top = top
    t = 1.0
    for _ in range(n_unfold):
        if accelerated:
            t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
            beta = (t - 1.0) / t_next
            start = top if beta == 0.0 else top + beta * (top - previous_top)
            t = t_next
        else:
            start = top
        estimates = [start]
        for index in range(len(stages) - 1, 0, -1):
            previous_shape = codes[index - 1].shape
            estimates.insert(0, stages[index].synthesis(estimates[0]).reshape(previous_shape))
        top_synthesis = stages[0].synthesis(estimates[0])
        previous_top = top
        top = _bottom_up(stages, estimates, top_synthesis, x)[-1]
    return top
