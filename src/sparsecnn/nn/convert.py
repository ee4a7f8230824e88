"""Converting a plain CNN to sparse-coding layers and back (docs/theory.md A.5-A.7, convention 5).

:func:`from_cnn` replaces every ``nn.Conv2d``/``nn.Linear`` immediately followed by ``nn.ReLU``
inside an ``nn.Sequential`` (at any nesting depth) by :class:`SparseConv2d`/:class:`SparseLinear`
with the same weights, and the ReLU by :class:`AbsorbedReLU` (an identity that keeps the
module's indices and state-dict keys unchanged).  With ``n_iter=0`` the converted model computes
exactly the original outputs; with ``n_iter=k`` each layer runs k steps of sparse inference.
Layers it cannot map (normalisation, pooling, other activations, linear maps without a ReLU other
than the final logistic-regression head) are kept and listed in an
:class:`UnmappedLayerWarning`.

:func:`to_cnn` gives back plain PyTorch modules (``nn.Conv2d``/``nn.Linear`` + ``nn.ReLU``).
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from .hierarchical import HierarchicalSparseCoding, SparseCodingClassifier
from .layers import SparseConv2d, SparseLinear

__all__ = ["AbsorbedReLU", "UnmappedLayerWarning", "from_cnn", "to_cnn"]

_NEUTRAL = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
            nn.Sequential, nn.ModuleList, nn.ModuleDict)


class UnmappedLayerWarning(UserWarning):
    """``from_cnn`` kept layers that have no sparse-coding reading."""


class AbsorbedReLU(nn.Identity):
    """Placeholder for a ReLU that :func:`from_cnn` absorbed into the preceding sparse layer
    (whose output is already non-negative); :func:`to_cnn` turns it back into ``nn.ReLU``."""

    def extra_repr(self) -> str:
        return "ReLU absorbed into the preceding sparse layer"


def _convertible(module: nn.Module) -> str | None:
    """``None`` if ``module`` maps to a sparse layer, else the reason it does not."""
    if type(module) is nn.Linear:
        return None
    if type(module) is nn.Conv2d:
        if module.groups != 1:
            return f"groups={module.groups}"
        if module.dilation != (1, 1):
            return f"dilation={module.dilation}"
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            return f"padding={module.padding!r}, padding_mode={module.padding_mode!r}"
        return None
    return "not a Conv2d/Linear"


def from_cnn(model: nn.Module, n_iter: int = 0, method: str = "ista", nonneg: bool = True,
             **options: Any) -> nn.Module:
    """A copy of ``model`` whose Conv2d/Linear + ReLU pairs are sparse-coding layers.

    Parameters
    ----------
    model : a plain PyTorch model; pairs are found inside ``nn.Sequential`` containers (the
        model itself or nested at any depth).
    n_iter, method, nonneg : inference of every converted layer (``n_iter=0``: the one-shot
        ReLU, identical outputs; ``n_iter=k``: k steps of ``method`` in ``ista``/``fista``/``lca``
        on ``E+(a) = 1/2||x - D a||^2 + lam^T a`` with ``D = W/||w||``, ``lam = -b/||w||``).
    options : further layer options (``proper_prior``, ``unit_norm``, ``restart``).

    Returns
    -------
    nn.Module
        The converted copy, with the same state-dict keys as ``model``.

    Raises
    ------
    ValueError
        If no layer can be converted.

    Warns
    -----
    UnmappedLayerWarning
        With the list of the layers kept as they are.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    converted = copy.deepcopy(model)
    replaced: list[str] = []
    rejected: dict[str, str] = {}
    for parent_name, parent in list(converted.named_modules()):
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules)
        for index in range(len(names) - 1):
            child = parent._modules[names[index]]
            follower = parent._modules[names[index + 1]]
            if not isinstance(follower, nn.ReLU) or not isinstance(child, (nn.Conv2d,
                                                                           nn.Linear)):
                continue
            full_name = f"{parent_name}.{names[index]}" if parent_name else names[index]
            reason = _convertible(child)
            if reason is not None:
                rejected[full_name] = reason
                continue
            if isinstance(child, nn.Conv2d):
                sparse = SparseConv2d.from_conv(child, n_iter=n_iter, method=method,
                                                nonneg=nonneg, **options)
            else:
                sparse = SparseLinear.from_linear(child, n_iter=n_iter, method=method,
                                                  nonneg=nonneg, **options)
            setattr(parent, names[index], sparse)
            setattr(parent, names[index + 1], AbsorbedReLU())
            replaced.append(full_name)
    leaves = [(name, module) for name, module in converted.named_modules()
              if not list(module.children())]
    if not replaced:
        kinds = sorted({type(module).__name__ for _, module in leaves})
        detail = "; rejected: " + ", ".join(f"{k} ({v})" for k, v in rejected.items()) \
            if rejected else ""
        raise ValueError(
            "model has no convertible layer: from_cnn converts nn.Conv2d (groups=1, "
            "dilation=1, zero padding) or nn.Linear immediately followed by nn.ReLU inside an "
            f"nn.Sequential; got a {type(model).__name__} with layers of types {kinds}{detail}")
    linear_leaves = [name for name, module in leaves
                     if isinstance(module, (nn.Linear, SparseLinear, nn.Conv2d, SparseConv2d))]
    head = linear_leaves[-1] if linear_leaves and type(dict(leaves)[linear_leaves[-1]]) is \
        nn.Linear else None
    kept = []
    for name, module in leaves:
        if isinstance(module, (SparseConv2d, SparseLinear, AbsorbedReLU)) or name == head:
            continue
        if type(module) in _NEUTRAL or isinstance(module, (nn.Dropout, nn.Flatten)):
            continue
        if name in rejected:
            reason = rejected[name]
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            reason = "not followed by nn.ReLU inside an nn.Sequential"
        else:
            reason = "no sparse-coding reading"
        kept.append(f"{name or '<model>'} ({type(module).__name__}: {reason})")
    if kept:
        warnings.warn(
            f"from_cnn kept {len(kept)} layer(s) unchanged that it cannot map to sparse "
            f"coding: {', '.join(kept)}", UnmappedLayerWarning, stacklevel=2)
    return converted


def _plain(layer: SparseConv2d | SparseLinear) -> nn.Module:
    if not layer.nonneg:
        raise ValueError(
            f"{type(layer).__name__} with nonneg=False (signed codes, soft threshold) has no "
            "plain Conv2d/Linear + ReLU equivalent; to_cnn needs nonneg=True layers")
    weight = layer.effective_weight().detach().clone()
    factory = {"dtype": weight.dtype, "device": weight.device}
    if isinstance(layer, SparseConv2d):
        plain: nn.Module = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                     layer.stride, layer.padding, bias=layer.bias is not None,
                                     **factory)
    else:
        plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                          **factory)
    with torch.no_grad():
        plain.weight.copy_(weight)
        if layer.bias is not None:
            plain.bias.copy_(layer.bias.detach())
    plain.train(layer.training)
    return plain


def _to_plain_tree(module: nn.Module) -> nn.Module:
    if isinstance(module, (SparseConv2d, SparseLinear)):
        return nn.Sequential(_plain(module), nn.ReLU())
    if isinstance(module, AbsorbedReLU):
        return nn.ReLU()
    if isinstance(module, SparseCodingClassifier):
        return nn.Sequential(_to_plain_tree(module.features), nn.Flatten(),
                             copy.deepcopy(module.head))
    if isinstance(module, HierarchicalSparseCoding):
        module = nn.Sequential(OrderedDict(module._modules))
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        for index, name in enumerate(names):
            child = module._modules[name]
            follower = module._modules[names[index + 1]] if index + 1 < len(names) else None
            if isinstance(child, (SparseConv2d, SparseLinear)) and isinstance(follower,
                                                                               AbsorbedReLU):
                setattr(module, name, _plain(child))
                setattr(module, names[index + 1], nn.ReLU())
            elif child is not None and not isinstance(child, nn.ReLU):
                setattr(module, name, _to_plain_tree(child))
        return module
    for name, child in list(module._modules.items()):
        if child is not None:
            setattr(module, name, _to_plain_tree(child))
    return module


def to_cnn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every sparse layer replaced by plain ``nn.Conv2d``/``nn.Linear``
    (effective weight ``W``, bias ``b``) and ``nn.ReLU``: the one-shot forward pass.

    A sparse layer followed by :class:`AbsorbedReLU` becomes ``Conv2d`` + ``ReLU`` at the same
    indices (the state-dict keys of the model given to :func:`from_cnn`); elsewhere it becomes
    ``nn.Sequential(Conv2d, ReLU)``.  :class:`HierarchicalSparseCoding` becomes
    ``nn.Sequential`` and :class:`SparseCodingClassifier` ``nn.Sequential(features, Flatten,
    head)``.  Layers with ``n_iter > 0`` lose their iterations (warned).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    iterative = [name or "<model>" for name, module in model.named_modules()
                 if (isinstance(module, (SparseConv2d, SparseLinear)) and module.n_iter > 0)
                 or (isinstance(module, HierarchicalSparseCoding)
                     and module.inference != "layered" and module.n_unfold > 0)]
    if iterative:
        warnings.warn(
            f"to_cnn: layer(s) {', '.join(iterative)} use n_iter > 0 (or ML-ISTA unfoldings); "
            "the plain CNN computes "
            "the one-shot ReLU(W x + b) (n_iter=0) with the same weights", UserWarning,
            stacklevel=2)
    return _to_plain_tree(copy.deepcopy(model))
