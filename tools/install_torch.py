"""Install the torch build the Makefile asks for, and say what will be downloaded first.

Usage: ``python tools/install_torch.py VERSION SOURCE`` with SOURCE one of

* ``auto`` (the default): a ``torch-VERSION+cpu`` wheel already on disk in one of pip's
  find-links directories if there is one (nothing downloaded); else, on Linux x86_64 where
  PyPI's wheel is the CUDA build (about 2.5 GB with its ``nvidia-*`` wheels), PyTorch's CPU
  index; else PyPI, whose wheel is the CPU build on macOS, Windows and Linux aarch64.
* ``pypi``: whatever pip's configured index serves under that name.
* ``cpu`` or ``cuXYZ`` (e.g. ``cu128``): PyTorch's own index for that variant.
* an ``http(s)://`` or ``file://`` URL: that index.

It runs ``python -m pip install torch==VERSION`` with the matching ``--index-url`` (the other
requirements still come from pip's configured index, which stays an ``--extra-index-url``).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

PYTORCH_INDEX = "https://download.pytorch.org/whl/{variant}"
SIZES = {"cpu": "about 190 MB", "cuda": "about 2.5 GB including its nvidia-* wheels"}


def _find_links() -> list[Path]:
    """Directories pip reads wheels from (``PIP_FIND_LINKS`` and ``pip config``)."""
    values = os.environ.get("PIP_FIND_LINKS", "").split()
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                             capture_output=True, text=True, check=False).stdout
    values += re.findall(r"find-links='([^']*)'", listing)
    return [Path(v.removeprefix("file://")) for v in " ".join(values).split() if v]


def _local_cpu_wheel(version: str) -> Path | None:
    for directory in _find_links():
        if directory.is_dir():
            # only a wheel this interpreter and machine can install counts
            tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
            for wheel in sorted(directory.glob(f"torch-{version}+cpu-{tag}-*.whl")):
                if wheel.name.removesuffix(".whl").endswith(platform.machine()):
                    return wheel
    return None


def plan(version: str, source: str) -> tuple[list[str], str]:
    """(extra pip arguments, one line saying where torch comes from and its size)."""
    if source == "auto":
        wheel = _local_cpu_wheel(version)
        if wheel is not None:
            return [], f"the CPU build already on disk ({wheel}); nothing to download"
        if platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64"):
            source = "cpu"
        else:
            source = "pypi"
    if source == "pypi":
        return [], ("pip's configured index (on Linux x86_64 PyPI serves the CUDA build, "
                    f"{SIZES['cuda']}; elsewhere the CPU build)")
    if re.fullmatch(r"cpu|cu\d{2,3}|rocm[\d.]+", source):
        url = PYTORCH_INDEX.format(variant=source)
        size = SIZES["cpu"] if source == "cpu" else SIZES["cuda"]
        return ["--index-url", url, "--extra-index-url", "https://pypi.org/simple"], (
            f"PyTorch's {source} index {url} ({size})")
    if re.match(r"(https?|file)://", source):
        return ["--index-url", source, "--extra-index-url", "https://pypi.org/simple"], (
            f"the index {source}")
    raise SystemExit(f"TORCH_INDEX must be auto, pypi, cpu, cuXYZ (e.g. cu128) or an index URL; "
                     f"got {source!r}")


def main() -> int:
    if len(sys.argv) != 3:
        raise SystemExit("usage: python tools/install_torch.py VERSION SOURCE")
    version, source = sys.argv[1], sys.argv[2]
    arguments, where = plan(version, source)
    print(f"installing torch=={version} from {where}", flush=True)
    command = [sys.executable, "-m", "pip", "install", "--quiet", f"torch=={version}", *arguments]
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
