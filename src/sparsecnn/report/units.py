"""Resumable units of a study: an exact data codec, an on-disk store and shard ownership.

A *unit* is one piece of a study whose result is data and depends only on the run's
configuration (usually one seed: ``"seed3"``).  A study asks for it with
``context.unit(key, compute)`` (:meth:`sparsecnn.report.study.StudyContext.unit`):

* without a store (library use, tests) the result of ``compute()`` is passed through the same
  encode/decode round trip as a stored one, so the code after a unit sees identical values
  and types whether the unit was computed now or read back after an interruption;
* with a store (``sparsecnn reproduce``) a finished unit is written atomically to
  ``<store>/<study>/<key>.json`` and read back instead of recomputed when the run is resumed;
* in a shard (``--shard I --n-shards N``) the unit is computed only when this shard owns it;
  a unit owned elsewhere returns a :class:`Deferred` placeholder whose every use raises
  :class:`UnitDeferred`, which ends that study in this shard (its report is built by the merge
  step, which computes the units no shard had: those whose existence depends on other units'
  results, such as check 23's extra seeds chosen by a power analysis after a pilot).

The codec is exact: floats (``-0.0``, NaN and infinities too) keep their bits, tuples stay
tuples, dictionary keys keep their type, tensors and numpy arrays keep dtype, shape and bytes.
Anything that is not data (a module, a dataset object) is refused with the path to it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import write_json, write_text

__all__ = ["Deferred", "ShardPlan", "UnitDeferred", "UnitRunner", "UnitStore",
           "UnitStoreMismatch", "decode", "encode", "round_trip"]

_TAG = "__unit__"
_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class UnitDeferred(Exception):
    """A study used the result of a unit another shard computes."""


class UnitStoreMismatch(ValueError):
    """A unit store was written by a run with another configuration."""


# -- the codec -----------------------------------------------------------------------------

def _float(value: float) -> Any:
    if math.isfinite(value) and not (value == 0.0 and math.copysign(1.0, value) < 0):
        return value
    return {_TAG: "float", "hex": float(value).hex()}


def encode(value: Any, where: str = "result") -> Any:
    """``value`` as JSON-compatible data that :func:`decode` turns back into an equal value of
    the same types; ``where`` names the value in the ``TypeError`` raised for non-data."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value if type(value) is int else {_TAG: "int", "value": int(value)}
    if isinstance(value, float):
        return _float(value) if type(value) is float else \
            {_TAG: "npscalar", "dtype": np.dtype(type(value)).str, "value": _float(float(value))}
    if isinstance(value, np.generic):
        array = np.asarray(value)
        return {_TAG: "npscalar0", "dtype": array.dtype.str,
                "data": base64.b64encode(array.tobytes()).decode("ascii")}
    if isinstance(value, list):
        return [encode(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, tuple):
        return {_TAG: "tuple", "items": [encode(item, f"{where}[{index}]")
                                         for index, item in enumerate(value)]}
    if isinstance(value, dict):
        if all(type(key) is str and key != _TAG for key in value):
            return {key: encode(item, f"{where}[{key!r}]") for key, item in value.items()}
        return {_TAG: "dict", "items": [[encode(key, f"{where} key {key!r}"),
                                         encode(item, f"{where}[{key!r}]")]
                                        for key, item in value.items()]}
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        if tensor.layout != torch.strided or tensor.is_quantized:
            raise TypeError(f"{where}: a unit result cannot hold a sparse or quantized tensor")
        data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        return {_TAG: "tensor", "dtype": str(tensor.dtype).removeprefix("torch."),
                "shape": list(tensor.shape),
                "data": base64.b64encode(data).decode("ascii")}
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError(f"{where}: a unit result cannot hold an object array")
        array = np.ascontiguousarray(value)
        return {_TAG: "ndarray", "dtype": array.dtype.str, "shape": list(array.shape),
                "data": base64.b64encode(array.tobytes()).decode("ascii")}
    raise TypeError(f"{where}: a unit result must be data (None, bool, int, float, str, list, "
                    f"tuple, dict, tensor or numpy array), got {type(value).__name__}")


def decode(value: Any) -> Any:
    """The value :func:`encode` encoded."""
    if isinstance(value, list):
        return [decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    tag = value.get(_TAG)
    if tag is None:
        return {key: decode(item) for key, item in value.items()}
    if tag == "float":
        return float.fromhex(value["hex"])
    if tag == "int":
        return int(value["value"])
    if tag == "npscalar":
        return np.dtype(value["dtype"]).type(decode(value["value"]))
    if tag == "npscalar0":
        return np.frombuffer(base64.b64decode(value["data"]), dtype=np.dtype(value["dtype"]))[0]
    if tag == "tuple":
        return tuple(decode(item) for item in value["items"])
    if tag == "dict":
        return {decode(key): decode(item) for key, item in value["items"]}
    if tag == "tensor":
        dtype = getattr(torch, value["dtype"])
        data = bytearray(base64.b64decode(value["data"]))
        flat = torch.frombuffer(data, dtype=torch.uint8) if data else \
            torch.empty(0, dtype=torch.uint8)
        return flat.view(dtype).reshape(value["shape"]).clone()
    if tag == "ndarray":
        data = base64.b64decode(value["data"])
        return np.frombuffer(data, dtype=np.dtype(value["dtype"])).reshape(
            value["shape"]).copy()
    raise ValueError(f"unknown unit tag {tag!r}")


def round_trip(value: Any, where: str = "result") -> Any:
    """``decode(encode(value))`` through JSON text: what a stored unit reads back as."""
    return decode(json.loads(json.dumps(encode(value, where), allow_nan=False)))


# -- shards --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardPlan:
    """Shard ``index`` of ``count``: owns the ``i``-th unit a study asks for when
    ``(i + offset(study)) % count == index``, with a per-study offset from a hash of its name,
    so every unit has exactly one owner and consecutive units go to different shards.

    With ``claims`` (a directory every shard of one machine shares, as ``reproduce --jobs``
    runs them) ownership is first come, first served instead: a shard owns a unit when it is
    the one that creates ``claims/<study>/<key>`` (``O_CREAT | O_EXCL``, atomic on a local file
    system), so a shard that finished its units takes the next unclaimed one rather than wait
    for a fixed share; still exactly one owner per unit."""

    index: int
    count: int
    claims: str | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.count, int) and self.count >= 1):
            raise ValueError(f"n_shards must be an integer >= 1, got {self.count!r}")
        if not (isinstance(self.index, int) and 0 <= self.index < self.count):
            raise ValueError(f"shard must be an integer in [0, {self.count - 1}], got "
                             f"{self.index!r}")

    def owns(self, study: str, call_index: int, key: str) -> bool:
        if self.claims is not None:
            for name, value in (("study", study), ("unit key", key)):
                if not _KEY_PATTERN.match(value):
                    raise ValueError(f"{name} must match {_KEY_PATTERN.pattern}, got {value!r}")
            folder = Path(self.claims) / study
            folder.mkdir(parents=True, exist_ok=True)
            try:
                os.close(os.open(folder / key, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            except FileExistsError:
                return False
            return True
        offset = int(hashlib.sha256(study.encode()).hexdigest()[:8], 16)
        return (call_index + offset) % self.count == self.index


class Deferred:
    """The result of a unit another shard computes: every use raises :class:`UnitDeferred`."""

    __slots__ = ("_label",)

    def __init__(self, label: str) -> None:
        object.__setattr__(self, "_label", label)

    def _refuse(self, *_: Any, **__: Any) -> Any:
        raise UnitDeferred(f"unit {object.__getattribute__(self, '_label')} is computed by "
                           "another shard")

    def __repr__(self) -> str:
        return f"Deferred({object.__getattribute__(self, '_label')!r})"

    def __getattr__(self, name: str) -> Any:
        self._refuse()

    __getitem__ = __iter__ = __len__ = __bool__ = __float__ = __int__ = __index__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refuse
    __truediv__ = __rtruediv__ = __pow__ = __neg__ = __abs__ = __round__ = _refuse
    __lt__ = __le__ = __gt__ = __ge__ = __contains__ = __format__ = __array__ = _refuse
    __setattr__ = __call__ = _refuse


# -- the store -----------------------------------------------------------------------------

class UnitStore:
    """Finished units on disk: ``<root>/fingerprint.json`` and ``<root>/<study>/<key>.json``.

    ``fingerprint`` is what makes a unit reusable (mode, seed, dataset and its content hash,
    package version and source hash); a store with the same fingerprint is reused (that is
    what resuming means), one written under another fingerprint raises
    :class:`UnitStoreMismatch` unless ``overwrite`` clears it.  Every file is written
    atomically, so a run killed mid-write leaves either the whole unit or none of it.
    """

    def __init__(self, root: str | Path, fingerprint: dict[str, Any], *,
                 overwrite: bool = False) -> None:
        self.root = Path(root)
        self.fingerprint = dict(fingerprint)
        stamp = self.root / "fingerprint.json"
        problem = self._problem(stamp)
        if problem is not None:
            if not overwrite:
                raise UnitStoreMismatch(f"{problem}; pass --overwrite to discard them or "
                                        "choose another --out")
            if not stamp.is_file():
                raise UnitStoreMismatch(f"{problem}; refusing to delete it")
            shutil.rmtree(self.root)
        if not stamp.is_file():
            self.root.mkdir(parents=True, exist_ok=True)
            write_json(stamp, self.fingerprint)

    def _problem(self, stamp: Path) -> str | None:
        """Why the directory cannot be used as this run's store, or ``None``."""
        if stamp.is_file():
            try:
                stored = json.loads(stamp.read_text(encoding="utf-8"))
                if not isinstance(stored, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as error:
                return f"the unit store {self.root} has a damaged fingerprint.json ({error})"
            differ = sorted(k for k in set(stored) | set(self.fingerprint)
                            if stored.get(k) != self.fingerprint.get(k))
            if differ:
                details = "; ".join(f"{k}: stored {stored.get(k)!r}, now "
                                    f"{self.fingerprint.get(k)!r}" for k in differ)
                return f"the units in {self.root} come from another configuration ({details})"
            return None
        if self.root.exists() and (not self.root.is_dir() or any(self.root.iterdir())):
            return f"{self.root} exists and is not a unit store (no fingerprint.json)"
        return None

    def path(self, study: str, key: str) -> Path:
        for name, value in (("study", study), ("unit key", key)):
            if not _KEY_PATTERN.match(value):
                raise ValueError(f"{name} must match {_KEY_PATTERN.pattern} (letters, digits, "
                                 f"'_', '.', '-'), got {value!r}")
        return self.root / study / f"{key}.json"

    def load(self, study: str, key: str) -> tuple[bool, Any]:
        """``(True, value)`` for a finished unit, ``(False, None)`` for a missing one; a
        damaged file is reported in a warning and treated as missing (it is recomputed)."""
        path = self.path(study, key)
        if not path.is_file():
            return False, None
        try:
            return True, decode(json.loads(path.read_text(encoding="utf-8"))["value"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            warnings.warn(f"unit file {path} is damaged ({type(error).__name__}: {error}); "
                          "computing the unit again", RuntimeWarning, stacklevel=2)
            return False, None

    def save(self, study: str, key: str, encoded_text: str) -> None:
        """Write a unit whose encoded value is already JSON text (serialised once)."""
        write_text(self.path(study, key), f'{{"study": {json.dumps(study)}, "key": '
                                          f'{json.dumps(key)}, "value": {encoded_text}}}')

    def keys(self) -> list[tuple[str, str]]:
        """Every stored ``(study, key)``."""
        return sorted((p.parent.name, p.stem) for p in self.root.glob("*/*.json"))

    def import_from(self, other_root: str | Path) -> int:
        """Copy the units of another store (a shard's) that this one lacks; returns how many."""
        copied = 0
        for path in sorted(Path(other_root).glob("*/*.json")):
            target = self.path(path.parent.name, path.stem)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                # through JSON: a damaged shard file fails here, naming it
                try:
                    content = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as error:
                    raise ValueError(f"shard unit file {path} is damaged: {error}") from None
                write_json(target, content)
                copied += 1
        return copied


@dataclass
class UnitRunner:
    """The units of one study in one run: loads finished ones from ``store``, computes and
    stores the others, and in a shard defers those another shard owns."""

    study: str
    store: UnitStore | None = None
    shard: ShardPlan | None = None
    loaded: int = 0
    computed: int = 0
    deferred: int = 0
    calls: int = 0
    seen: set[str] = field(default_factory=set)

    def __call__(self, key: str, compute: Callable[[], Any]) -> Any:
        if key in self.seen:
            raise ValueError(f"study {self.study}: unit key {key!r} used twice")
        self.seen.add(key)
        index = self.calls
        self.calls += 1
        if self.store is not None:
            found, value = self.store.load(self.study, key)
            if found:
                self.loaded += 1
                return value
        if self.shard is not None and not self.shard.owns(self.study, index, key):
            self.deferred += 1
            return Deferred(f"{self.study}/{key}")
        text = json.dumps(encode(compute(), f"study {self.study}, unit {key!r}"),
                          allow_nan=False)
        if self.store is not None:
            self.store.save(self.study, key, text)
        self.computed += 1
        return decode(json.loads(text))
