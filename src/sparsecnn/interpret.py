"""Reading a trained CNN as hierarchical sparse coding (Bowren 2021, arXiv 2108.06622;
docs/theory.md A.4-A.8, conventions 5-6).

For every ``Conv2d``/``Linear`` layer (plain or sparse) with filters ``w_i`` and biases ``b_i``:

* the dictionary of unit-norm atoms ``d_i = w_i/||w_i||`` and output scales ``||w_i||``;
* thresholds ``lam_i = -b_i/||w_i||``, since
  ``ReLU(w_i^T x + b_i) = ||w_i|| ReLU(d_i^T x - lam_i)``;
* the prior of each unit (A.4): ``b_i < 0`` proper, ``b_i = 0`` flat (improper), ``b_i > 0``
  anti-sparse (improper), reported as ``improper_prior_fraction`` (``b > 0``) and
  ``flat_prior_fraction`` (``b == 0``);
* the model's last layer, when no ReLU follows it, is the logistic-regression head (A.7):
  ``softmax(W z + b)`` is a classifier of the codes ``z``, not a sparse-coding layer, so its bias
  is a class offset and carries no prior; its row has ``role == "logistic-regression head"``,
  no prior fractions and no sparse-coding gap;
* the mutual coherence and the orthogonality gap ``||D^T D - I||_F`` (zero iff the one-shot
  ReLU is the exact sparse code for every input, A.2-A.5);
* with ``inputs``: the *sparse-coding gap* on the inputs each layer actually receives -- the
  energy ``E+(a) = 1/2||x - D a||^2 + lam^T a`` of the one-shot code ``a0 = ReLU(D^T x - lam)``
  against the optimum ``a*`` of :func:`sparsecnn.sparse_code` (FISTA), and the relative code
  distance ``||a0 - a*|| / ||a*||``.

:func:`interpret` returns an :class:`InterpretationReport` (``.layers``, ``.to_dict()``, a table
when printed, figures).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ._checks import check_nonzero_norms
from .dictionary import ConvDictionary, DenseDictionary
from .inference import SolverDivergedError, SparseCodingProblem, sparse_code
from .interpretation_report import (
    LOGISTIC_HEAD,
    SPARSE_CODING,
    DeadLayerWarning,
    InterpretationReport,
    LayerInterpretation,
)
from .nn.layers import SparseConv2d, SparseLinear
from .nn.lipschitz import KnownLipschitzConvDictionary, conv_lipschitz

__all__ = ["LOGISTIC_HEAD", "SPARSE_CODING", "DeadLayerWarning", "InterpretationReport",
           "LayerInterpretation", "interpret"]

_LAYER_TYPES = (nn.Conv2d, nn.Linear, SparseConv2d, SparseLinear)
_OUTPUT = "\x00output"  # key suffix of a captured layer output


def _layer_weight(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(module, (SparseConv2d, SparseLinear)):
        weight = module.effective_weight()
    else:
        weight = module.weight
    bias = module.bias
    return weight.detach().to(torch.float64), None if bias is None else bias.detach().to(
        torch.float64)


def _followed_by_relu(model: nn.Module) -> set[str]:
    names: set[str] = set()
    for parent_name, parent in model.named_modules():
        if not isinstance(parent, nn.Sequential):
            continue
        keys = list(parent._modules)
        for index in range(len(keys) - 1):
            if isinstance(parent._modules[keys[index + 1]], nn.ReLU):
                names.add(f"{parent_name}.{keys[index]}" if parent_name else keys[index])
    return names


def _check_conv_support(name: str, module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d) and (
            module.groups != 1 or module.dilation != (1, 1) or isinstance(module.padding, str)
            or module.padding_mode != "zeros"):
        raise ValueError(
            f"layer {name!r} is a Conv2d with groups={module.groups}, dilation="
            f"{module.dilation}, padding={module.padding!r}, padding_mode="
            f"{module.padding_mode!r}; interpret supports groups=1, dilation=1 and integer "
            "zero padding")


def _capture_inputs(model: nn.Module, layers: list[tuple[str, nn.Module]],
                    inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in layers:
        def hook(_module: nn.Module, args: tuple, name: str = name) -> None:
            captured.setdefault(name, args[0].detach())
        handles.append(module.register_forward_pre_hook(hook))
        if isinstance(module, (SparseConv2d, SparseLinear)) and module.n_iter > 0:
            def output_hook(_module: nn.Module, args: tuple, output: torch.Tensor,
                            name: str = name) -> None:
                captured.setdefault(f"{name}{_OUTPUT}", output.detach())
            handles.append(module.register_forward_hook(output_hook))
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.train(mode)
    return captured


def interpret(model: nn.Module, inputs: Any = None, *, input_shape: Sequence[int] | None = None,
              max_samples: int = 32, max_iter: int = 1000, tol: float = 1e-6,
              model_name: str = "", verbose: bool = False) -> InterpretationReport:
    """Read ``model`` as hierarchical non-negative sparse coding, one entry per conv/linear layer.

    Parameters
    ----------
    model : a PyTorch model (plain CNN or one with sparse layers).
    inputs : optional batch of model inputs; the first ``max_samples`` are run through the model
        (in eval mode, no gradient) and each layer's actual input is used for the sparse-coding
        gap and for the convolutional orthogonality gap's image size.
    input_shape : shape of one input ``(C, H, W)`` to size the orthogonality gap without
        ``inputs`` (a zero input is run through the model).  Without either, a convolutional
        layer's gap is computed on images of ``kernel + 2 * stride`` pixels per side.
    max_iter, tol : budget and tolerance of the FISTA solve for the optimum (float64).
    verbose : print the progress of each layer's FISTA solve to stderr (``sparse_code``'s
        ``verbose``); a convolutional layer's optimum can take tens of seconds.

    Raises
    ------
    ValueError
        For a model without conv/linear layers, a layer with a zero filter, or inputs the
        model cannot take.

    Warns
    -----
    DeadLayerWarning
        When a layer's thresholds make every one-shot code zero for the given inputs.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
        raise ValueError(f"max_samples must be an integer >= 1; got {max_samples!r}")
    layers = [(name, module) for name, module in model.named_modules()
              if isinstance(module, _LAYER_TYPES)]
    if not layers:
        raise ValueError(f"model has no Conv2d/Linear layer to interpret; got a "
                         f"{type(model).__name__} with modules "
                         f"{sorted({type(m).__name__ for m in model.modules()})}")
    for name, module in layers:
        _check_conv_support(name, module)
    relu_names = _followed_by_relu(model)
    captured: dict[str, torch.Tensor] = {}
    n_inputs = None
    reference = next(model.parameters())
    if inputs is not None:
        tensor = torch.as_tensor(inputs)
        if not tensor.is_floating_point():
            raise TypeError(f"inputs must be a floating tensor; got dtype {tensor.dtype}")
        tensor = tensor[:max_samples].to(dtype=reference.dtype, device=reference.device)
        n_inputs = int(tensor.shape[0])
        try:
            captured = _capture_inputs(model, layers, tensor)
        except RuntimeError as error:
            raise ValueError(f"inputs of shape {tuple(tensor.shape)} cannot be run through the "
                             f"model: {error}") from None
    elif input_shape is not None:
        probe = torch.zeros((1, *[int(s) for s in input_shape]), dtype=reference.dtype,
                            device=reference.device)
        captured = _capture_inputs(model, layers, probe)

    entries = []
    head_name = layers[-1][0]
    for name, module in layers:
        weight, bias = _layer_weight(module)
        scales = torch.linalg.vector_norm(weight.flatten(1), dim=1)
        check_nonzero_norms(scales, lambda count, indices, name=name: (
            f"layer {name!r} has {count} zero filter(s) (output units {indices}); a zero filter "
            "has no atom w/||w|| and no threshold -b/||w||"))
        atoms = weight / scales.view((-1,) + (1,) * (weight.ndim - 1))
        biases = torch.zeros_like(scales) if bias is None else bias
        thresholds = -biases / scales
        is_conv = isinstance(module, (nn.Conv2d, SparseConv2d))
        followed = name in relu_names or (
            isinstance(module, (SparseConv2d, SparseLinear)) and module.nonneg)
        entry_kwargs: dict[str, Any] = {}
        if is_conv:
            stride, padding = tuple(module.stride), tuple(module.padding)
            dictionary: ConvDictionary | DenseDictionary = ConvDictionary(atoms, stride, padding)
            if name in captured:
                signal_shape = tuple(captured[name].shape[1:])
            else:
                kh, kw = atoms.shape[-2:]
                signal_shape = (atoms.shape[1], kh + 2 * stride[0], kw + 2 * stride[1])
            n_atoms = math.prod(dictionary.code_shape(signal_shape))
            entry_kwargs.update(stride=stride, padding=padding)
        else:
            dictionary = DenseDictionary(atoms.T)
            signal_shape = None
            n_atoms = atoms.shape[0]
        is_head = name == head_name and not followed
        entry = LayerInterpretation(
            name=name or "<model>", kind="conv2d" if is_conv else "linear",
            role=LOGISTIC_HEAD if is_head else SPARSE_CODING,
            dictionary=atoms, output_scale=scales, thresholds=thresholds, biases=biases,
            improper_prior_fraction=None if is_head
            else float((biases > 0).to(torch.float64).mean()),
            flat_prior_fraction=None if is_head
            else float((biases == 0).to(torch.float64).mean()),
            improper_units=[] if is_head else torch.nonzero(biases > 0).flatten().tolist(),
            coherence=dictionary.coherence(),
            orthogonality_gap=dictionary.orthogonality_gap(signal_shape),
            orthogonality_signal_shape=signal_shape, n_atoms=n_atoms,
            followed_by_relu=followed, **entry_kwargs)
        if is_head and inputs is not None:
            entry.gap_status = ("not a sparse-coding layer: the logistic-regression head "
                                "softmax(Wz + b) classifies the codes z")
        elif inputs is not None and name in captured:
            signal = captured[name].to(torch.float64)
            if is_conv:
                lipschitz = conv_lipschitz(atoms, stride, padding, signal.shape[1:])
                dictionary = KnownLipschitzConvDictionary(atoms, stride, padding, lipschitz)
            else:
                signal = signal.reshape(-1, signal.shape[-1])
            layer_output = captured.get(f"{name}{_OUTPUT}")
            if layer_output is not None:
                entry.layer_n_iter = int(module.n_iter)
                view = (1, -1, 1, 1) if is_conv else (1, -1)
                layer_output = layer_output.to(torch.float64)
                if not is_conv:
                    layer_output = layer_output.reshape(-1, layer_output.shape[-1])
                layer_output = layer_output / scales.view(view)
            _sparse_coding_gap(entry, signal, dictionary, thresholds, max_iter, tol,
                               layer_output, verbose)
        entries.append(entry)
    return InterpretationReport(layers=entries, n_inputs=n_inputs, model_name=model_name)


def _sparse_coding_gap(entry: LayerInterpretation, signal: torch.Tensor,
                       dictionary: ConvDictionary | DenseDictionary, thresholds: torch.Tensor,
                       max_iter: int, tol: float, layer_codes: torch.Tensor | None = None,
                       verbose: bool = False) -> None:
    """Fill the energy gap and code distance between ``ReLU(D^T x - lam)`` and the optimum."""
    problem = SparseCodingProblem(signal, dictionary, thresholds, nonneg=True,
                                  allow_negative_lam=True)
    one_shot = problem.threshold(problem.correlation)
    entry.zero_code_fraction = float((one_shot == 0).to(torch.float64).mean())
    if entry.zero_code_fraction == 1.0:
        warnings.warn(
            f"layer {entry.name!r}: the thresholds -b/||w|| (min "
            f"{float(thresholds.min()):.3g}) make every code zero for the given inputs; the "
            "layer passes no signal (biases too negative or inputs out of range)",
            DeadLayerWarning, stacklevel=3)
    one_shot_energy = problem.energy(one_shot)
    entry.one_shot_energy = float(one_shot_energy.mean())
    try:
        result = sparse_code(signal, dictionary, thresholds, method="fista", nonneg=True,
                             max_iter=max_iter, tol=tol, allow_negative_lam=True, warn=False,
                             verbose=verbose)
    except SolverDivergedError:
        entry.gap_status = ("unbounded: improper priors (b > 0) on a rank-deficient dictionary "
                            "make the energy unbounded below")
        return
    optimum = result.codes
    optimal_energy = result.energy
    optimum_size = float(torch.linalg.vector_norm(optimum))
    if not result.converged and optimum_size > 100.0 * max(
            float(torch.linalg.vector_norm(one_shot)), 1.0) and bool(
            (thresholds < 0).any()):
        entry.optimum_converged = False
        entry.gap_status = (
            "unbounded: the energy keeps decreasing with growing codes -- improper priors "
            "(b > 0) on atoms with a non-negative combination in the null space of D; the "
            "sparse code does not exist")
        return
    gap = one_shot_energy - optimal_energy
    difference = torch.linalg.vector_norm((one_shot - optimum).flatten(1), dim=1)
    size = torch.linalg.vector_norm(optimum.flatten(1), dim=1)
    tiny = torch.finfo(torch.float64).tiny
    entry.optimal_energy = float(optimal_energy.mean())
    entry.energy_gap = float(gap.mean())
    entry.relative_energy_gap = float(gap.mean() / max(abs(entry.optimal_energy), tiny))
    entry.code_distance = float((difference / torch.clamp(size, min=tiny)).mean())
    if layer_codes is not None:
        layer_gap = problem.energy(layer_codes) - optimal_energy
        layer_difference = torch.linalg.vector_norm((layer_codes - optimum).flatten(1), dim=1)
        entry.layer_energy_gap = float(layer_gap.mean())
        entry.layer_code_distance = float(
            (layer_difference / torch.clamp(size, min=tiny)).mean())
    entry.optimum_converged = bool(result.converged)
    entry.gap_status = "ok" if result.converged else (
        f"optimum not converged in {max_iter} FISTA iterations (gap is a lower bound)")
