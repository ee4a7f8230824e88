"""LCA layer speed: ``SparseConv2d(method="lca")`` beside lca-pytorch's ``LCAConv2D``.

Run::

    python benchmarks/bench_lca.py [--quick] [--steps 200] [--batch 16] [--size 32]

Both integrate the same non-negative LCA dynamics (docs/theory.md, the LCA section;
Rozell et al. 2008) from ``u = 0`` for the same number of Euler steps::

    a = relu(u - lam),   u <- u + eta (D^T x - u - (D^T D - I) a)

(lca-pytorch runs ``steps + 1`` iterations: it returns the codes formed before its last
update) on the same unit-norm 7x7 filters (3 -> 64 channels, stride 1, "same" zero padding), with
lca-pytorch's ``tau = 1/eta`` set to the layer's ``L`` (sparsecnn's step is ``1/L``) and its
``lambda_`` to the layer's threshold (``bias = -lam``, ``||w|| = 1``); input normalisation
(``input_zero_mean``/``input_unit_var``) is off.  lca-pytorch forms ``(D^T D - I) a`` as one
13x13 convolution with the filters' autocorrelation, which omits the cropping of ``D a`` at
the image border, so the codes agree only away from the border, and the border's error
spreads 6 pixels inwards per step: the table shows the largest difference after
``CHECK_STEPS`` steps on the interior (``CHECK_STEPS * 6`` pixels in) relative to the
largest code.

lca-pytorch (module ``lcapt``) is not on PyPI; install it with
``pip install git+https://github.com/lanl/lca-pytorch``.  Without it only sparsecnn's timings
are printed, with that note.  Times: wall clock, min over ``--repeats`` alternating rounds after
one untimed call each, no autograd, ``--threads`` torch threads.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch

from sparsecnn.nn import SparseConv2d

BORDER = 6  # lca-pytorch's 13x13 lateral kernel reaches 6 pixels past the image
CHECK_STEPS = 2  # steps of the agreement check (a = 0 at the first: the second has inhibition)


def timed(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 4, 20 steps, 2 repeats")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    steps, repeats = (20, 2) if args.quick else (args.steps, args.repeats)
    batch = 4 if args.quick else args.batch
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed)
    x = torch.randn(batch, 3, args.size, args.size, generator=generator)
    weight = torch.randn(64, 3, 7, 7, generator=generator)
    weight /= weight.flatten(1).norm(dim=1)[:, None, None, None]

    layer = SparseConv2d(3, 64, 7, padding=3, n_iter=steps, method="lca", nonneg=True)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.fill_(-args.lam)
    lipschitz = layer.lipschitz(x.shape[1:])

    def ours() -> torch.Tensor:
        with torch.no_grad():
            return layer(x)

    print(f"LCA, batch {batch}, 3x{args.size}x{args.size} -> 64 maps, 7x7 filters, "
          f"{steps} steps, lam {args.lam}, eta = 1/L = {1 / lipschitz:.4g}, "
          f"{args.threads} threads, min of {repeats} rounds", file=sys.stderr, flush=True)
    try:
        from lcapt.lca import LCAConv2D
    except ImportError:
        ours()
        seconds = timed(ours, repeats)
        print(f"sparsecnn SparseConv2d lca: {seconds:.3f} s "
              f"({batch * steps / seconds:,.0f} image-steps/s)")
        print("lca-pytorch not installed (it is not on PyPI: pip install "
              "git+https://github.com/lanl/lca-pytorch); no comparison")
        return 0

    with tempfile.TemporaryDirectory() as results:
        peer = LCAConv2D(64, 3, results, kernel_size=7, lambda_=args.lam, tau=lipschitz,
                         lca_iters=steps + 1, pad="same", nonneg=True, input_zero_mean=False,
                         input_unit_var=False, return_vars=["acts"], cudnn_benchmark=False)
        peer.assign_weight_values(weight.reshape(peer.weights.shape), normalize=False)

        def theirs() -> torch.Tensor:
            with torch.no_grad():
                return peer(x)

        # lca-pytorch returns the codes a(u) formed before its last update: its n + 1
        # iterations give our n steps' codes
        layer.n_iter, peer.lca_iters = CHECK_STEPS, CHECK_STEPS + 1
        codes = ours()
        peer_codes = theirs().reshape(codes.shape)
        layer.n_iter, peer.lca_iters = steps, steps + 1
        margin = CHECK_STEPS * BORDER
        inner = (slice(None), slice(None), slice(margin, -margin), slice(margin, -margin))
        difference = float((codes[inner] - peer_codes[inner]).abs().max()
                           / codes.abs().max().clamp_min(1e-30))
        ours(), theirs()  # untimed first calls
        times = {"ours": float("inf"), "theirs": float("inf")}
        for round_index in range(repeats):
            # alternating order: neither always runs first after the other's allocations
            order = ("ours", "theirs") if round_index % 2 == 0 else ("theirs", "ours")
            for name in order:
                times[name] = min(times[name], timed(ours if name == "ours" else theirs, 1))
            print(f"  round {round_index + 1}/{repeats}: sparsecnn {times['ours']:.3f} s, "
                  f"lca-pytorch {times['theirs']:.3f} s", file=sys.stderr, flush=True)
    print(f"{'solver':<34} {'time':>9} {'image-steps/s':>14} {'time / lca-pytorch':>19}")
    for label, key in (("sparsecnn SparseConv2d lca", "ours"), ("lca-pytorch LCAConv2D", "theirs")):
        print(f"{label:<34} {times[key]:>8.3f}s {batch * steps / times[key]:>14,.0f} "
              f"{times[key] / times['theirs']:>19.3f}")
    print(f"codes after {CHECK_STEPS} steps, {margin} px in from the border: "
          f"max |difference| / max code = {difference:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
