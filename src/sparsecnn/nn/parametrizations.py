"""Constraints that keep a layer a sparse-coding model during training (docs/theory.md A.8.1).

**Proper priors** (``proper_prior=True``): every bias ``b <= 0``, i.e. every threshold
``lam = -b/||w|| >= 0`` and every prior ``lam exp(-lam a)`` proper (convention 6).  Implemented
as a *projection* ``b <- min(b, 0)`` applied after every optimizer step, chosen over a
parametrisation such as ``b = -softplus(beta)`` because

* the feasible set ``{b <= 0}`` is convex, so projected gradient descent is the textbook method
  and the gradient of ``b`` is the unconstrained one (no vanishing ``softplus'`` near 0);
* ``b = 0`` (the flat prior) stays representable, whereas ``-softplus(beta) < 0`` never reaches
  it, so a converted CNN with zero biases loads unchanged;
* the parameter keeps the name and meaning of ``nn.Conv2d.bias``, so state dicts load both ways
  without conversion, and docs/theory.md check 10 ("projection after every step") is literal.

The projection runs in a global ``torch.optim`` step post-hook: after ``optimizer.step()`` every
bias of a ``proper_prior`` layer among that optimizer's parameters is clamped, whatever the
optimizer.  Code that updates parameters without an optimizer calls :func:`project_priors`.

**Unit-norm atoms** (``unit_norm=True``): the non-convex constraint ``||d_i|| = 1`` is kept by a
*parametrisation* (weight normalisation, Salimans & Kingma 2016): the layer stores a direction
``v_i`` (the ``weight`` parameter, any norm) and an ``output_scale`` ``g_i``, and uses
``w_i = g_i v_i / ||v_i||``, so the atom ``d_i = v_i/||v_i||`` is unit-norm at every step.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

__all__ = ["project_priors", "register_proper_prior", "unit_norm_weight"]

_PROPER_PRIOR_LAYERS: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def register_proper_prior(layer: nn.Module) -> None:
    """Mark ``layer`` (with a ``bias`` parameter) for projection after optimizer steps."""
    _PROPER_PRIOR_LAYERS.add(layer)


def _project(parameter: torch.Tensor | None) -> None:
    if parameter is not None and bool((parameter.detach() > 0).any()):
        with torch.no_grad():
            parameter.clamp_(max=0.0)


def project_priors(model: nn.Module) -> None:
    """Apply ``b <- min(b, 0)`` to every ``proper_prior`` layer in ``model`` now."""
    for module in model.modules():
        if getattr(module, "proper_prior", False):
            _project(getattr(module, "bias", None))


def _after_optimizer_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    del args, kwargs
    if not _PROPER_PRIOR_LAYERS:
        return
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for layer in list(_PROPER_PRIOR_LAYERS):
        bias = getattr(layer, "bias", None)
        if getattr(layer, "proper_prior", False) and bias is not None and id(bias) in optimized:
            _project(bias)


_STEP_HOOK = register_optimizer_step_post_hook(_after_optimizer_step)


def unit_norm_weight(direction: torch.Tensor, output_scale: torch.Tensor) -> torch.Tensor:
    """``w_i = g_i v_i / ||v_i||`` (weight normalisation): unit-norm atoms times a scale."""
    norms = torch.linalg.vector_norm(direction.flatten(1), dim=1)
    if bool((norms == 0).any()):
        zero = torch.nonzero(norms == 0).flatten()[:5].tolist()
        raise ValueError(f"weight (the unit_norm direction) has a zero filter at output "
                         f"channel(s) {zero}; a zero filter has no unit-norm atom")
    shape = (-1,) + (1,) * (direction.ndim - 1)
    return direction * (output_scale / norms).view(shape)

