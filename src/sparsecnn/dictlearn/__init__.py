"""Dictionary learning (docs/theory.md A.1, C7; Olshausen & Field 1996; Mairal et al. 2009).

* :func:`learn_dictionary` -- online/minibatch learning of a dense dictionary with unit-norm
  atoms; codes (signed or non-negative) from :func:`sparsecnn.sparse_code`.
* :func:`learn_conv_dictionary` -- minibatch learning of a convolutional filter bank.
* :func:`learn_orthogonal_dictionary`, :func:`procrustes` -- the exact-orthogonal regime,
  where the one-shot threshold is the exact code and the dictionary step is a Procrustes
  problem.
* :class:`LearnedISTA` -- Gregor & LeCun's learned ISTA encoder (docs/theory.md C8).
* :mod:`.analysis` -- code kurtosis, sparsity, atom orientation and localization;
  :func:`plot_atoms` draws a dictionary as an image grid.
"""

from .analysis import (
    atom_localization,
    atom_orientation_coherence,
    excess_kurtosis,
    pca_basis,
    zero_fraction,
)
from .convolutional import ConvDictionaryLearningResult, learn_conv_dictionary
from .figures import plot_atoms
from .learned_encoder import LearnedISTA, ista_encoder
from .online import DictionaryLearningResult, learn_dictionary
from .orthogonal import OrthogonalDictionaryResult, learn_orthogonal_dictionary, procrustes

__all__ = [
    "ConvDictionaryLearningResult",
    "DictionaryLearningResult",
    "LearnedISTA",
    "OrthogonalDictionaryResult",
    "atom_localization",
    "atom_orientation_coherence",
    "excess_kurtosis",
    "ista_encoder",
    "learn_conv_dictionary",
    "learn_dictionary",
    "learn_orthogonal_dictionary",
    "pca_basis",
    "plot_atoms",
    "procrustes",
    "zero_fraction",
]
