"""The feature world of [P2] (THEORY.md Part B): generator, constructed network, certificate."""

from .world import (
    BLOCK_SIZE,
    PRESETS,
    FeatureSample,
    FeatureWorld,
    GroundTruth,
    WellPosednessWarning,
    preset,
)

__all__ = [
    "BLOCK_SIZE",
    "PRESETS",
    "FeatureSample",
    "FeatureWorld",
    "GroundTruth",
    "WellPosednessWarning",
    "preset",
]

from .certify import CertificationResult, certified_radius, certify, worst_case_perturbation
from .construct import ConstructedNetwork, construct

__all__ += [
    "CertificationResult",
    "ConstructedNetwork",
    "certified_radius",
    "certify",
    "construct",
    "worst_case_perturbation",
]
