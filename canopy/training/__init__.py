"""Training height heads on lidar canopy height."""

from canopy.training.trainer import EpochReport, train

__all__ = ["EpochReport", "train"]
