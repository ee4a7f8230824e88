"""The compiled-kernel cache refuses what it cannot trust (docs/reliability.md, "Compiled
kernels"): a library planted by another user must never run, a damaged one is rebuilt, a
hanging or missing compiler is named.  Most tests build a one-function library (fast); the
layer-level tests build the real kernels.

Each test loads a library at most once, at its end: the dynamic loader hands back an object
already loaded under the same name, and a file changed in place under a loaded object
changes that object's pages -- damage across processes is the case of interest."""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import time
import warnings
from pathlib import Path

import pytest
import torch

from sparsecnn.nn import SparseConv2d, kernel_cache, native

pytestmark = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                reason="no C++ compiler")
root_only = pytest.mark.skipif(os.geteuid() != 0,
                               reason="chown to another user needs root (CI runs as root)")
OTHER_USER = 65534
FLAGS = ("-O0", "-shared", "-fPIC")
GENUINE = 'extern "C" int answer() { return 42; }\n'
# a constructor runs at dlopen, before any function is called: the attack of the issue
PLANTED = """#include <cstdio>
#include <cstdlib>
__attribute__((constructor)) static void plant() {
    const char *path = std::getenv("SPARSECNN_TEST_MARKER");
    std::FILE *f = path ? std::fopen(path, "w") : nullptr;
    if (f) { std::fputs("ran", f); std::fclose(f); }
}
extern "C" int answer() { return 666; }
"""


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """A private cache directory, a marker path for planted code, the compiler defaults."""
    for name in ("CXX", "SPARSECNN_COMPILE_TIMEOUT", "SPARSECNN_NATIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPARSECNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPARSECNN_TEST_MARKER", str(tmp_path / "marker"))
    return tmp_path / "cache"


@pytest.fixture
def source(tmp_path) -> Path:
    path = tmp_path / "genuine.cpp"
    path.write_text(GENUINE)
    return path


@pytest.fixture
def planted(tmp_path) -> Path:
    """A library whose constructor writes the marker file."""
    path = tmp_path / "planted.so"
    (tmp_path / "planted.cpp").write_text(PLANTED)
    kernel_cache._run([*kernel_cache.compiler_command(), *FLAGS, "-o", str(path),
                       str(tmp_path / "planted.cpp")], 120, "planting")
    return path


def _library(cache: Path) -> Path:
    (library,) = cache.glob("kernels-*.so")
    return library


def _hash_file(library: Path) -> Path:
    return library.with_name(library.name + ".sha256")


def _plant(planted: Path, library: Path, hash_text: str | None = "matching") -> None:
    """``planted`` under ``library``'s name (a new file, as a rename puts it there), with the
    hash file an attacker would write."""
    shutil.copyfile(planted, library.with_name("planting"))
    library.with_name("planting").chmod(0o700)
    os.replace(library.with_name("planting"), library)
    if hash_text is None:
        _hash_file(library).unlink()
    else:
        digest = hashlib.sha256(planted.read_bytes()).hexdigest()
        _hash_file(library).write_text(digest + "\n" if hash_text == "matching" else hash_text)


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _marker_absent(tmp_path: Path) -> bool:
    return not (tmp_path / "marker").exists()


def test_the_planted_library_runs_its_constructor_when_loaded(cache, planted, tmp_path):
    """The attack works: what the other tests check never happens would be seen."""
    assert _marker_absent(tmp_path)
    assert ctypes.CDLL(str(planted)).answer() == 666
    assert not _marker_absent(tmp_path)


def test_a_genuine_library_is_built_hashed_and_loaded_again_without_a_rebuild(cache, source):
    library = kernel_cache.load(source, FLAGS)
    assert library.answer() == 42
    built = _library(cache)
    assert _hash_file(built).read_text() == hashlib.sha256(built.read_bytes()).hexdigest() + "\n"
    stamp = built.stat().st_mtime_ns
    assert kernel_cache.load(source, FLAGS).answer() == 42
    assert built.stat().st_mtime_ns == stamp


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_directories_are_created_0700_whatever_the_umask(cache, source, monkeypatch, umask,
                                                          tmp_path):
    nested = tmp_path / "a" / "b" / "c"
    monkeypatch.setenv("SPARSECNN_CACHE", str(nested))
    previous = os.umask(umask)
    try:
        kernel_cache.load(source, FLAGS)
    finally:
        os.umask(previous)
    for directory in (tmp_path / "a", tmp_path / "a" / "b", nested):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    for path in nested.iterdir():
        assert not path.stat().st_mode & 0o022, path


@pytest.mark.parametrize("spoil", [
    pytest.param(lambda d: d.chmod(0o777), id="world-writable"),
    pytest.param(lambda d: d.chmod(0o770), id="group-writable"),
    pytest.param(lambda d: os.chown(d, OTHER_USER, OTHER_USER), id="other-owner",
                 marks=root_only),
])
def test_a_planted_library_in_a_directory_others_control_never_runs(cache, source, planted,
                                                                     spoil, tmp_path):
    kernel_cache.ensure_built(source, FLAGS)
    library = _library(cache)
    _plant(planted, library)  # even with a matching hash file: the attacker writes both
    spoil(cache)
    with pytest.raises(kernel_cache.KernelCacheError, match="refusing to build into it or "
                                                            "load from it"):
        kernel_cache.load(source, FLAGS)
    assert _marker_absent(tmp_path)


@pytest.mark.parametrize("hash_text", ["0" * 64 + "\n", None, "", "not a hash\n"],
                         ids=["wrong", "missing", "empty", "malformed"])
def test_a_planted_library_without_its_hash_is_rebuilt_not_loaded(cache, source, planted,
                                                                   hash_text, tmp_path):
    kernel_cache.ensure_built(source, FLAGS)
    _plant(planted, _library(cache), hash_text)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert kernel_cache.load(source, FLAGS).answer() == 42
    assert _marker_absent(tmp_path)
    # a missing hash file is what a cache of an earlier version has: rebuilt without a word
    assert [str(w.message) for w in caught if "rebuilding" in str(w.message)] != [] \
        or hash_text is None


@pytest.mark.parametrize("spoil", [
    pytest.param(lambda f: f.chmod(0o766), id="writable-by-others"),
    pytest.param(lambda f: os.chown(f, OTHER_USER, OTHER_USER), id="other-owner",
                 marks=root_only),
    pytest.param(lambda f: _hash_file(f).chmod(0o666), id="hash-writable-by-others"),
])
def test_a_library_of_another_owner_or_mode_is_rebuilt_not_loaded(cache, source, planted,
                                                                  spoil, tmp_path):
    kernel_cache.ensure_built(source, FLAGS)
    library = _library(cache)
    _plant(planted, library)  # matching hash: only ownership and mode give it away
    spoil(library)
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        assert kernel_cache.load(source, FLAGS).answer() == 42
    assert _marker_absent(tmp_path)
    assert library.stat().st_uid == os.geteuid() and not library.stat().st_mode & 0o022


@pytest.mark.parametrize("damage", [
    pytest.param(lambda f: os.truncate(f, f.stat().st_size // 2), id="truncated"),
    pytest.param(lambda f: os.truncate(f, 0), id="empty"),
    pytest.param(lambda f: _flip_byte(f, f.stat().st_size // 2), id="modified"),
])
def test_a_damaged_library_is_rebuilt(cache, source, damage):
    kernel_cache.ensure_built(source, FLAGS)
    library = _library(cache)
    damage(library)
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        assert kernel_cache.load(source, FLAGS).answer() == 42
    assert _hash_file(library).read_text().strip() == \
        hashlib.sha256(library.read_bytes()).hexdigest()


def test_temporaries_of_a_killed_build_are_ignored_then_removed(cache, source):
    kernel_cache.ensure_built(source, FLAGS)
    library = _library(cache)
    key = library.name[len("kernels-"):-len(".so")]
    mine = cache / f".kernels-{key}-killed.so"  # kill -9 during a compile leaves 0 bytes
    old = cache / ".kernels-x1y2z3.so"          # an earlier version's temporary, hours old
    running = cache / ".kernels-0123456789abcdef-live.so"  # another key's build, running
    for path in (mine, old, running):
        path.touch(mode=0o600)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert kernel_cache.load(source, FLAGS).answer() == 42  # ignored: not loaded, no error
    library.unlink()
    assert kernel_cache.load(source, FLAGS).answer() == 42  # a rebuild cleans up
    assert not mine.exists() and not old.exists() and running.exists()


def test_a_hanging_compiler_is_killed_after_the_timeout(cache, source, monkeypatch, tmp_path):
    """The compiler driver and what it started (its process group) are killed."""
    compiler = tmp_path / "hanging-c++"
    child = tmp_path / "child.pid"
    compiler.write_text(f"""#!/bin/sh
if [ "$1" = --version ]; then echo hanging 1.0; exit 0; fi
sleep 300 &
echo $! > {child}
wait
""")
    compiler.chmod(0o755)
    monkeypatch.setenv("CXX", str(compiler))
    monkeypatch.setenv("SPARSECNN_COMPILE_TIMEOUT", "1.5")
    start = time.monotonic()
    with pytest.raises(kernel_cache.KernelCacheError,
                       match=r"did not finish within 1.5 s \(SPARSECNN_COMPILE_TIMEOUT\)"):
        kernel_cache.load(source, FLAGS)
    assert time.monotonic() - start < 30
    pid = int(child.read_text())
    for _ in range(50):  # the kill is delivered; the zombie is reaped by init
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2] \
            if Path(f"/proc/{pid}/stat").exists() else "gone"
        assert state in ("Z", "gone"), f"the compiler's child {pid} still runs"
    assert not list(cache.glob(".kernels-*")) and not list(cache.glob("kernels-*.so"))


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf"])
def test_a_bad_compile_timeout_is_named(cache, source, monkeypatch, value):
    monkeypatch.setenv("SPARSECNN_COMPILE_TIMEOUT", value)
    with pytest.raises(kernel_cache.KernelCacheError,
                       match=f"SPARSECNN_COMPILE_TIMEOUT must be a positive number of seconds; "
                             f"got '{value}'"):
        kernel_cache.load(source, FLAGS)


@pytest.mark.parametrize("value", ["/nonexistent", "no-such-compiler-xyz", "'unbalanced"])
def test_an_unusable_cxx_is_named_not_replaced(cache, source, monkeypatch, value):
    monkeypatch.setenv("CXX", value)
    with pytest.raises(kernel_cache.KernelCacheError, match=f"CXX={value!r}"):
        kernel_cache.load(source, FLAGS)
    assert not cache.exists()  # nothing was built with another compiler


def test_cxx_with_arguments(cache, source, monkeypatch):
    compiler = shutil.which("c++") or shutil.which("g++")
    monkeypatch.setenv("CXX", f"{compiler} -DUNUSED_DEFINE=1")
    assert kernel_cache.load(source, FLAGS).answer() == 42


# -- through the layer: the real kernels ---------------------------------------------------


@pytest.fixture
def layer_state():
    saved = dict(native._STATE)
    native.reset()
    yield
    native.reset()
    native._STATE.update(saved)


def _layer_and_reference():
    """A 2-step ISTA layer, an input, and its output on PyTorch's operations."""
    layer = SparseConv2d(3, 8, 3, padding=1, n_iter=2, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    os.environ["SPARSECNN_NATIVE"] = "0"
    try:
        native.reset()
        with torch.no_grad():
            reference = layer(x)
    finally:
        del os.environ["SPARSECNN_NATIVE"]
        native.reset()
    return layer, x, reference


def test_unusable_cxx_warns_naming_it_and_the_layer_falls_back(cache, monkeypatch,
                                                              layer_state):
    layer, x, reference = _layer_and_reference()
    monkeypatch.setenv("CXX", "/nonexistent")
    with pytest.warns(RuntimeWarning, match="CXX='/nonexistent' is not an executable"):
        assert not native.available()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), reference, rtol=0, atol=0)


@pytest.mark.slow  # builds the real kernels twice (~20 s each on a busy 2-core machine)
def test_planted_kernels_never_run_and_the_layer_stays_correct(cache, planted, layer_state,
                                                               tmp_path):
    """The issue's attack on the real cache name: (a) the cache directory writable by
    others -- refused, PyTorch fallback; (b) a private directory, the planted library with
    the genuine library's hash -- rebuilt.  The constructor never runs; the outputs are the
    PyTorch path's (to rounding when the rebuilt kernels run)."""
    layer, x, reference = _layer_and_reference()
    assert native.available()
    library = _library(cache)
    genuine_hash = _hash_file(library).read_text()
    _plant(planted, library)
    cache.chmod(0o777)
    native.reset()
    with pytest.warns(RuntimeWarning, match="writable by group or others"):
        assert not native.available()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), reference, rtol=0, atol=0)
    assert _marker_absent(tmp_path)
    cache.chmod(0o700)
    _hash_file(library).write_text(genuine_hash)
    native.reset()
    with pytest.warns(RuntimeWarning, match="does not match its recorded SHA-256"):
        assert native.available()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), reference, rtol=1e-5, atol=1e-6)
    assert _marker_absent(tmp_path)
