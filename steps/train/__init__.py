"""Train step: one experiment of `train.experiments`, fitted and logged."""

from steps.train.train import MODEL_DIR, as_float_frame, fit

__all__ = ["MODEL_DIR", "as_float_frame", "fit"]
