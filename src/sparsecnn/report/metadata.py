"""What a report records about the run that produced it: the code (git commit, package
versions) and the machine (platform, CPUs, torch threads), so a reader can tell which numbers
are comparable."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["PACKAGES", "git_commit", "machine", "package_versions"]

#: distribution names whose versions change the numbers of a run
PACKAGES = ("sparsecnn", "torch", "numpy", "scipy", "scikit-learn")


def git_commit(directory: Path | None = None) -> str:
    """The commit checked out at ``directory`` (default: this package's source), with
    ``"+dirty"`` when tracked files differ from it; ``"unknown"`` outside a git checkout (an
    installed wheel) or without git."""
    where = directory or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=where, capture_output=True, text=True, timeout=10,
                                check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not commit:
        return "unknown"
    return f"{commit}+dirty" if status else commit


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed version of each distribution (``"not installed"`` when absent)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine() -> dict[str, Any]:
    """Platform, processor, Python, logical CPU count and torch's intra-op thread count."""
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or
            platform.machine(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
