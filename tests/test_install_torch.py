"""The Makefile's torch installer picks the build it documents (tools/install_torch.py)."""

from __future__ import annotations

import importlib.util
import platform
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "tools" / "install_torch.py"
_SPEC = importlib.util.spec_from_file_location("install_torch", _PATH)
install_torch = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(install_torch)


def _wheel_name(version: str) -> str:
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    return f"torch-{version}+cpu-{tag}-{tag}-manylinux_2_28_{platform.machine()}.whl"


def test_auto_uses_a_cpu_wheel_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / _wheel_name("9.9.9")).write_bytes(b"")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    arguments, where = install_torch.plan("9.9.9", "auto")
    assert arguments == []
    assert "already on disk" in where and str(tmp_path) in where


def test_auto_without_a_local_wheel_never_takes_the_cuda_build_on_linux_x86(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))  # empty directory
    monkeypatch.setattr(install_torch, "_find_links", lambda: [tmp_path])
    monkeypatch.setattr(install_torch.platform, "system", lambda: "Linux")
    monkeypatch.setattr(install_torch.platform, "machine", lambda: "x86_64")
    arguments, where = install_torch.plan("9.9.9", "auto")
    assert arguments[:2] == ["--index-url", "https://download.pytorch.org/whl/cpu"]
    assert "190 MB" in where


@pytest.mark.parametrize(("source", "index"), [
    ("cpu", "https://download.pytorch.org/whl/cpu"),
    ("cu128", "https://download.pytorch.org/whl/cu128"),
    ("https://example.org/simple", "https://example.org/simple"),
])
def test_named_sources(source: str, index: str) -> None:
    arguments, _ = install_torch.plan("2.13.0", source)
    assert arguments[:2] == ["--index-url", index]


def test_pypi_keeps_pips_configuration() -> None:
    arguments, where = install_torch.plan("2.13.0", "pypi")
    assert arguments == [] and "CUDA build" in where


def test_unknown_source_is_refused() -> None:
    with pytest.raises(SystemExit, match="TORCH_INDEX must be auto, pypi, cpu, cuXYZ"):
        install_torch.plan("2.13.0", "gpu please")
