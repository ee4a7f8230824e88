"""What :func:`sparsecnn.interpret` returns: one :class:`LayerInterpretation` per layer and the
:class:`InterpretationReport` that prints them as a table, serialises them to JSON and draws
their figures (docs/theory.md A.4-A.8, conventions 5-6)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .io import atomic_directory, to_json, write_bytes, write_text

__all__ = ["LOGISTIC_HEAD", "SPARSE_CODING", "DeadLayerWarning", "InterpretationReport",
           "LayerInterpretation"]


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
