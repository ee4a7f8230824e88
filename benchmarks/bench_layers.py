"""Speed of the sparse-coding layers against plain PyTorch (issue 4, section 7).

* ``SparseConv2d(n_iter=0)`` vs ``nn.Conv2d`` + ``ReLU``: target ratio <= 1.1.
* ``SparseConv2d(n_iter=k)`` vs the cost of ``1 + 2k`` convolutions (one analysis ``D^T x``, and a
  synthesis + analysis per step): target ratio <= 1.3 of that ideal.

Forward and forward+backward, batch 64, 32x32 inputs, 3 -> 64 channels, 3x3 kernels, padding 1,
float32, on ``--threads`` CPU threads.  ``--clock cpu`` (default) measures the process's CPU
time (the work done, summed over threads), which other processes on a shared machine disturb
far less than elapsed time (``--clock wall``).  The candidate and its reference are timed
alternately (``--repeats`` rounds after a warm-up that also computes and caches the layer's
Lipschitz constant, whose one-off cost is printed) and each is summarised by its minimum, the
estimate least disturbed by other processes on a shared machine; the ratio is min / min.

    python benchmarks/bench_layers.py [--threads 2] [--repeats 10] [--k 1 2 4]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sparsecnn.nn import SparseConv2d

CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
CLOCK = CLOCKS["cpu"]


def paired_times(candidate: Callable[[], object], reference: Callable[[], object],
                 repeats: int, warmup: int = 2) -> tuple[float, float]:
    """Minimum times of ``candidate`` and ``reference``, measured alternately with ``CLOCK``."""
    for _ in range(warmup):
        candidate()
        reference()
    times: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(repeats):
        for index, function in enumerate((candidate, reference)):
            start = CLOCK()
            function()
            times[index].append(CLOCK() - start)
    return min(times[0]), min(times[1])


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
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--methods", nargs="+", default=["ista", "fista", "lca"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu: process CPU time of all threads (robust on a shared "
                        "machine); wall: elapsed time")
    arguments = parser.parse_args()
    global CLOCK
    CLOCK = CLOCKS[arguments.clock]
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
          f"{arguments.repeats} alternating runs")

    print("\nSparseConv2d(n_iter=0) vs Conv2d + ReLU (target <= 1.10)")
    for label, make in (("forward", forward_only), ("forward+backward", forward_backward)):
        sparse, reference = paired_times(make(one_shot, x), make(plain, x), arguments.repeats)
        print(f"  {label:17s} plain {1e3 * reference:8.2f} ms  sparse {1e3 * sparse:8.2f} ms  "
              f"ratio {sparse / reference:.3f}")

    print("\nSparseConv2d(n_iter=k) vs (1 + 2k) x one conv2d (target <= 1.30)")
    for method in arguments.methods:
        for k in arguments.k:
            layer = SparseConv2d.from_conv(conv, n_iter=k, method=method)
            start = time.perf_counter()
            lipschitz = layer.lipschitz(x.shape[1:])
            setup = time.perf_counter() - start
            for label, make, unit in (("forward", forward_only, single_convolution),
                                      ("forward+backward", forward_backward,
                                       single_convolution_backward)):
                measured, one = paired_times(make(layer, x), unit, arguments.repeats)
                ideal = (1 + 2 * k) * one
                print(f"  {method:5s} k={k}  {label:17s} {1e3 * measured:8.2f} ms  ideal "
                      f"{1e3 * ideal:8.2f} ms (1 conv {1e3 * one:6.2f} ms)  ratio "
                      f"{measured / ideal:.3f}")
            print(f"  {method:5s} k={k}  step constant L = {lipschitz:.4f} (computed once per "
                  f"weight version and input size: {setup:.2f} s)")
    transpose, convolution = paired_times(single_transpose, single_convolution,
                                          arguments.repeats)
    print(f"\nfor reference: conv_transpose2d / conv2d forward = {transpose / convolution:.3f}")

if __name__ == "__main__":
    main()
