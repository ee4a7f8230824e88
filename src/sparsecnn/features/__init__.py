"""The feature world of [P2] (docs/theory.md Part B): a dataset generator with full ground truth,
the analytically constructed zero-error network, its certificate, and the comparison with
networks trained by gradient descent."""

from .certify import (
    CertificationResult,
    certified_radius,
    certify,
    smallest_breaking_perturbation,
    worst_case_perturbation,
)
from .compare import CompareResult, compare
from .construct import ConstructedNetwork, construct
from .dataset_files import Dataset, load_dataset, save_dataset
from .presets import PRESETS, preset
from .samples import FeatureSample, GroundTruth
from .sampling import BLOCK_SIZE
from .well_posedness import WellPosednessWarning
from .world import FeatureWorld

__all__ = [
    "BLOCK_SIZE",
    "PRESETS",
    "CertificationResult",
    "CompareResult",
    "ConstructedNetwork",
    "Dataset",
    "FeatureSample",
    "FeatureWorld",
    "GroundTruth",
    "WellPosednessWarning",
    "certified_radius",
    "certify",
    "compare",
    "construct",
    "load_dataset",
    "preset",
    "save_dataset",
    "smallest_breaking_perturbation",
    "worst_case_perturbation",
]
