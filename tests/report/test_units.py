"""The unit codec is exact, the store refuses foreign or stale units, shards partition units."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecnn.report.study import StudyContext
from sparsecnn.report.units import (
    Deferred,
    ShardPlan,
    UnitDeferred,
    UnitRunner,
    UnitStore,
    UnitStoreMismatch,
    round_trip,
)

scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=8) | \
    st.floats(allow_nan=True, allow_infinity=True)
keys = st.booleans() | st.integers(-50, 50) | st.text(max_size=5) | \
    st.floats(allow_nan=False)
data = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                    | st.lists(inner, max_size=4).map(tuple)
                    | st.dictionaries(keys, inner, max_size=4), max_leaves=20)


def _same(a, b) -> bool:
    """Equal values of identical types, floats compared by their bits."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a.hex() == b.hex() if not math.isnan(a) else math.isnan(b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a) and \
            all(type(x) is type(y) for x, y in zip(a, b, strict=True))
    return a == b


@settings(max_examples=200, deadline=None)
@given(data)
def test_round_trip_is_exact_for_all_data(value) -> None:
    assert _same(round_trip(value), value)


@pytest.mark.parametrize("value", [-0.0, float("nan"), float("inf"), -float("inf"), 5e-324])
def test_special_floats_keep_their_bits(value: float) -> None:
    back = round_trip(value)
    assert math.copysign(1.0, back) == math.copysign(1.0, value)
    assert (math.isnan(back) and math.isnan(value)) or back == value


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.int64,
                                   torch.uint8, torch.bool, torch.complex64])
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 3, 1)])
def test_tensors_keep_dtype_shape_and_bits(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    generator = torch.Generator().manual_seed(0)
    tensor = (torch.randn(shape, generator=generator, dtype=torch.float64) * 7).to(dtype)
    back = round_trip({"t": tensor})["t"]
    assert back.dtype == dtype and tuple(back.shape) == shape
    assert torch.equal(back.reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8))


@pytest.mark.parametrize("dtype", ["<f4", ">f8", "<i2", "|b1"])
def test_numpy_arrays_and_scalars(dtype: str) -> None:
    array = (np.arange(6).reshape(2, 3) - 2).astype(dtype)
    back = round_trip((array, array[0, 0], np.float32(0.1)))
    assert back[0].dtype == array.dtype and np.array_equal(back[0], array)
    assert type(back[1]) is type(array[0, 0]) and back[1] == array[0, 0]
    assert type(back[2]) is np.float32 and back[2] == np.float32(0.1)


@pytest.mark.parametrize(("value", "message"), [
    ({"model": torch.nn.Linear(2, 2)}, r"result\['model'\]: .*got Linear"),
    ([1, object()], r"result\[1\]: .*got object"),
    (np.array([object()]), "object array"),
])
def test_non_data_is_refused_with_its_path(value, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        round_trip(value)


def test_context_without_a_run_round_trips() -> None:
    context = StudyContext(quick=True, seed=0, device="cpu", scratch_dir=Path("."))
    assert context.unit("seed0", lambda: {1: (2.0, "x")}) == {1: (2.0, "x")}
    with pytest.raises(TypeError, match="unit 'seed0'"):
        context.unit("seed0", lambda: {"split": context})


FINGERPRINT = {"format": 1, "quick": True, "seed": 0, "data": "digits"}


def test_store_resumes_and_counts(tmp_path: Path) -> None:
    calls = []

    def compute(value):
        calls.append(value)
        return {"value": value}

    first = UnitRunner("study", UnitStore(tmp_path / "s", FINGERPRINT))
    assert [first(f"seed{i}", lambda i=i: compute(i)) for i in range(3)] == \
        [{"value": i} for i in range(3)]
    second = UnitRunner("study", UnitStore(tmp_path / "s", FINGERPRINT))
    assert [second(f"seed{i}", lambda i=i: compute(i)) for i in range(4)] == \
        [{"value": i} for i in range(4)]
    assert calls == [0, 1, 2, 3] and (second.loaded, second.computed) == (3, 1)


def test_store_from_another_configuration_is_refused(tmp_path: Path) -> None:
    UnitStore(tmp_path / "s", FINGERPRINT)
    other = {**FINGERPRINT, "seed": 1}
    with pytest.raises(UnitStoreMismatch,
                       match=r"another configuration \(seed: stored 0, now 1\); pass "
                             "--overwrite"):
        UnitStore(tmp_path / "s", other)
    UnitStore(tmp_path / "s", other, overwrite=True)
    assert json.loads((tmp_path / "s" / "fingerprint.json").read_text())["seed"] == 1


def test_a_directory_that_is_not_a_store_is_never_cleared(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "thesis.tex").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(UnitStoreMismatch, match="is not a unit store"):
            UnitStore(tmp_path / "s", FINGERPRINT, overwrite=overwrite)
    assert (tmp_path / "s" / "thesis.tex").read_text() == "precious"


def test_damaged_unit_is_recomputed_with_a_warning(tmp_path: Path) -> None:
    store = UnitStore(tmp_path / "s", FINGERPRINT)
    UnitRunner("study", store)("seed0", lambda: [1.5])
    (tmp_path / "s" / "study" / "seed0.json").write_text('{"value": [1.')  # killed writer
    runner = UnitRunner("study", store)
    with pytest.warns(RuntimeWarning, match=r"seed0.json is damaged .*computing the unit again"):
        assert runner("seed0", lambda: [2.5]) == [2.5]
    assert runner.computed == 1


@pytest.mark.parametrize("key", ["../escape", "", "a/b", "x" * 101])
def test_unit_keys_cannot_leave_the_store(tmp_path: Path, key: str) -> None:
    runner = UnitRunner("study", UnitStore(tmp_path / "s", FINGERPRINT))
    with pytest.raises(ValueError, match="unit key must match"):
        runner(key, lambda: 1)


def test_a_key_used_twice_is_an_error(tmp_path: Path) -> None:
    runner = UnitRunner("study", None)
    runner("seed0", lambda: 1)
    with pytest.raises(ValueError, match="unit key 'seed0' used twice"):
        runner("seed0", lambda: 1)


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_own_every_unit_exactly_once_and_balance(count: int) -> None:
    plans = [ShardPlan(i, count) for i in range(count)]
    for study in ("a", "paper1_models", "paper1_robustness"):
        owners = [[p.index for p in plans if p.owns(study, call, f"seed{call}")]
                  for call in range(20)]
        assert all(len(o) == 1 for o in owners)
        load = np.bincount([o[0] for o in owners], minlength=count)
        assert load.max() - load.min() <= 1


def test_claimed_units_have_exactly_one_owner_whoever_asks_first(tmp_path: Path) -> None:
    # shards sharing a claims directory: the first to ask owns a unit, every later ask (any
    # shard, the same one included) is refused, and another study's key is a separate claim
    plans = [ShardPlan(i, 2, claims=str(tmp_path / "claims")) for i in range(2)]
    order = [0, 1, 1, 0, 1, 1, 1, 0]
    owner = {}
    for call, index in enumerate(order):
        key = f"seed{call % 5}"
        if plans[index].owns("study", call, key):
            assert key not in owner
            owner[key] = index
    assert owner == {"seed0": 0, "seed1": 1, "seed2": 1, "seed3": 0, "seed4": 1}
    assert plans[1].owns("other", 0, "seed0")
    assert sorted(p.name for p in (tmp_path / "claims" / "study").iterdir()) == \
        [f"seed{i}" for i in range(5)]
    with pytest.raises(ValueError, match="unit key must match"):
        plans[0].owns("study", 9, "../escape")


@pytest.mark.parametrize(("index", "count", "message"), [
    (2, 2, r"shard must be an integer in \[0, 1\], got 2"),
    (0, 0, "n_shards must be an integer >= 1, got 0"),
])
def test_bad_shard_plans(index: int, count: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ShardPlan(index, count)


@pytest.mark.parametrize("use", [
    lambda d: d["key"], lambda d: float(d), lambda d: d + 1, lambda d: len(d),
    lambda d: bool(d), lambda d: list(d), lambda d: f"{d:.3f}", lambda d: d.mean(),
    lambda d: np.asarray(d, dtype=float),
])
def test_deferred_refuses_every_use(use) -> None:
    with pytest.raises((UnitDeferred, TypeError, ValueError)):
        use(Deferred("study/seed1"))
    with pytest.raises(UnitDeferred, match="study/seed1 is computed by another shard"):
        Deferred("study/seed1")["x"]


def test_shard_runner_defers_units_it_does_not_own(tmp_path: Path) -> None:
    stores = [UnitStore(tmp_path / f"s{i}", FINGERPRINT) for i in range(2)]
    runners = [UnitRunner("study", store, ShardPlan(i, 2)) for i, store in enumerate(stores)]
    results = [[r(f"seed{k}", lambda k=k: k) for k in range(4)] for r in runners]
    for k in range(4):
        deferred = [isinstance(res[k], Deferred) for res in results]
        assert sorted(deferred) == [False, True]
    assert sorted(k for store in stores for _, k in store.keys()) == \
        [f"seed{k}" for k in range(4)]
    merged = UnitStore(tmp_path / "merged", FINGERPRINT)
    assert sum(merged.import_from(store.root) for store in stores) == 4
    runner = UnitRunner("study", merged)
    assert [runner(f"seed{k}", lambda: -1) for k in range(4)] == [0, 1, 2, 3]
    assert runner.computed == 0
