"""Register step: champion selection and the MLflow model registry."""

from steps.register.register import CHAMPION_ALIAS, PREVIOUS_ALIAS, compare_and_register

__all__ = ["CHAMPION_ALIAS", "PREVIOUS_ALIAS", "compare_and_register"]
