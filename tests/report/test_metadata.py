"""A report records the code and the machine that produced it
(:mod:`sparsecnn.report.metadata`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy
import sklearn
import torch

from sparsecnn.report.metadata import git_commit, machine, package_versions


def _git(directory: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          cwd=directory, capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_commit_of_a_checkout_and_its_dirty_state(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / "file.txt").write_text("one")
    _git(tmp_path, "add", "file.txt")
    _git(tmp_path, "commit", "-q", "-m", "first")
    head = (tmp_path / ".git" / "refs" / "heads")
    branch = next(p for p in head.iterdir())
    expected = branch.read_text().strip()  # the commit, read from git's own files
    assert len(expected) == 40 and git_commit(tmp_path) == expected
    (tmp_path / "file.txt").write_text("two")
    assert git_commit(tmp_path) == f"{expected}+dirty"


def test_commit_outside_a_checkout_is_unknown(tmp_path: Path, monkeypatch) -> None:
    # git must not find a repository above tmp_path either
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert git_commit(tmp_path) == "unknown"


def test_versions_and_machine() -> None:
    versions = package_versions()
    assert versions["numpy"] == np.__version__ and versions["scipy"] == scipy.__version__
    assert versions["scikit-learn"] == sklearn.__version__
    assert versions["torch"] == torch.__version__
    assert package_versions(("surely-not-a-distribution-xyz",)) == {
        "surely-not-a-distribution-xyz": "not installed"}
    described = machine()
    assert described["cpu_count"] == os.cpu_count()
    assert described["torch_threads"] == torch.get_num_threads()
    assert described["platform"]
