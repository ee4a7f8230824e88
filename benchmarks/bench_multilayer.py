"""Speed of the joint multi-layer model against a plain PyTorch ML-ISTA network.

The reference is the ``ML_ISTA_NET`` of Sulam, Aberdam, Beck, Elad (IEEE TPAMI 2020, arXiv
1806.00701; their code, ``RHO = 1``): three convolutions of MNIST geometry (32@6x6 stride 2,
64@6x6 stride 2, 512@4x4 stride 1 on 28x28), ``T`` unfoldings of

    Gamma_hat_2 = W_3 Gamma_3,  Gamma_hat_1 = W_2 Gamma_hat_2
    Gamma_l = ReLU(Gamma_hat_l - W_l^T (W_l Gamma_hat_l - Gamma_{l-1}) + b_l)   (l = 1, 2, 3)

from the CNN forward pass, and a linear head with ``log_softmax``, written here as they wrote
it (one ``conv_transpose2d`` and one ``conv2d`` per layer and unfolding, plus the top-down pass).
The candidates are :class:`sparsecnn.nn.HierarchicalSparseCoding` (``inference="ml_ista"``)
with the same, unit-norm, filters and the same head:

* ``step 1``: ``step_size=1.0``, the same function as the reference (checked in float64 before
  timing: max |delta log p| is printed);
* ``1/L``: the default step ``1/L_l`` per layer, provably valid: ``L_l`` on the grid
  ``2^(k/16)`` above the layer's Lipschitz bound, certified after every optimizer step by
  warm-started power iteration and a perturbation bound, recomputed in full only when those
  disagree on the grid point (docs/theory.md A.8.3).

Timed, batch 64, float32, ``--threads`` threads, wall clock: "forward" (``torch.no_grad``),
"forward+backward" (NLL loss of the log-probabilities, ``backward``), "train step" (``zero_grad``,
forward, backward, ``SGD.step``).  Each of ``--rounds`` rounds times the reference and the
candidate alternately (order swapped every round), each as the median of ``--inner`` calls; the
table gives the median over rounds of the round's ratio (paired median) and min / min.

    python benchmarks/bench_multilayer.py [--threads 2] [--rounds 7] [--inner 5] [--T 1 3 6]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sparsecnn.nn import HierarchicalSparseCoding, SparseConv2d

GEOMETRY = ((1, 32, 6, 2), (32, 64, 6, 2), (64, 512, 4, 1))


class MLISTANet(nn.Module):
    """Sulam et al.'s ML_ISTA_NET (module docstring), with the filters and biases given."""

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor],
                 head: nn.Linear) -> None:
        super().__init__()
        self.W1, self.W2, self.W3 = (nn.Parameter(w.clone()) for w in weights)
        self.b1, self.b2, self.b3 = (nn.Parameter(b.clone().view(1, -1, 1, 1)) for b in biases)
        self.strd1, self.strd2, self.strd3 = (g[3] for g in GEOMETRY)
        self.Wclass = nn.Linear(head.in_features, head.out_features, dtype=head.weight.dtype)
        self.Wclass.load_state_dict(head.state_dict())

    def forward(self, x: torch.Tensor, T: int) -> torch.Tensor:
        gamma1 = F.relu(F.conv2d(x, self.W1, stride=self.strd1) + self.b1)
        gamma2 = F.relu(F.conv2d(gamma1, self.W2, stride=self.strd2) + self.b2)
        gamma3 = F.relu(F.conv2d(gamma2, self.W3, stride=self.strd3) + self.b3)
        for _ in range(T):
            gamma2_ml = F.conv_transpose2d(gamma3, self.W3, stride=self.strd3)
            gamma1_ml = F.conv_transpose2d(gamma2_ml, self.W2, stride=self.strd2)
            gamma1, gamma2 = gamma1_ml, gamma2_ml
            gamma1 = F.relu((gamma1 - F.conv2d(F.conv_transpose2d(
                gamma1, self.W1, stride=self.strd1) - x, self.W1, stride=self.strd1)) + self.b1)
            gamma2 = F.relu((gamma2 - F.conv2d(F.conv_transpose2d(
                gamma2, self.W2, stride=self.strd2) - gamma1, self.W2, stride=self.strd2))
                + self.b2)
            gamma3 = F.relu((gamma3 - F.conv2d(F.conv_transpose2d(
                gamma3, self.W3, stride=self.strd3) - gamma2, self.W3, stride=self.strd3))
                + self.b3)
        return F.log_softmax(self.Wclass(gamma3.flatten(1)), dim=1)


class Candidate(nn.Module):
    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor],
                 head: nn.Linear, n_unfold: int, step_size: float | None) -> None:
        super().__init__()
        layers = [SparseConv2d.from_dictionary(w, -b, stride=g[3])
                  for w, b, g in zip(weights, biases, GEOMETRY, strict=True)]
        self.features = HierarchicalSparseCoding(*layers, inference="ml_ista",
                                                 n_unfold=n_unfold, step_size=step_size)
        self.head = nn.Linear(head.in_features, head.out_features, dtype=head.weight.dtype)
        self.head.load_state_dict(head.state_dict())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.head(self.features(x).flatten(1)), dim=1)


def parameters(seed: int, dtype: torch.dtype) -> tuple[list, list, nn.Linear]:
    generator = torch.Generator().manual_seed(seed)
    weights, biases = [], []
    for in_channels, out_channels, kernel, _ in GEOMETRY:
        weight = torch.randn(out_channels, in_channels, kernel, kernel, generator=generator,
                             dtype=dtype)
        weights.append(weight / torch.linalg.vector_norm(weight.flatten(1), dim=1)
                       .view(-1, 1, 1, 1))
        biases.append(-0.1 * torch.rand(out_channels, generator=generator, dtype=dtype))
    head = nn.Linear(512, 10, dtype=dtype)
    with torch.no_grad():
        head.weight.copy_(torch.randn(10, 512, generator=generator, dtype=dtype) / 512 ** 0.5)
        head.bias.zero_()
    return weights, biases, head


def job(model: Callable[[torch.Tensor], torch.Tensor], module: nn.Module, kind: str,
        x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-3)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def forward_backward() -> None:
        F.nll_loss(model(x), y).backward()

    def train_step() -> None:
        optimizer.zero_grad()
        F.nll_loss(model(x), y).backward()
        optimizer.step()

    return {"forward": forward, "forward+backward": forward_backward,
            "train step": train_step}[kind]


def median_time(run: Callable[[], None], inner: int) -> float:
    times = []
    for _ in range(inner):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired(reference: Callable[[], None], candidate: Callable[[], None], rounds: int,
           inner: int) -> tuple[float, float, float, float]:
    """(paired median ratio, min/min ratio, min reference s, min candidate s)."""
    reference(), candidate()  # warm-up (allocations, L of the initial weights)
    ratios, ref_times, cand_times = [], [], []
    for index in range(rounds):
        if index % 2 == 0:
            ref, cand = median_time(reference, inner), median_time(candidate, inner)
        else:
            cand, ref = median_time(candidate, inner), median_time(reference, inner)
        ratios.append(cand / ref)
        ref_times.append(ref)
        cand_times.append(cand)
    return (statistics.median(ratios), min(cand_times) / min(ref_times), min(ref_times),
            min(cand_times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--inner", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--T", type=int, nargs="+", default=[1, 3, 6])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.rounds < 1 or args.inner < 1 or args.batch < 1 or min(args.T) < 0:
        parser.error("--rounds, --inner, --batch must be >= 1 and --T >= 0")
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed + 1)
    x = torch.rand(args.batch, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (args.batch,), generator=generator)

    weights, biases, head = parameters(args.seed, torch.float64)
    reference = MLISTANet(weights, biases, head)
    worst = 0.0
    with torch.no_grad():
        for n_unfold in args.T:
            candidate = Candidate(weights, biases, head, n_unfold, 1.0)
            worst = max(worst, float((candidate(x.double()) - reference(x.double(), n_unfold))
                                     .abs().max()))
    print(f"# same function (float64, step 1): max |delta log p| = {worst:.2e} over T={args.T}")

    print(f"# batch {args.batch}, 28x28, float32, {args.threads} threads, {args.rounds} rounds "
          f"x median of {args.inner}; ratio = sparsecnn / reference")
    print("| T | step | what | paired median | min/min | reference ms | sparsecnn ms |")
    print("|---|---|---|---|---|---|---|")
    weights, biases, head = parameters(args.seed, torch.float32)
    for n_unfold in args.T:
        for step_name, step in (("1", 1.0), ("1/L", None)):
            for kind in ("forward", "forward+backward", "train step"):
                reference = MLISTANet(weights, biases, head)
                candidate = Candidate(weights, biases, head, n_unfold, step)
                median, minmin, ref_s, cand_s = paired(
                    job(lambda v, m=reference, t=n_unfold: m(v, t), reference, kind, x, y),
                    job(candidate, candidate, kind, x, y), args.rounds, args.inner)
                print(f"| {n_unfold} | {step_name} | {kind} | {median:.2f} | {minmin:.2f} | "
                      f"{ref_s * 1e3:.1f} | {cand_s * 1e3:.1f} |", flush=True)


if __name__ == "__main__":
    main()
