"""mlrig: one repository, the whole lifecycle of a model (DVC + MLflow + ClearML)."""

__version__ = "0.1.0"
