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
