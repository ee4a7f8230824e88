"""sparsecnn: CNNs as hierarchical sparse coding (Bowren 2021) and as hierarchical template
matching (Nandakumar, Tagade, Liu 2023), executable and checkable.

See docs/theory.md for the mathematics; every public function's docstring states its equation.
"""

from .dictionary import ConvDictionary, DenseDictionary, Dictionary, power_iteration
from .inference import (
    ConvergenceWarning,
    SolverDivergedError,
    SparseCodeResult,
    circular_sparse_code,
    energy,
    optimality_gap,
    sparse_code,
)
from .priors import (
    bias_to_lambda,
    lambda_to_bias,
    merge_polarity,
    nonneg_threshold,
    polarity_split,
    prior_is_proper,
    prior_kind,
    prior_rate,
    soft_threshold,
)

__version__ = "0.1.0"

# After the engine they build on.  `interpret` is bound to the function; the module of the
# same name stays importable as `sparsecnn.interpret` through `from sparsecnn.interpret import`.
from . import features, nn
from .interpret import interpret

# Subpackages with heavier or optional dependencies load on first use.
_LAZY_MODULES = ("dictlearn", "training", "data", "robustness", "anomaly", "sklearn",
                 "report", "studies")


def __getattr__(name: str):
    import importlib

    if name in _LAZY_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ConvDictionary",
    "ConvergenceWarning",
    "DenseDictionary",
    "Dictionary",
    "SolverDivergedError",
    "SparseCodeResult",
    "__version__",
    "bias_to_lambda",
    "circular_sparse_code",
    "energy",
    "features",
    "interpret",
    "lambda_to_bias",
    "merge_polarity",
    "nn",
    "nonneg_threshold",
    "optimality_gap",
    "polarity_split",
    "power_iteration",
    "prior_is_proper",
    "prior_kind",
    "prior_rate",
    "soft_threshold",
    "sparse_code",
]
