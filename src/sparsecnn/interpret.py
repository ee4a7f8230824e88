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

import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._checks import check_nonzero_norms
from .dictionary import ConvDictionary, DenseDictionary
from .inference import SolverDivergedError, SparseCodingProblem, sparse_code
from .io import atomic_directory, to_json, write_bytes, write_text
from .nn.layers import SparseConv2d, SparseLinear
from .nn.lipschitz import KnownLipschitzConvDictionary, conv_lipschitz

__all__ = ["DeadLayerWarning", "InterpretationReport", "LayerInterpretation", "interpret"]


SPARSE_CODING = "sparse coding"
# docs/theory.md A.7: a CNN is hierarchical sparse coding *plus logistic regression*; the last
# affine map feeds a softmax, so its bias is a class offset, not an exponential prior.
LOGISTIC_HEAD = "logistic-regression head"


class DeadLayerWarning(UserWarning):
    """A layer's thresholds make every code zero for the given inputs."""


@dataclass
class LayerInterpretation:
    """The sparse-coding reading of one layer (see the module docstring for every quantity).

    Energies, gaps and distances are means over the input signals (``None`` without inputs).
    ``role`` is ``"sparse coding"`` or ``"logistic-regression head"``; the head has no prior
    (``improper_prior_fraction`` and ``flat_prior_fraction`` are ``None``, ``improper_units`` is
    empty) and no sparse-coding gap (``gap_status`` says why).
    For a sparse layer with ``n_iter = k > 0``, ``layer_energy_gap`` and ``layer_code_distance``
    compare the layer's own k-step code (its output divided by ``||w||``) with the optimum.
    ``orthogonality_signal_shape`` is the signal ``(C, H, W)`` for which the convolutional
    dictionary's gap was computed (its number of atoms depends on the image size).
    """

    name: str
    kind: str
    dictionary: torch.Tensor
    output_scale: torch.Tensor
    thresholds: torch.Tensor
    biases: torch.Tensor
    improper_prior_fraction: float | None
    flat_prior_fraction: float | None
    improper_units: list[int]
    coherence: float
    orthogonality_gap: float
    orthogonality_signal_shape: tuple[int, ...] | None
    n_atoms: int
    followed_by_relu: bool
    stride: tuple[int, int] | None = None
    padding: tuple[int, int] | None = None
    one_shot_energy: float | None = None
    optimal_energy: float | None = None
    energy_gap: float | None = None
    relative_energy_gap: float | None = None
    code_distance: float | None = None
    zero_code_fraction: float | None = None
    optimum_converged: bool | None = None
    gap_status: str | None = None
    layer_n_iter: int = 0
    layer_energy_gap: float | None = None
    layer_code_distance: float | None = None
    role: str = SPARSE_CODING
    extras: dict = field(default_factory=dict)

    @property
    def n_units(self) -> int:
        return int(self.dictionary.shape[0])

    def to_dict(self, include_arrays: bool = True) -> dict[str, Any]:
        result: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "role": self.role,
            "n_units": self.n_units,
            "atom_shape": list(self.dictionary.shape[1:]),
            "improper_prior_fraction": self.improper_prior_fraction,
            "flat_prior_fraction": self.flat_prior_fraction,
            "improper_units": self.improper_units,
            "coherence": self.coherence,
            "orthogonality_gap": self.orthogonality_gap,
            "orthogonality_signal_shape": None if self.orthogonality_signal_shape is None
            else list(self.orthogonality_signal_shape),
            "n_atoms": self.n_atoms,
            "followed_by_relu": self.followed_by_relu,
            "stride": None if self.stride is None else list(self.stride),
            "padding": None if self.padding is None else list(self.padding),
            "threshold_summary": _summary(self.thresholds),
            "output_scale_summary": _summary(self.output_scale),
            "one_shot_energy": self.one_shot_energy,
            "optimal_energy": self.optimal_energy,
            "energy_gap": self.energy_gap,
            "relative_energy_gap": self.relative_energy_gap,
            "code_distance": self.code_distance,
            "zero_code_fraction": self.zero_code_fraction,
            "optimum_converged": self.optimum_converged,
            "gap_status": self.gap_status,
            "layer_n_iter": self.layer_n_iter,
            "layer_energy_gap": self.layer_energy_gap,
            "layer_code_distance": self.layer_code_distance,
        }
        if include_arrays:
            result["thresholds"] = self.thresholds.tolist()
            result["output_scale"] = self.output_scale.tolist()
            result["biases"] = self.biases.tolist()
            result["dictionary"] = self.dictionary.tolist()
        return result


def _summary(values: torch.Tensor) -> dict[str, float]:
    return {"min": float(values.min()), "mean": float(values.mean()),
            "max": float(values.max())}


def _format(value: float | None, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _gap_cell(layer: LayerInterpretation, value: float | None) -> str:
    """The number, or in words why there is none (the reason used to be only in the JSON)."""
    if value is not None:
        return format(value, ".3g")
    status = layer.gap_status
    if layer.role == LOGISTIC_HEAD:
        return "n/a (head)"
    if status is None:
        return "- (no inputs)"
    return status.split(":")[0].split(" (")[0]


@dataclass
class InterpretationReport:
    """Per-layer sparse-coding reading of a model (:func:`interpret`)."""

    layers: list[LayerInterpretation]
    n_inputs: int | None = None
    model_name: str = ""

    def __getitem__(self, name: str) -> LayerInterpretation:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}; layers: {[layer.name for layer in self.layers]}")

    def to_dict(self, include_arrays: bool = True) -> dict[str, Any]:
        """JSON-serialisable dictionary (``include_arrays=False`` drops per-unit arrays)."""
        return {"model": self.model_name, "n_inputs": self.n_inputs,
                "layers": [layer.to_dict(include_arrays) for layer in self.layers]}

    def table(self) -> str:
        header = ["layer", "kind", "role", "units", "lam mean [min, max]", "b>0", "b=0",
                  "coherence", "||DtD-I||_F", "energy gap", "rel. code dist."]
        iterative = any(layer.layer_energy_gap is not None for layer in self.layers)
        if iterative:
            header += ["k", "k-step energy gap", "k-step code dist."]
        rows = [header]
        for layer in self.layers:
            lam = _summary(layer.thresholds)
            rows.append([
                layer.name, layer.kind, layer.role, str(layer.n_units),
                "n/a (class offsets)" if layer.role == LOGISTIC_HEAD
                else f"{lam['mean']:.3g} [{lam['min']:.3g}, {lam['max']:.3g}]",
                _percent(layer.improper_prior_fraction), _percent(layer.flat_prior_fraction),
                f"{layer.coherence:.3f}", f"{layer.orthogonality_gap:.3g}",
                _gap_cell(layer, layer.energy_gap), _gap_cell(layer, layer.code_distance)])
            if iterative:
                rows[-1] += [str(layer.layer_n_iter), _gap_cell(layer, layer.layer_energy_gap),
                             _gap_cell(layer, layer.layer_code_distance)]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                 for row in rows]
        lines.insert(1, "  ".join("-" * width for width in widths))
        note = ("thresholds lam = -b/||w||; b>0: improper anti-sparse prior, b=0: flat prior; "
                "energy gap = E+(ReLU code) - E+(optimum)"
                + ("; k-step: the layer's own code after k iterations" if iterative else ""))
        reasons = sorted({f"{layer.name}: {layer.gap_status}" for layer in self.layers
                          if layer.energy_gap is None and layer.gap_status is not None})
        notes = [note, *(["no energy gap --"] + [f"  {r}" for r in reasons] if reasons else [])]
        return "\n".join([*lines, *notes])

    def __str__(self) -> str:
        return self.table()

    # -- figures --------------------------------------------------------------------------
    def figure_atoms(self, layer: str | int = 0, max_atoms: int = 64) -> Any:
        """Grid of the unit-norm atoms of one layer (RGB for 3 input channels, channels side by
        side otherwise; dense atoms of square length as images)."""
        from matplotlib.figure import Figure

        entry = self.layers[layer] if isinstance(layer, int) else self[layer]
        atoms = entry.dictionary[:max_atoms].detach().to(torch.float64).cpu().numpy()
        n = atoms.shape[0]
        columns = math.ceil(math.sqrt(n))
        rows = math.ceil(n / columns)
        figure = Figure(figsize=(1.2 * columns + 0.5, 1.2 * rows + 0.6))
        figure.suptitle(f"unit-norm atoms of {entry.name} (red: improper prior b > 0)",
                        fontsize=9)
        improper = set(entry.improper_units)
        for index in range(n):
            axis = figure.add_subplot(rows, columns, index + 1)
            axis.set_xticks([])
            axis.set_yticks([])
            image, cmap = _atom_image(atoms[index])
            if cmap is None:
                axis.imshow(image, interpolation="nearest")
            else:
                bound = float(np.abs(image).max()) or 1.0
                axis.imshow(image, cmap=cmap, vmin=-bound, vmax=bound, interpolation="nearest")
            if index in improper:
                for spine in axis.spines.values():
                    spine.set_edgecolor("red")
                    spine.set_linewidth(2)
        return figure

    def figure_thresholds(self) -> Any:
        """Histogram of the thresholds ``lam = -b/||w||`` per layer; improper priors
        (``lam < 0``) in red, flat priors (``lam = 0``) marked by the dashed line."""
        from matplotlib.figure import Figure

        n = len(self.layers)
        figure = Figure(figsize=(3.2 * n + 0.5, 3.0))
        for index, entry in enumerate(self.layers):
            axis = figure.add_subplot(1, n, index + 1)
            values = entry.thresholds.detach().to(torch.float64).cpu().numpy()
            edges = _edges_through_zero(values, min(30, max(5, values.size // 2)))
            axis.hist(values[values >= 0], bins=edges, color="tab:blue", label="proper / flat")
            if (values < 0).any():
                axis.hist(values[values < 0], bins=edges, color="tab:red",
                          label="improper (b > 0)")
            axis.axvline(0.0, color="black", linestyle="--", linewidth=1)
            axis.set_title(f"{entry.name}: logistic-regression head (class offsets, no prior)"
                           if entry.role == LOGISTIC_HEAD else
                           f"{entry.name}: {100 * entry.improper_prior_fraction:.0f}% improper",
                           fontsize=8)
            axis.set_xlabel("threshold  -b/||w||", fontsize=8)
            axis.legend(fontsize=6)
        figure.tight_layout()
        return figure

    def figure_gaps(self) -> Any:
        """Sparse-coding gap per layer: relative energy gap ``(E0 - E*)/|E*|`` (log scale) and
        relative code distance ``||a0 - a*||/||a*||`` between the one-shot ReLU code and the
        optimum; layers whose energy is unbounded below are marked (needs ``inputs``)."""
        from matplotlib.figure import Figure

        measured = [entry for entry in self.layers
                    if entry.gap_status is not None and entry.role != LOGISTIC_HEAD]
        if not measured:
            raise ValueError("figure_gaps needs a report computed with inputs "
                             "(interpret(model, inputs=...)); this one has none")
        figure = Figure(figsize=(max(6.0, 1.6 * len(measured) + 3), 3.2))
        names = [entry.name for entry in measured]
        positions = np.arange(len(measured))
        panels = (("relative energy gap (E0 - E*) / |E*|", "relative_energy_gap", True),
                  ("code distance ||a0 - a*|| / ||a*||", "code_distance", False))
        for index, (title, attribute, logarithmic) in enumerate(panels):
            axis = figure.add_subplot(1, 2, index + 1)
            values = [getattr(entry, attribute) for entry in measured]
            heights = [0.0 if v is None else max(v, 1e-16) for v in values]
            axis.bar(positions, heights, color="tab:blue")
            if logarithmic:
                axis.set_yscale("log")
            for position, value in zip(positions, values, strict=True):
                if value is None:
                    axis.annotate("unbounded", (position, 0.5), xycoords=("data", "axes fraction"),
                                  ha="center", rotation=90, color="tab:red", fontsize=8)
            axis.set_xticks(positions, names, fontsize=8)
            axis.set_title(title, fontsize=9)
        figure.suptitle("one-shot ReLU code vs the sparse-coding optimum", fontsize=9)
        figure.tight_layout()
        return figure

    def save(self, directory: str | Path, *, overwrite: bool = False,
             include_arrays: bool = True) -> dict[str, Path]:
        """Write ``report.json``, ``report.txt``, ``atoms.png``, ``thresholds.png`` and (with
        inputs) ``gaps.png`` into ``directory`` atomically; return the paths."""
        target = Path(directory)
        with atomic_directory(target, overwrite=overwrite) as staging:
            self.write_files(staging, include_arrays=include_arrays)
        return {name: target / name for name in self.file_names()}

    def file_names(self) -> list[str]:
        names = ["report.json", "report.txt", "atoms.png", "thresholds.png"]
        if any(entry.gap_status is not None and entry.role != LOGISTIC_HEAD
               for entry in self.layers):
            names.append("gaps.png")
        return names

    def write_files(self, directory: Path, include_arrays: bool = True) -> None:
        write_text(directory / "report.json", to_json(self.to_dict(include_arrays)) + "\n")
        write_text(directory / "report.txt", self.table() + "\n")
        figures = {"atoms.png": self.figure_atoms(), "thresholds.png": self.figure_thresholds()}
        if "gaps.png" in self.file_names():
            figures["gaps.png"] = self.figure_gaps()
        for name, figure in figures.items():
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=110)
            write_bytes(directory / name, buffer.getvalue())


def _edges_through_zero(values: np.ndarray, bins: int) -> np.ndarray:
    """Histogram edges of equal width with 0 as an edge (proper and improper never share a
    bin)."""
    low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    width = (high - low) / bins or 1.0
    return np.arange(math.floor(low / width), math.ceil(high / width) + 2) * width


def _atom_image(atom: np.ndarray) -> tuple[np.ndarray, str | None]:
    if atom.ndim == 3 and atom.shape[0] == 3:
        image = np.transpose(atom, (1, 2, 0))
        low, high = image.min(), image.max()
        return (image - low) / ((high - low) or 1.0), None
    if atom.ndim == 3:
        channels = atom[:8]
        pad = np.full((channels.shape[1], 1), np.nan)
        parts = []
        for channel in channels:
            parts.extend([channel, pad])
        return np.concatenate(parts[:-1], axis=1), "RdBu_r"
    side = round(math.sqrt(atom.size))
    if side * side == atom.size:
        return atom.reshape(side, side), "RdBu_r"
    return atom.reshape(1, -1), "RdBu_r"


# -- the analysis ---------------------------------------------------------------------------

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
