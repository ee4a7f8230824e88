"""A system-wide install: the package directory and ``$HOME`` are not writable by the user who
imports it (docs/reliability.md, "Compiled kernels").  Numba's on-disk cache must then not be a
reason the import fails; the homotopy solver still computes the lasso minimiser, checked against
scikit-learn's LARS-lasso (an independent solver)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import sparsecnn

NOBODY = 65534
pytestmark = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="switching to an unprivileged user needs root and setpriv (CI runs as root)")


def _closed_to_others(path: Path) -> Path | None:
    """The first of ``path`` and its parents that other users cannot enter (no ``o+x``), or
    ``None``: the unprivileged user runs this interpreter and imports its numpy and torch
    from there."""
    for folder in (path, *path.parents):
        if folder.exists() and not folder.stat().st_mode & stat.S_IXOTH:
            return folder
    return None

# min_a 1/2 ||x - D a||^2 + lam ||a||_1 by the homotopy path, and by scikit-learn's
# sparse_encode(algorithm="lasso_lars"), whose alpha is the same lam (its objective is
# 1/2 ||x - a D||^2 + alpha ||a||_1); prints the largest difference of the codes
SCRIPT = """
import numpy as np, torch
from sklearn.decomposition import sparse_encode
import sparsecnn
generator = torch.Generator().manual_seed(0)
D = torch.randn(12, 20, dtype=torch.float64, generator=generator)
D = D / D.norm(dim=0)
x = torch.randn(5, 12, dtype=torch.float64, generator=generator)
result = sparsecnn.sparse_code(x, D, 0.2, method="homotopy")
reference = sparse_encode(x.numpy(), D.T.numpy(), algorithm="lasso_lars", alpha=0.2)
print(sparsecnn.__file__)
print(float(np.abs(result.codes.numpy() - reference).max()), bool(result.converged))
"""


def _read_only_copy(root: Path) -> Path:
    """``root/site/sparsecnn``: a copy of the package, readable and not writable by anyone
    but root, without compiled caches."""
    site = root / "site"
    shutil.copytree(Path(sparsecnn.__file__).parent, site / "sparsecnn",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.nbi", "*.nbc"))
    for directory, _, files in os.walk(site):
        os.chmod(directory, 0o555)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o444)
    return site


@pytest.mark.slow  # ~40 s on a busy 2-core machine: numba compiles the path without a cache
def test_import_and_homotopy_as_an_unprivileged_user_on_a_read_only_install():
    closed = _closed_to_others(Path(sys.prefix).resolve())
    if closed is not None:
        # e.g. a checkout in a `mktemp -d` directory (mode 0700): nobody cannot reach the
        # environment's numpy, whatever sparsecnn does
        pytest.skip(f"the Python environment {sys.prefix} is not reachable by other users "
                    f"({closed} has no o+x)")
    root = Path(tempfile.mkdtemp(prefix="sparsecnn-read-only-"))
    try:
        os.chmod(root, 0o755)  # mkdtemp makes it 0700: nobody could not reach the copy
        site = _read_only_copy(root)
        home = root / "home"  # exists, owned by root, not writable by nobody
        home.mkdir(mode=0o555)
        environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
                       "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1",
                       "MPLCONFIGDIR": str(home / "matplotlib"), "SPARSECNN_NATIVE": "0"}
        completed = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             sys.executable, "-c", SCRIPT],
            env=environment, cwd=str(home), capture_output=True, text=True, timeout=300,
            check=False)
        assert completed.returncode == 0, completed.stderr[-3000:]
        location, numbers = completed.stdout.strip().splitlines()[-2:]
        assert location == str(site / "sparsecnn" / "__init__.py")  # the read-only copy
        difference, converged = numbers.split()
        assert converged == "True" and float(difference) < 1e-8, completed.stdout
        # nothing was written into the install or the home directory
        written = [path for path in root.rglob("*")
                   if path.stat().st_uid == NOBODY or "__pycache__" in path.parts]
        assert not written, written
    finally:
        for directory, _, _ in os.walk(root):
            os.chmod(directory, stat.S_IRWXU)
        shutil.rmtree(root)
