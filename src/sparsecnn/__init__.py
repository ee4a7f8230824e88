"""sparsecnn: CNNs as hierarchical sparse coding (Bowren 2021) and as hierarchical template
matching (Nandakumar, Tagade, Liu 2023), executable and checkable.

See THEORY.md for the mathematics; every public function's docstring states its equation.
"""

from .dictionary import ConvDictionary, DenseDictionary, Dictionary, power_iteration
from .inference import (
    ConvergenceWarning,
    SolverDivergedError,
    SparseCodeResult,
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

# Subpackages that pull in more (models, datasets, figures) load on first use: `sc.nn`,
# `sc.features`, `sc.interpret(...)` work without importing them up front.
_LAZY_MODULES = ("nn", "features", "dictlearn", "training", "data", "robustness", "sklearn",
                 "report", "studies")


def __getattr__(name: str):
    import importlib

    if name in _LAZY_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    if name == "interpret":
        function = importlib.import_module(f"{__name__}.interpret").interpret
        globals()["interpret"] = function  # the function, not the module of the same name
        return function
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
    "energy",
    "lambda_to_bias",
    "merge_polarity",
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
