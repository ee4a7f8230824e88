"""Output files: atomic, umask-respecting, and --overwrite never destroys foreign files."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from sparsecnn.io import (
    MANIFEST_NAME,
    OutputExistsError,
    atomic_directory,
    foreign_files,
    write_bytes,
    write_json,
)


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_bytes_uses_the_umask(tmp_path: Path, umask_022: None) -> None:
    path = write_bytes(tmp_path / "a.bin", b"x")
    assert _mode(path) == 0o644
    os.umask(0o077)
    assert _mode(write_bytes(tmp_path / "b.bin", b"x")) == 0o600


def test_write_json_refuses_nan(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        write_json(tmp_path / "a.json", {"x": float("nan")})
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_writes_a_manifest_and_uses_the_umask(tmp_path: Path,
                                                               umask_022: None) -> None:
    target = tmp_path / "run"
    with atomic_directory(target) as staging:
        write_bytes(staging / "a.json", b"{}")
        (staging / "figures").mkdir()
        write_bytes(staging / "figures" / "f.png", b"png")
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    assert manifest["files"] == ["a.json", "figures/f.png"]
    assert _mode(target) == 0o755 and _mode(target / "figures") == 0o755
    assert _mode(target / "figures" / "f.png") == 0o644
    assert foreign_files(target) == []


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "run"
    with atomic_directory(target) as staging:
        write_bytes(staging / "a.json", b"1")
    with pytest.raises(OutputExistsError, match="exists; pass --overwrite"), \
            atomic_directory(target):
        pass
    with atomic_directory(target, overwrite=True) as staging:
        write_bytes(staging / "b.json", b"2")
    assert sorted(p.name for p in target.iterdir()) == [MANIFEST_NAME, "b.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no backup or staging left


@pytest.mark.parametrize("foreign", ["notes.txt", "sub/data.csv"])
def test_overwrite_refuses_a_directory_with_foreign_files(tmp_path: Path, foreign: str) -> None:
    target = tmp_path / "run"
    with atomic_directory(target) as staging:
        write_bytes(staging / "a.json", b"1")
    (target / foreign).parent.mkdir(parents=True, exist_ok=True)
    (target / foreign).write_text("mine")
    ran = False
    with pytest.raises(OutputExistsError, match=f"did not write \\({foreign}\\)"), \
            atomic_directory(target, overwrite=True):
        ran = True
    assert not ran, "the work must not start when the output cannot be replaced"
    assert (target / foreign).read_text() == "mine" and (target / "a.json").exists()


def test_overwrite_refuses_a_directory_without_manifest(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "important.bin").write_bytes(b"\0")
    with pytest.raises(OutputExistsError, match=r"important\.bin"), \
            atomic_directory(target, overwrite=True):
        pass
    assert (target / "important.bin").exists()


def test_a_damaged_manifest_owns_nothing(tmp_path: Path) -> None:
    target = tmp_path / "run"
    target.mkdir()
    (target / MANIFEST_NAME).write_text("{not json")
    (target / "a.json").write_text("1")
    assert foreign_files(target) == ["a.json"]


def test_overwrite_refuses_a_file(tmp_path: Path) -> None:
    target = tmp_path / "a_file"
    target.write_text("data")
    with pytest.raises(OutputExistsError, match="is not a directory this package wrote"), \
            atomic_directory(target, overwrite=True):
        pass
    assert target.read_text() == "data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_failure_inside_the_block_keeps_the_old_output(tmp_path: Path) -> None:
    target = tmp_path / "run"
    with atomic_directory(target) as staging:
        write_bytes(staging / "a.json", b"old")
    with pytest.raises(RuntimeError, match="boom"), \
            atomic_directory(target, overwrite=True) as staging:
        write_bytes(staging / "a.json", b"new")
        raise RuntimeError("boom")
    assert (target / "a.json").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_parent_fails_before_the_work(tmp_path: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match="is not writable"), \
                atomic_directory(parent / "run"):
            raise AssertionError("the block must not run")
    finally:
        parent.chmod(0o755)
