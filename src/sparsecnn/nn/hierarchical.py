"""Hierarchical sparse coding and the complete model (docs/theory.md A.6-A.7; Papyan, Romano, Elad
2017; Sulam et al. 2018, arXiv 1806.00701).

Layers ``l = 1..L`` with ``Gamma_0 = x``: ``Gamma_{l-1} = D_l Gamma_l + noise``, ``Gamma_l >= 0``,
exponential priors with rates ``lam_l = -b_l/||w_l||``.  Inference is *layered*: each layer
codes the previous layer's output,

    Gamma_l = SparseLayer_l(Gamma_{l-1}),

which with ``n_iter = 0`` everywhere is layered (non-negative soft) thresholding, i.e. the CNN
forward pass ``Gamma_l = ReLU(W_l Gamma_{l-1} + b_l)`` (A.6), and with ``n_iter = k`` is layered
k-step ISTA/FISTA/LCA inference (A.8.2) with the same parameters.

``inference="ml_ista"`` (``"ml_fista"``) runs instead ``n_unfold`` unfoldings of the *joint*
multi-layer ISTA (FISTA) of Sulam, Aberdam, Beck, Elad (arXiv 1806.00701, Algorithms ML-ISTA and
ML-FISTA), in unit-atom coordinates (``D_l = W_l/||w_l||``, ``lam_l = -b_l/||w_l||``, ``Gamma_l =
||w_l|| a_l``, step ``eta_l``), starting from layered thresholding:

    top-down:   a_hat_L = a_L;  a_hat_{l-1} = D_l a_hat_l / ||w_{l-1}||         (l = L..2)
    bottom-up:  a_l^+ = ReLU(a_hat_l - eta_l D_l^T (D_l a_hat_l - Gamma_{l-1}^+) - eta_l lam_l)
                with Gamma_0^+ = x, Gamma_l^+ = ||w_l|| a_l^+;   a_L <- a_L^+

(ML-FISTA extrapolates ``a_L`` before the top-down pass; :mod:`.multilayer`).  The
initialisation is one step of size 1 from zero with threshold ``lam_l`` (the CNN forward pass);
the unfoldings take steps ``eta_l`` with thresholds ``eta_l lam_l``: ``eta_l = 1/L_l`` by default,
``L_l`` the smallest point of the grid ``2^(k/16)`` at or above the layer's
``SparseConv2d.lipschitz`` for its input size (an upper bound on ``||D_l||_2^2`` certified
after each optimizer step without recomputing it;
:func:`~sparsecnn.nn.lipschitz.grid_lipschitz`, docs/theory.md A.8.3), or the model's
``step_size`` (one float, one per sparse layer, or a tensor of them -- an ``nn.Parameter`` is
learned, as Sulam et al.'s ``c_l``).  Sulam et al.'s ``ML_ISTA_NET``
recurrence ``Gamma_l^+ = ReLU(Gamma_hat_l - W_l^T(W_l Gamma_hat_l - Gamma_{l-1}^+) + b_l)`` is the
case of unit-norm filters and ``step_size=1``.  In the joint modes the layers' own ``n_iter``
must be 0 (the joint iteration replaces them; a layer with ``n_iter > 0`` is an error, not
silently ignored) and their ``method`` is not used.
``n_unfold = 0`` is exactly the CNN forward pass.

:class:`SparseCodingClassifier` adds logistic regression ``p(y | Gamma_L) =
softmax(V vec(Gamma_L) + c)`` (A.7): a CNN without normalisation or pooling (strided
convolutions allowed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._checks import check_choice, check_positive_float
from .functional import METHODS, check_n_iter
from .layers import SparseConv2d, SparseLinear
from .multilayer import INFERENCES, multi_layer_codes, prepare_stages

__all__ = ["HierarchicalSparseCoding", "SparseCodingClassifier"]

_ALLOWED = (SparseConv2d, SparseLinear, nn.Flatten)


class HierarchicalSparseCoding(nn.Sequential):
    """A stack of :class:`SparseConv2d` / :class:`SparseLinear` layers (``nn.Flatten`` allowed
    between convolutional and dense layers), any depth, with layered inference.

    It is an ``nn.Sequential`` (state-dict keys ``"0.weight"``, ``"0.bias"``, ...), so a plain
    ``nn.Sequential`` of ``Conv2d``/``ReLU`` pairs converted by :func:`sparsecnn.nn.from_cnn`
    has the same parameters.
    """

    def __init__(self, *layers: nn.Module, inference: str = "layered",
                 n_unfold: int = 0, step_size: float | Sequence[float] | torch.Tensor | None
                 = None) -> None:
        if len(layers) == 1 and isinstance(layers[0], Sequence):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("HierarchicalSparseCoding needs at least one layer; got none")
        for index, layer in enumerate(layers):
            if not isinstance(layer, _ALLOWED):
                raise TypeError(
                    f"layer {index} must be a SparseConv2d, SparseLinear or nn.Flatten (no "
                    f"normalisation or pooling in the sparse-coding model); got "
                    f"{type(layer).__name__}")
        if not any(isinstance(layer, (SparseConv2d, SparseLinear)) for layer in layers):
            raise ValueError("HierarchicalSparseCoding needs at least one sparse layer")
        super().__init__(*layers)
        self.inference = inference
        self.n_unfold = n_unfold
        self._set_step_size(step_size)
        self._check_inference()

    def _set_step_size(self, step_size: float | Sequence[float] | torch.Tensor | None) -> None:
        n_layers = len(self.sparse_layers)
        if step_size is None or isinstance(step_size, torch.Tensor):
            self.step_size = step_size  # an nn.Parameter is registered (and learned)
            return
        if isinstance(step_size, Sequence) and not isinstance(step_size, str):
            values = [check_positive_float(v, "step_size") for v in step_size]
            if len(values) != n_layers:
                raise ValueError(f"step_size must be one number or {n_layers} (one per sparse "
                                 f"layer); got {len(values)}")
            self.step_size = values
        else:
            self.step_size = check_positive_float(step_size, "step_size")

    def _steps(self) -> list[float | torch.Tensor | None]:
        """``eta_l`` per sparse layer: the model's step_size, else the layer's, else ``None``
        (``1/L_l``)."""
        layers = self.sparse_layers
        step = self.step_size
        if step is None:
            return [layer.step_size for layer in layers]
        if isinstance(step, torch.Tensor):
            if step.ndim > 1 or (step.ndim == 1 and step.shape[0] not in (1, len(layers))):
                raise ValueError(f"step_size must be a scalar tensor or hold {len(layers)} "
                                 f"values (one per sparse layer); got shape {tuple(step.shape)}")
            if not bool((step.detach() > 0).all()) or not bool(torch.isfinite(step).all()):
                raise ValueError("step_size must be finite and > 0 (a learned step left the "
                                 f"feasible range?); got {step.detach().tolist()}")
            flat = step.reshape(-1)
            return [flat[0] if flat.shape[0] == 1 else flat[i] for i in range(len(layers))]
        if isinstance(step, list):
            return list(step)
        return [step] * len(layers)

    def _check_inference(self) -> None:
        check_choice(self.inference, "inference", INFERENCES)
        n_unfold = self.n_unfold
        if isinstance(n_unfold, bool) or not isinstance(n_unfold, int) or n_unfold < 0:
            raise ValueError(f"n_unfold must be an integer >= 0; got {n_unfold!r}")
        if self.inference == "layered":
            return
        for index, layer in enumerate(self.sparse_layers):
            if not layer.nonneg:
                raise ValueError(f"inference={self.inference!r} needs nonneg=True layers; "
                                 f"sparse layer {index} has nonneg=False")
            if layer.n_iter != 0:
                raise ValueError(
                    f"inference={self.inference!r} runs the joint iteration instead of the "
                    f"layers' own: sparse layer {index} has n_iter={layer.n_iter}; set "
                    f"n_iter=0 (n_unfold sets the joint unfoldings) or use "
                    f"inference='layered'")

    def extra_repr(self) -> str:
        step = "" if self.step_size is None or isinstance(self.step_size, torch.Tensor) else \
            f", step_size={self.step_size}"
        return f"inference={self.inference!r}, n_unfold={self.n_unfold}{step}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_inference()
        if self.inference == "layered":
            return super().forward(x)
        if self.n_unfold == 0:  # the CNN forward pass: no step size is needed
            return super().forward(x)
        stages, codes, x = prepare_stages(list(self), x, self._steps())
        return multi_layer_codes(stages, codes, x, self.n_unfold,
                                 accelerated=self.inference == "ml_fista")

    @classmethod
    def convolutional(cls, channels: Sequence[int], kernel_size: int | Sequence[int] = 3,
                      stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0, *,
                      inference: str = "layered", n_unfold: int = 0,
                      step_size: float | Sequence[float] | torch.Tensor | None = None,
                      **options: Any) -> HierarchicalSparseCoding:
        """``len(channels) - 1`` convolutional layers ``channels[l] -> channels[l+1]``;
        ``kernel_size``, ``stride``, ``padding`` are one value or one per layer; ``inference``,
        ``n_unfold`` and ``step_size`` are the model's (class docstring); ``options``
        (``n_iter``, ``method``, ``proper_prior``, ``unit_norm``, ``generator``, ...) go to
        every layer."""
        depth = len(channels) - 1
        if depth < 1:
            raise ValueError(f"channels must list at least 2 channel counts; got {channels!r}")

        def per_layer(value: Any, name: str) -> list[Any]:
            if isinstance(value, Sequence) and not isinstance(value, str):
                if len(value) != depth:
                    raise ValueError(f"{name} must be one value or {depth} values (one per "
                                     f"layer); got {value!r}")
                return list(value)
            return [value] * depth

        kernels = per_layer(kernel_size, "kernel_size")
        strides = per_layer(stride, "stride")
        paddings = per_layer(padding, "padding")
        return cls(*[SparseConv2d(channels[i], channels[i + 1], kernels[i], strides[i],
                                  paddings[i], **options) for i in range(depth)],
                   inference=inference, n_unfold=n_unfold, step_size=step_size)

    @property
    def sparse_layers(self) -> list[SparseConv2d | SparseLinear]:
        return [m for m in self if isinstance(m, (SparseConv2d, SparseLinear))]

    def set_inference(self, n_iter: int | None = None, method: str | None = None) -> None:
        """Set ``n_iter`` and/or ``method`` of every layer (same parameters, other inference)."""
        if n_iter is not None:
            n_iter = check_n_iter(n_iter)
        if method is not None:
            check_choice(method, "method", METHODS)
        for layer in self.sparse_layers:
            if n_iter is not None:
                layer.n_iter = n_iter
            if method is not None:
                layer.method = method

    def codes(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's code ``Gamma_1 .. Gamma_L`` (outputs of the sparse layers)."""
        result = []
        for module in self:
            x = module(x)
            if isinstance(module, (SparseConv2d, SparseLinear)):
                result.append(x)
        return result


class SparseCodingClassifier(nn.Module):
    """Hierarchical sparse coding + logistic regression (docs/theory.md A.7):
    ``logits = V vec(Gamma_L(x)) + c``, ``p(y | x) = softmax(logits)``.

    ``features`` is a :class:`HierarchicalSparseCoding` (or a sequence of its layers);
    ``input_shape`` is one input's shape (e.g. ``(1, 8, 8)``) to size the head.
    Training minimises the cross-entropy of ``forward``'s logits over all parameters.
    """

    def __init__(self, features: HierarchicalSparseCoding | Sequence[nn.Module],
                 n_classes: int, input_shape: Sequence[int],
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not isinstance(features, HierarchicalSparseCoding):
            features = HierarchicalSparseCoding(*features)
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"n_classes must be an integer >= 2; got {n_classes!r}")
        self.features = features
        self.input_shape = tuple(int(s) for s in input_shape)
        first = features.sparse_layers[0]
        with torch.no_grad():
            probe = torch.zeros((1, *self.input_shape), dtype=first.weight.dtype,
                                device=first.weight.device)
            saved = [layer.n_iter for layer in features.sparse_layers]
            features.set_inference(n_iter=0)
            try:
                n_features = features(probe).flatten(1).shape[1]
            finally:
                for layer, n_iter in zip(features.sparse_layers, saved, strict=True):
                    layer.n_iter = n_iter
        self.head = nn.Linear(n_features, n_classes, dtype=first.weight.dtype,
                              device=first.weight.device)
        if generator is not None:
            bound = 1.0 / n_features ** 0.5
            nn.init.uniform_(self.head.weight, -bound, bound, generator=generator)
            nn.init.uniform_(self.head.bias, -bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """``softmax(logits)``: class probabilities (rows sum to one)."""
        return torch.softmax(self.forward(x), dim=1)
