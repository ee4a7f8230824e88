"""Speed of the sparse-coding layers against plain PyTorch.

* ``SparseConv2d(n_iter=0)`` vs ``nn.Conv2d`` + ``ReLU``: target ratio <= 1.1.
* ``SparseConv2d(n_iter=k)`` vs the cost of ``1 + 2k`` convolutions (one analysis ``D^T x``, and a
  synthesis + analysis per step): target ratio <= 1.3 of that ideal.

Forward and forward+backward, batch 64, 32x32 inputs, 3 -> 64 channels, 3x3 kernels, padding 1,
float32, on ``--threads`` CPU threads, elapsed time (``--clock wall``, default).  The process CPU
clock (``--clock cpu``) is not a fair alternative with several threads: Linux updates the CPU
time of the non-calling OpenMP threads only at scheduler ticks, so a single 2 ms convolution is
counted as about one thread's worth while a 20 ms layer is counted with both threads, spin-waits
included (measured: conv2d wall 1.7 ms, cpu 1.7 ms, single-thread 3.4 ms).

On a shared machine each round first waits (at most ``--idle-wait`` seconds) until the machine
is idle (``/proc/stat``): with a busy core every OpenMP barrier waits for a scheduler slice and
an op of 0.5 ms takes 8 ms.  After a warm-up (which also computes and caches each layer's
Lipschitz constant, whose one-off cost is printed), each comparison runs ``--repeats`` rounds
in a block, candidate and reference in alternating order, and the whole sequence of blocks
runs ``--passes`` times (:func:`paired_block_times`).  Each is summarised by its minimum; the
ratio is min / min, printed beside the median over rounds of the same round's ratio ("paired
median", the steadier on a drifting host).

``--omp-wait-policy`` (default ``default``: the variable unset, as in a plain PyTorch process)
sets ``OMP_WAIT_POLICY`` for the timed process, re-executing the script when the environment
differs (OpenMP reads it once, at start-up).  ``make`` exports ``PASSIVE`` for the test suite,
where two pytest workers share two cores; under ``PASSIVE`` each OpenMP worker sleeps after
every parallel region and is woken by a futex at the next one, which adds a fixed cost to
each of the hundreds of operations of a k-step layer but only once to the reference convolution.

``--allocator retain`` keeps freed memory in the process (glibc ``mallopt``: mmap threshold
32 MiB, no trimming), as jemalloc/tcmalloc set-ups do; with the default system allocator a
16.8 MB code tensor that glibc returned to the kernel costs ~4000 page faults (several ms, more
than the 1.7 ms convolution) whenever it is allocated again, for the layer and the reference
alike but not equally often.

``--kernels torch`` runs the layers on PyTorch's operations instead of the native kernels of
``sparsecnn.nn.native`` (``SPARSECNN_NATIVE=0``); the "floor" section always times PyTorch's
convolutions and matrix products alone, the floor of that path.

    python benchmarks/bench_layers.py [--threads 2] [--repeats 10] [--k 1 2 4]
                                      [--allocator retain|system] [--passes 2]
                                      [--omp-wait-policy default|passive|active]
                                      [--kernels native|torch]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

OMP_WAIT_POLICIES = ("default", "passive", "active")


def apply_omp_wait_policy(argv: list[str]) -> None:
    """Re-execute this script with ``OMP_WAIT_POLICY`` as ``--omp-wait-policy`` asks, before
    torch starts OpenMP (``main`` parses the same option again, for ``--help``)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--omp-wait-policy", choices=OMP_WAIT_POLICIES, default="default")
    policy = parser.parse_known_args(argv)[0].omp_wait_policy
    wanted = None if policy == "default" else policy.upper()
    if os.environ.get("OMP_WAIT_POLICY") != wanted:
        environment = dict(os.environ)
        environment.pop("OMP_WAIT_POLICY", None)
        if wanted is not None:
            environment["OMP_WAIT_POLICY"] = wanted
        os.execve(sys.executable, [sys.executable, *sys.argv], environment)


if __name__ == "__main__":
    apply_omp_wait_policy(sys.argv[1:])

# torch after the policy: OpenMP reads OMP_WAIT_POLICY when torch loads it
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from sparsecnn.nn import SparseConv2d, native  # noqa: E402
from sparsecnn.nn.backends import conv_synthesis  # noqa: E402
from sparsecnn.nn.unrolling import ConvUnrolling, batch_chunk  # noqa: E402

CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
CLOCK = CLOCKS["wall"]
IDLE_WAIT = 10.0
BUSY_ROUNDS = [0, 0]  # rounds that found the machine busy, all rounds
# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def retain_freed_memory() -> None:
    """Keep freed blocks up to 32 MiB in the heap and never trim it (glibc ``mallopt``)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not (libc.mallopt(M_MMAP_THRESHOLD, 32 * 2 ** 20) and
            libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1)):
        raise RuntimeError("mallopt failed: --allocator retain (the default) needs glibc; "
                           "pass --allocator system")


def idle_fraction(interval: float = 0.25) -> float:
    """Fraction of CPU time the whole machine spent idle over ``interval`` seconds."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]
    total, idle = sample()
    time.sleep(interval)
    total_after, idle_after = sample()
    return (idle_after - idle) / max(total_after - total, 1)


def wait_until_idle() -> None:
    """Wait (at most ``IDLE_WAIT`` seconds) until at least 90% of the machine is idle."""
    BUSY_ROUNDS[1] += 1
    deadline = time.perf_counter() + IDLE_WAIT
    try:
        while idle_fraction() < 0.9:
            if time.perf_counter() > deadline:
                BUSY_ROUNDS[0] += 1
                return
    except OSError:  # no /proc/stat: nothing to wait for
        return


@dataclass
class Job:
    """One timed comparison: ``candidate`` against ``reference``, printed by ``report``."""

    candidate: Callable[[], object]
    reference: Callable[[], object]
    report: Callable[[float, float], str]


def paired_block_times(jobs: list[Job], repeats: int, passes: int = 2, warmup: int = 2
                      ) -> list[tuple[float, float, float]]:
    """Minimum times ``(candidate, reference)`` of every job, measured with ``CLOCK``, and
    the median over rounds of the ratio candidate / reference of the same round.

    Each job is timed in a block of ``repeats`` rounds (as a training loop repeats one
    layer: its allocations are then recycled the same way each time), and the whole sequence
    of blocks runs ``passes`` times, so that every job gets more than one window of the
    machine (on a shared host the speed of one conv drifts by up to 40% over tens of
    seconds).  Within a block the order of candidate and reference alternates from round to
    round (whichever runs second finds the caches warm), and each round starts with one
    untimed call after the idle wait (the first operation after a sleep runs slow).  The
    reference is summarised per job, from the rounds of that job: the machine's speed then
    cancels in the ratio (a minimum over all jobs would compare each layer with whichever
    window was fastest).  The two minima may still come from different rounds, so from
    different phases of a drifting host; the median of the per-round ratios pairs each
    candidate with the reference run next to it, which is the steadier of the two numbers.
    """
    candidate_times: list[list[float]] = [[] for _ in jobs]
    reference_times: list[list[float]] = [[] for _ in jobs]
    for _ in range(passes):
        for job, store, reference_store in zip(jobs, candidate_times, reference_times,
                                               strict=True):
            for _ in range(warmup):
                job.candidate()
                job.reference()
            pair = [(job.candidate, store), (job.reference, reference_store)]
            for round_index in range(repeats):
                if IDLE_WAIT > 0:
                    wait_until_idle()
                job.reference()
                for function, times in pair[::-1] if round_index % 2 else pair:
                    start = CLOCK()
                    function()
                    times.append(CLOCK() - start)
    return [(min(times), min(reference), statistics.median(
        [c / r for c, r in zip(times, reference, strict=True)]))
            for times, reference in zip(candidate_times, reference_times, strict=True)]


def ista_skeleton(x: torch.Tensor, weight: torch.Tensor, k: int) -> Callable[[], None]:
    """Only the convolutions and matrix products of ``SparseConv2d(n_iter=k, method='ista')``
    forward and backward (x without gradient), chunked as the layer chunks: ``conv2d`` +
    ``(k - 1)`` x (synthesis + ``conv2d``), then the weight gradient of the first step and
    ``(k - 1)`` x (weight gradient, synthesis, weight gradient, ``conv2d``), with no
    elementwise pass and no bookkeeping.  Its ratio to the ideal is the floor that the
    layer's elementwise passes and per-operation overheads are added to."""
    atoms = weight.detach() / torch.linalg.vector_norm(weight.detach().flatten(1), dim=1).view(
        -1, 1, 1, 1)
    settings = ConvUnrolling("ista", k, 1.0, True, True, (1, 1), (1, 1))
    chunk = batch_chunk(x, atoms, settings)
    size = x.shape[-2:]

    def weight_gradient(grad_output: torch.Tensor, signal: torch.Tensor) -> None:
        torch.ops.aten.convolution_backward(grad_output, signal, atoms, None, (1, 1), (1, 1),
                                            (1, 1), False, (0, 0), 1, [False, True, False])

    def run() -> None:
        for start in range(0, x.shape[0], chunk):
            signals = x[start:start + chunk]
            codes = [F.conv2d(signals, atoms, None, 1, 1)]
            residuals = [signals]
            for _ in range(k - 1):
                residuals.append(conv_synthesis(codes[-1], atoms, (1, 1), (1, 1), size))
                codes.append(F.conv2d(residuals[-1], atoms, None, 1, 1))
            grad = torch.ones_like(codes[-1])
            for step in range(k - 1, -1, -1):
                weight_gradient(grad, residuals[step])
                if step == 0:
                    break
                grad_residual = conv_synthesis(grad, atoms, (1, 1), (1, 1), size)
                weight_gradient(codes[step - 1], grad_residual)
                grad = F.conv2d(grad_residual, atoms, None, 1, 1)
    return run


def native_operations(x: torch.Tensor, weight: torch.Tensor, codes: torch.Tensor,
                      others: torch.Tensor) -> list[tuple[str, Callable[[], object]]]:
    """The native kernels' passes, when they are available (stride 1, padding 1)."""
    if not native.available():
        return []
    flipped = native.transposed_weight(weight)
    return [("native conv2d + add + relu (3 -> 64)",
             lambda: native.correlate(x, weight, (1, 1), addend=others, relu=True)),
            ("native residual x - D a (64 -> 3)",
             lambda: native.residual(x, codes, weight, (1, 1), flipped))]


def forward_backward(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        module.zero_grad(set_to_none=True)
        module(x).sum().backward()
    return run


def forward_only(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            module(x)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10,
                        help="rounds per comparison and pass")
    parser.add_argument("--passes", type=int, default=2,
                        help="times the whole sequence of comparisons is run")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--methods", nargs="+", default=["ista", "fista", "lca"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time; cpu: process CPU time (undercounts the "
                        "other threads of short ops, see the module docstring)")
    parser.add_argument("--idle-wait", type=float, default=10.0,
                        help="seconds each round may wait for an idle machine (0: no wait)")
    parser.add_argument("--omp-wait-policy", choices=OMP_WAIT_POLICIES, default="default",
                        help="OMP_WAIT_POLICY of the timed process (default: unset)")
    parser.add_argument("--kernels", choices=["native", "torch"], default="native",
                        help="native: the C++ kernels of sparsecnn.nn.native where they apply "
                        "(default); torch: PyTorch's operations (SPARSECNN_NATIVE=0)")
    parser.add_argument("--allocator", choices=["system", "retain"], default="retain",
                        help="retain (default): glibc keeps freed memory, no page faults on "
                        "reuse; system: glibc's defaults (the reference conv then ranges "
                        "1.5-12 ms and the ratios mean little)")
    arguments = parser.parse_args()
    if arguments.kernels == "torch":
        os.environ["SPARSECNN_NATIVE"] = "0"
        native.reset()
    global CLOCK, IDLE_WAIT
    CLOCK = CLOCKS[arguments.clock]
    IDLE_WAIT = arguments.idle_wait
    if arguments.allocator == "retain":
        retain_freed_memory()
    torch.set_num_threads(arguments.threads)
    torch.manual_seed(arguments.seed)
    generator = torch.Generator().manual_seed(arguments.seed)
    x = torch.randn(arguments.batch, 3, arguments.size, arguments.size, generator=generator)

    conv = nn.Conv2d(3, 64, 3, padding=1)
    plain = nn.Sequential(conv, nn.ReLU())
    one_shot = SparseConv2d.from_conv(conv)
    codes = torch.randn(arguments.batch, 64, arguments.size, arguments.size,
                        generator=generator)

    def single_convolution() -> None:
        with torch.no_grad():
            F.conv2d(x, conv.weight, padding=1)

    def single_convolution_backward() -> None:
        weight = conv.weight.detach().requires_grad_()
        F.conv2d(x, weight, padding=1).sum().backward()

    def single_transpose() -> None:
        with torch.no_grad():
            F.conv_transpose2d(codes, conv.weight, padding=1)

    print(f"batch {arguments.batch}, {arguments.size}x{arguments.size}, 3 -> 64 channels, "
          f"3x3, float32, {arguments.threads} thread(s), {arguments.clock} time, min of "
          f"{arguments.passes} x {arguments.repeats} rounds, {arguments.allocator} allocator, "
          f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'unset')}, kernels "
          f"{'native' if native.available() else 'torch'}")

    def one_shot_report(label: str) -> Callable[[float, float, float], str]:
        return lambda sparse, reference, paired: (
            f"  {label:17s} plain {1e3 * reference:8.2f} ms  sparse {1e3 * sparse:8.2f} ms  "
            f"ratio {sparse / reference:.3f}  paired median {paired:.3f}")

    def k_step_report(method: str, k: int, label: str) -> Callable[[float, float, float], str]:
        def report(measured: float, one: float, paired: float) -> str:
            ideal = (1 + 2 * k) * one
            return (f"  {method:5s} k={k}  {label:17s} {1e3 * measured:8.2f} ms  ideal "
                    f"{1e3 * ideal:8.2f} ms (1 conv {1e3 * one:6.2f} ms)  ratio "
                    f"{measured / ideal:.3f}  paired median {paired / (1 + 2 * k):.3f}")
        return report

    def pass_report(label: str) -> Callable[[float, float, float], str]:
        return lambda measured, convolution, paired: (
            f"  {label:38s} {1e3 * measured:6.2f} ms / {1e3 * convolution:6.2f} ms = "
            f"{measured / convolution:.3f}")

    sections: list[tuple[str, list[Job]]] = [
        ("SparseConv2d(n_iter=0) vs Conv2d + ReLU (target <= 1.10)",
         [Job(make(one_shot, x), make(plain, x), one_shot_report(label))
          for label, make in (("forward", forward_only),
                              ("forward+backward", forward_backward))])]
    k_step_jobs, setups = [], []
    for method in arguments.methods:
        for k in arguments.k:
            layer = SparseConv2d.from_conv(conv, n_iter=k, method=method)
            start = time.perf_counter()
            lipschitz = layer.lipschitz(x.shape[1:])
            setups.append(f"  {method:5s} k={k}  step constant L = {lipschitz:.4f} (computed "
                          f"once per weight version and input size: "
                          f"{time.perf_counter() - start:.2f} s)")
            k_step_jobs += [Job(forward_only(layer, x), single_convolution,
                                k_step_report(method, k, "forward")),
                            Job(forward_backward(layer, x), single_convolution_backward,
                                k_step_report(method, k, "forward+backward"))]
    sections.append(("SparseConv2d(n_iter=k) vs (1 + 2k) x one conv2d (target <= 1.30)",
                     k_step_jobs))
    others = torch.randn(codes.shape, generator=generator)
    size = (arguments.size, arguments.size)
    sections.append(("floor of the PyTorch path: its convolutions and matrix products alone "
                     "(ISTA forward+backward), vs (1 + 2k) x one conv2d", [
                         Job(ista_skeleton(x, conv.weight, k), single_convolution_backward,
                             k_step_report("ista", k, "skeleton f+b")) for k in arguments.k]))
    sections.append(("for reference, each / one conv2d forward (3 -> 64):", [
        Job(operation, single_convolution, pass_report(label)) for label, operation in (
            ("conv_transpose2d (64 -> 3)", single_transpose),
            ("matmul + col2im synthesis (64 -> 3)",
             lambda: conv_synthesis(codes, conv.weight.detach(), (1, 1), (1, 1), size)),
            ("relu pass over the codes", lambda: torch.relu(codes)),
            ("add+relu pass over the codes", lambda: torch.ops.aten._add_relu(codes, others)),
            *native_operations(x, conv.weight.detach(), codes, others))]))
    jobs = [job for _, section_jobs in sections for job in section_jobs]
    results = iter(paired_block_times(jobs, arguments.repeats, arguments.passes))
    for title, section_jobs in sections:
        print(f"\n{title}")
        for job in section_jobs:
            print(job.report(*next(results)))
    print("\n" + "\n".join(setups))
    print(f"rounds that found the machine busy after {IDLE_WAIT:g} s: {BUSY_ROUNDS[0]} of "
          f"{BUSY_ROUNDS[1]}")

if __name__ == "__main__":
    main()
