"""Side-by-side speed benchmark of sparsecnn against its peers.

Usage::

    python benchmarks/run.py [--quick] [--out results.json] [--seed 0] [--only P1|P2]
                             [--solvers "homotopy,spams"] [--rounds 5]
                             [--n-signals N] [--image-size N]

A peer that is not installed (SPAMS, sporco) is named once on stderr with its install command
and its rows are left out; the exact solvers (sparsecnn homotopy, SPAMS) are timed with 1 and
2 threads each and keep the faster (the table's ``setting`` column).

Problems (built in :mod:`problems`, nothing cached on disk):

* P1 -- 20,000 mean-removed 8x8 patches, 256 learned unit-norm atoms, lam for ~6% non-zeros,
  signed and non-negative.  Every solver minimises ``1/2 ||x - D a||^2 + lam ||a||_1`` per
  patch (``a >= 0`` for the non-negative variant); F is the sum over patches.
  Peers: scikit-learn ``sparse_encode`` (``lasso_cd``, ``lasso_lars``; its ``alpha`` is our
  ``lam``: it divides by ``n_features`` before calling ``Lasso``/``LassoLars``, whose data
  term is ``1/(2 n_samples) ||y - X w||^2``), sporco ``admm.bpdn.BPDN`` and
  ``pgm.bpdn.BPDN`` (``1/2 ||D X - S||^2 + lmbda ||X||_1``), SPAMS ``lasso`` (``mode=2``:
  ``0.5 ||x - D a||^2 + lambda1 ||a||_1``).  sparsecnn runs ``sparse_code`` with
  ``method="homotopy"`` (exact, like SPAMS's LARS) and ``method="fista"`` (a schedule of
  tolerances).
* P2 -- one 256x256 high-passed image, 32 8x8 filters, lam = 0.05, the convolutional energy
  with circular boundaries (sporco's convention: ``1/2 ||sum_k d_k (*) a_k - s||^2 +
  lam sum_k ||a_k||_1``, ``(*)`` circular convolution, filters zero-padded at the origin).
  Peers: sporco ``admm.cbpdn.ConvBPDN`` and ``pgm.cbpdn.ConvBPDN``.

Every final code is scored with one float64 energy function per problem (below), never with
the solver's own report.  F* is the lowest energy any run reaches; the time to target is the
wall-clock time (``time.perf_counter``) of the fastest run, started from scratch, whose
codes reach ``F <= F* (1 + 1e-3)``.  Each iterative solver runs a schedule of stopping
tolerances from loose to tight (the tightest is the "long run").  Threads: 2 everywhere
(torch.set_num_threads, OMP/MKL/OpenBLAS environment, SPAMS numThreads, sklearn n_jobs), with
``OMP_WAIT_POLICY=PASSIVE``.  Before its timed runs every solver is run once, untimed, with its
loosest setting (a warm-up: thread pools, lazy imports, first-call initialisation and the
Numba compilation of the homotopy kernel).
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_variable] = "2"
# Idle OpenMP threads sleep instead of spinning: on a shared machine spinning workers turn
# every small parallel region into milliseconds of scheduler contention (same for all solvers).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import importlib  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from problems import ConvProblem, DenseProblem, image_problem, patch_problem  # noqa: E402

THREADS = 2
TARGET = 1e-3
REPEAT_BELOW = 5.0


@dataclass
class Trial:
    setting: str
    seconds: float
    energy: float
    density: float
    most_negative: float


@dataclass
class SolverResult:
    problem: str
    solver: str
    is_sparsecnn: bool
    trials: list[Trial] = field(default_factory=list)
    time_to_target: float | None = None
    final_energy: float = float("nan")
    final_density: float = float("nan")
    ratio_to_fastest_peer: float | None = None
    best_setting: str | None = None  # the fastest setting that reached the target


# -- common energies --------------------------------------------------------------------------
def feasible(codes: np.ndarray, nonneg: bool) -> np.ndarray:
    """The codes scored: for the non-negative problem, negative entries (some solvers return
    rounding-level negatives) are set to 0 -- the projection onto the constraint -- and the most
    negative entry is reported in the table."""
    codes = np.asarray(codes, dtype=np.float64)
    return np.maximum(codes, 0.0) if nonneg else codes


def dense_energy(problem: DenseProblem, codes: np.ndarray, nonneg: bool) -> float:
    """``sum_n 1/2 ||x_n - D a_n||^2 + lam ||a_n||_1`` of :func:`feasible` codes."""
    codes = feasible(codes, nonneg)
    residual = problem.signals - codes @ problem.dictionary.T
    return float(0.5 * np.sum(residual ** 2) + problem.lam * np.abs(codes).sum())


def circular_synthesis(filters: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``sum_k d_k (*) a_k`` with circular convolution, filters anchored at the origin."""
    shape = codes.shape[-2:]
    filter_spectrum = np.fft.rfft2(filters, s=shape)
    return np.fft.irfft2((filter_spectrum * np.fft.rfft2(codes)).sum(0), s=shape)


def conv_energy(problem: ConvProblem, codes: np.ndarray, nonneg: bool) -> float:
    codes = feasible(codes, nonneg)
    residual = problem.image - circular_synthesis(problem.filters, codes)
    return float(0.5 * np.sum(residual ** 2) + problem.lam * np.abs(codes).sum())


# -- solvers ----------------------------------------------------------------------------------
Solver = Callable[[object], np.ndarray]
PEER_INSTALL = {"spams": "pip install spams-bin", "sporco": "pip install sporco"}
_reported: set[str] = set()


def peer(module: str) -> object | None:
    """The peer's module, or None (said once on stderr, with how to install it): the rows of
    a missing peer are left out and the others still run."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if module not in _reported:
            _reported.add(module)
            print(f"peer {module} not installed, its rows are skipped "
                  f"({PEER_INSTALL[module]}, or pip install -e '.[bench]')",
                  file=sys.stderr, flush=True)
        return None


def dense_solvers(problem: DenseProblem, nonneg: bool, quick: bool
                  ) -> list[tuple[str, bool, list, Solver]]:
    """(name, is_sparsecnn, settings from loose to tight, solve(setting) -> codes (n, m))."""
    from sklearn.decomposition import sparse_encode

    from sparsecnn import sparse_code

    spams, sporco = peer("spams"), peer("sporco")

    X, D, lam = problem.signals, problem.dictionary, problem.lam
    x32 = torch.tensor(X, dtype=torch.float32)
    d32 = torch.tensor(D, dtype=torch.float32)
    x64 = torch.tensor(X, dtype=torch.float64)
    d64 = torch.tensor(D, dtype=torch.float64)
    lipschitz = float(np.linalg.norm(D, 2) ** 2)
    fortran_signals = np.asfortranarray(X.T)
    fortran_dictionary = np.asfortranarray(D)
    fortran_signals32 = np.asfortranarray(X.T, dtype=np.float32)
    fortran_dictionary32 = np.asfortranarray(D, dtype=np.float32)
    column_signals = np.ascontiguousarray(X.T)
    tolerances = [1e-2, 1e-3, 1e-4] if quick else [3e-2, 1e-2, 3e-3, 1e-3, 1e-4, 1e-5]
    # sporco on 20,000 patches takes minutes per run: one setting, which reaches the target
    sporco_tolerances = [1e-3]

    def ours(dtype: torch.dtype) -> Solver:
        def solve(tol: float) -> np.ndarray:
            x, d = (x32, d32) if dtype == torch.float32 else (x64, d64)
            result = sparse_code(x, d, lam, method="fista", nonneg=nonneg, tol=tol,
                                 max_iter=20_000, warn=False)
            return result.codes.numpy()
        return solve

    def ours_exact(dtype: torch.dtype) -> Solver:
        def solve(_: object) -> np.ndarray:
            x, d = (x32, d32) if dtype == torch.float32 else (x64, d64)
            return sparse_code(x, d, lam, method="homotopy", nonneg=nonneg).codes.numpy()
        return solve

    def sklearn(algorithm: str) -> Solver:
        def solve(max_iter: int) -> np.ndarray:
            return sparse_encode(X, D.T, algorithm=algorithm, alpha=lam, max_iter=max_iter,
                                 positive=nonneg, n_jobs=THREADS)
        return solve

    def ours_exact_threads(dtype: torch.dtype) -> Solver:
        solve_exact = ours_exact(dtype)

        def solve(threads: int) -> np.ndarray:
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                return solve_exact(threads)
            finally:
                torch.set_num_threads(previous)
        return solve

    def spams_lasso(signals: np.ndarray, dictionary: np.ndarray) -> Solver:
        def solve(threads: int) -> np.ndarray:
            codes = spams.lasso(signals, dictionary, lambda1=lam, mode=2, pos=nonneg,
                                numThreads=threads)
            return codes.toarray().T
        return solve

    def sporco_admm(tol: float) -> np.ndarray:
        from sporco.admm import bpdn as admm_bpdn

        options = admm_bpdn.BPDN.Options({"Verbose": False, "MaxMainIter": 5000,
                                          "RelStopTol": tol, "NonNegCoef": nonneg})
        solver = admm_bpdn.BPDN(D, column_signals, lam, options)
        return solver.solve().T

    def sporco_pgm(tol: float) -> np.ndarray:
        from sporco.pgm import bpdn as pgm_bpdn

        options = pgm_bpdn.BPDN.Options({"Verbose": False, "MaxMainIter": 5000,
                                         "RelStopTol": tol, "NonNegCoef": nonneg,
                                         "L": lipschitz})
        solver = pgm_bpdn.BPDN(D, column_signals, lam, options)
        return solver.solve().T

    cd_budgets = [5, 20, 1000] if quick else [5, 20, 50, 1000]
    # the exact solvers' only setting is their thread count: each gets the faster of 1 and
    # THREADS (on a loaded machine one thread can win), and the table says which won
    threads = [1, THREADS]
    solvers = [
        ("sparsecnn homotopy float32", True, threads, ours_exact_threads(torch.float32)),
        ("sparsecnn homotopy float64", True, threads, ours_exact_threads(torch.float64)),
        ("sparsecnn fista float32", True, tolerances, ours(torch.float32)),
        ("sparsecnn fista float64", True, tolerances, ours(torch.float64)),
        ("sklearn lasso_lars", False, [500], sklearn("lasso_lars")),
        ("sklearn lasso_cd", False, cd_budgets, sklearn("lasso_cd")),
    ]
    if spams is not None:
        solvers += [("spams lasso float64", False, threads,
                     spams_lasso(fortran_signals, fortran_dictionary)),
                    ("spams lasso float32", False, threads,
                     spams_lasso(fortran_signals32, fortran_dictionary32))]
    if sporco is not None and not quick:
        # 16-40x slower than the fastest peer: tens of seconds even on the quick problem
        solvers += [("sporco admm BPDN", False, sporco_tolerances, sporco_admm),
                    ("sporco pgm BPDN", False, sporco_tolerances, sporco_pgm)]
    return solvers


def conv_solvers(problem: ConvProblem, nonneg: bool, quick: bool
                 ) -> list[tuple[str, bool, list, Solver]]:
    from sparsecnn.inference.fourier import circular_sparse_code

    image, filters, lam = problem.image, problem.filters, problem.lam
    sporco_filters = np.ascontiguousarray(filters.transpose(1, 2, 0))  # (kh, kw, K)
    spectrum = np.fft.rfft2(filters, s=image.shape)
    lipschitz = float((np.abs(spectrum) ** 2).sum(0).max())
    # one common schedule for every P2 solver
    tolerances = [1e-2, 1e-3, 1e-4] if quick else [1e-2, 5e-3, 3e-3, 2e-3, 1e-3, 1e-4]
    image32 = torch.tensor(image, dtype=torch.float32)
    filters32 = torch.tensor(filters, dtype=torch.float32)

    def from_sporco(codes: np.ndarray) -> np.ndarray:
        return np.asarray(codes).reshape(*image.shape, -1).transpose(2, 0, 1)

    def sporco_admm(tol: float) -> np.ndarray:
        from sporco.admm import cbpdn as admm_cbpdn

        options = admm_cbpdn.ConvBPDN.Options({"Verbose": False, "MaxMainIter": 5000,
                                               "RelStopTol": tol, "NonNegCoef": nonneg})
        return from_sporco(admm_cbpdn.ConvBPDN(sporco_filters, image, lam, options).solve())

    def sporco_pgm(tol: float) -> np.ndarray:
        from sporco.pgm import cbpdn as pgm_cbpdn

        options = pgm_cbpdn.ConvBPDN.Options({"Verbose": False, "MaxMainIter": 5000,
                                              "RelStopTol": tol, "NonNegCoef": nonneg,
                                              "L": lipschitz})
        return from_sporco(pgm_cbpdn.ConvBPDN(sporco_filters, image, lam, options).solve())

    def ours(tol: float) -> np.ndarray:
        result = circular_sparse_code(image32[None, None], filters32[:, None], lam,
                                      nonneg=nonneg, tol=tol, max_iter=20_000, warn=False,
                                      check_every=5)
        return result.codes[0].numpy()

    solvers = [("sparsecnn fourier fista float32", True, tolerances, ours)]
    if peer("sporco") is not None:
        solvers += [("sporco admm ConvBPDN", False, tolerances, sporco_admm),
                    ("sporco pgm ConvBPDN", False, tolerances, sporco_pgm)]
    return solvers


# -- measuring --------------------------------------------------------------------------------
def measure(name: str, is_ours: bool, settings: list, solve: Solver, warm_up: Solver,
            score: Callable[[np.ndarray], float], problem_name: str) -> SolverResult:
    """Time ``solve`` at every setting, after one untimed ``warm_up`` call (the same solver on
    a small slice of the problem).  A run shorter than ``REPEAT_BELOW`` seconds is repeated
    once and the faster time kept (the machine is shared; repeats cost little there)."""
    result = SolverResult(problem=problem_name, solver=name, is_sparsecnn=is_ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warm_up(settings[0])
        for setting in settings:
            seconds = math.inf
            for attempt in range(2):
                start = time.perf_counter()
                codes = solve(setting)
                seconds = min(seconds, time.perf_counter() - start)
                if attempt == 0 and seconds >= REPEAT_BELOW:
                    break
            codes = np.asarray(codes)
            trial = Trial(setting=str(setting), seconds=seconds, energy=score(codes),
                          density=float(np.count_nonzero(codes) / codes.size),
                          most_negative=float(min(codes.min(), 0.0)))
            result.trials.append(trial)
            print(f"  {problem_name:<15} {name:<32} {setting!s:>8}  {seconds:8.3f} s  "
                  f"F = {trial.energy:.10g}", file=sys.stderr, flush=True)
    return result


def summarize(results: list[SolverResult]) -> float:
    best = min(trial.energy for result in results for trial in result.trials)
    threshold = best * (1 + TARGET) if best >= 0 else best * (1 - TARGET)
    for result in results:
        reached = [trial for trial in result.trials if trial.energy <= threshold]
        fastest = min(reached, key=lambda trial: trial.seconds) if reached else None
        result.time_to_target = None if fastest is None else fastest.seconds
        result.best_setting = None if fastest is None else fastest.setting
        result.final_energy = result.trials[-1].energy
        result.final_density = result.trials[-1].density
    peer_times = [r.time_to_target for r in results
                  if not r.is_sparsecnn and r.time_to_target is not None]
    fastest_peer = min(peer_times) if peer_times else None
    for result in results:
        if fastest_peer is not None and result.time_to_target is not None:
            result.ratio_to_fastest_peer = result.time_to_target / fastest_peer
    return best


ENERGY_NOTES = {
    "P1 signed": "F = sum over patches of 1/2||x - D a||^2 + lam ||a||_1, scored in float64",
    "P1 non-negative": "F = sum over patches of 1/2||x - D a||^2 + lam sum a, a >= 0; codes "
                       "scored after projection onto a >= 0 ('min code' = most negative entry "
                       "a solver returned)",
    "P2 circular": "F = 1/2||x - sum_k d_k (*) a_k||^2 + lam ||a||_1 with circular "
                   "convolution (sporco's boundary), one common float64 FFT energy",
}


def format_table(problem_name: str, best: float, results: list[SolverResult]) -> str:
    lines = [f"{problem_name}: F* = {best:.10g}, target F <= F* (1 + {TARGET:g})",
             f"  ({ENERGY_NOTES.get(problem_name, '')})",
             f"  {'solver':<32} {'time to target':>15} {'final F':>16} {'F/F*-1':>10} "
             f"{'non-zeros':>10} {'min code':>10} {'setting':>8} {'time / fastest peer':>20}"]
    for r in results:
        time_text = "not reached" if r.time_to_target is None else f"{r.time_to_target:.3f} s"
        ratio = "-" if r.ratio_to_fastest_peer is None else f"{r.ratio_to_fastest_peer:.3f}"
        if r.is_sparsecnn and r.ratio_to_fastest_peer:
            factor = r.ratio_to_fastest_peer
            ratio += f" ({1 / factor:.2f}x faster)" if factor < 1 else f" ({factor:.2f}x slower)"
        gap = r.final_energy / best - 1
        most_negative = f"{min(trial.most_negative for trial in r.trials):.1e}" \
            if "non-negative" in problem_name else "-"
        setting = r.best_setting or "-"
        lines.append(f"  {r.solver:<32} {time_text:>15} {r.final_energy:>16.10g} {gap:>10.2e} "
                     f"{100 * r.final_density:>9.2f}% {most_negative:>10} {setting:>8} "
                     f"{ratio:>20}")
    return "\n".join(lines)


def _finite(value: object) -> object:
    """JSON-safe copy: non-finite floats (an infeasible energy) become ``None``."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def settings_line() -> str:
    """What every solver ran with (the table's header): threads, OpenMP policy, precisions."""
    return (f"settings: torch/OMP/MKL/OpenBLAS threads {THREADS}, OMP_WAIT_POLICY="
            f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; the exact solvers (sparsecnn "
            f"homotopy, SPAMS lasso) run with 1 and {THREADS} threads and keep the faster "
            "('setting' column); SPAMS and sparsecnn in float32 and float64; sklearn n_jobs "
            f"{THREADS}")


def run_problem(name: str, build: Callable, score: Callable, solvers: Callable,
                wanted: Callable[[str], bool]) -> tuple[float, list[SolverResult]]:
    """One round: warm up and time every wanted solver of one problem, in the listed order."""
    warm_ups = {entry[0]: entry[3] for entry in solvers(build(small=True))}
    results = [measure(solver, ours, settings, solve, warm_ups[solver], score, name)
               for solver, ours, settings, solve in solvers(build(small=False))
               if wanted(solver)]
    return summarize(results), results


def ratio_summary(rounds: list[list[SolverResult]]) -> list[str]:
    """Per sparsecnn solver, min/median/max over the rounds of its time over the fastest
    peer's in the same round (paired: both timed in that round)."""
    lines = []
    for index, result in enumerate(rounds[0]):
        if not result.is_sparsecnn:
            continue
        ratios = [r[index].ratio_to_fastest_peer for r in rounds
                  if r[index].ratio_to_fastest_peer is not None]
        if ratios:
            low, middle, high = min(ratios), statistics.median(ratios), max(ratios)
            lines.append(f"  {result.solver:<32} time / fastest peer over {len(ratios)} "
                         f"rounds: min {low:.3f} median {middle:.3f} max {high:.3f} "
                         f"({1 / high:.2f}x / {1 / middle:.2f}x / {1 / low:.2f}x faster)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller problems, no sporco on P1 (about a minute unloaded)")
    parser.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    parser.add_argument("--seed", type=int, default=0, help="seed of the problem data")
    parser.add_argument("--only", choices=("P1", "P2"), default=None,
                        help="run one problem only")
    parser.add_argument("--solvers", default=None,
                        help="comma-separated substrings: time only the solvers whose name "
                        "contains one (e.g. 'homotopy,spams')")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat each problem's timings this many times and report the "
                        "min/median/max of every sparsecnn ratio over the rounds")
    parser.add_argument("--n-signals", type=int, default=None,
                        help="P1 patches (default 20,000; 2,000 with --quick)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="P2 image side (default 256; 128 with --quick)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1; got {args.rounds}")
    torch.set_num_threads(THREADS)
    patterns = None if args.solvers is None else [p.strip() for p in args.solvers.split(",")]

    def wanted(solver: str) -> bool:
        return patterns is None or any(pattern in solver for pattern in patterns)

    n_signals = args.n_signals or (2000 if args.quick else 20_000)
    image_size = args.image_size or (128 if args.quick else 256)
    print(settings_line(), file=sys.stderr, flush=True)
    tables, payload = [settings_line()], {
        "threads": THREADS, "target": TARGET, "quick": args.quick, "seed": args.seed,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "rounds": args.rounds,
        "problems": []}
    problems = []
    if args.only in (None, "P1"):
        start = time.perf_counter()
        dense = patch_problem(n_signals=n_signals, seed=args.seed)
        print(f"P1 built in {time.perf_counter() - start:.1f} s: {dense.signals.shape[0]} "
              f"patches, lam = {dense.lam:.6g}", file=sys.stderr, flush=True)
        for nonneg in (False, True):
            problems.append((
                "P1 " + ("non-negative" if nonneg else "signed"), dense.lam,
                lambda small, p=dense: DenseProblem(p.signals[:200], p.dictionary, p.lam)
                if small else p,
                lambda codes, n=nonneg: dense_energy(dense, codes, n),
                lambda problem, n=nonneg: dense_solvers(problem, n, args.quick)))
    if args.only in (None, "P2"):
        conv = image_problem(size=image_size, seed=args.seed)
        problems.append((
            "P2 circular", conv.lam,
            lambda small, p=conv: ConvProblem(p.image[:32, :32], p.filters, p.lam)
            if small else p,
            lambda codes: conv_energy(conv, codes, False),
            lambda problem: conv_solvers(problem, False, args.quick)))
    for name, lam, build, score, solvers in problems:
        rounds = []
        for round_index in range(args.rounds):
            if args.rounds > 1:
                print(f"{name}: round {round_index + 1}/{args.rounds}", file=sys.stderr,
                      flush=True)
            best, results = run_problem(name, build, score, solvers, wanted)
            rounds.append(results)
        table = format_table(name, best, results)
        if args.rounds > 1:
            table += "\n" + "\n".join(ratio_summary(rounds))
        tables.append(table)
        payload["problems"].append({"name": name, "lam": lam, "best_energy": best,
                                    "rounds": [[asdict(r) for r in results]
                                               for results in rounds]})
    print("\n\n".join(tables))
    if args.out is not None:
        from sparsecnn.io import write_json

        write_json(args.out, _finite(payload), overwrite=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
