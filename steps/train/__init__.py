"""Train step: one experiment of `train.experiments`, fitted and logged."""

from steps.train.features import raw_features
from steps.train.train import MODEL_DIR, fit

__all__ = ["MODEL_DIR", "fit", "raw_features"]
