"""Training height heads on lidar canopy height."""

from canopy.training.trainer import EpochReport, Metrics, TrainResult, TrainSettings, train

__all__ = ["EpochReport", "Metrics", "TrainResult", "TrainSettings", "train"]
