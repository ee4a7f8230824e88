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
