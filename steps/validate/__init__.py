"""Validate step: expectations on the ingested table."""

from steps.validate.validate import ValidationReport, raise_for_failures, validate_table

__all__ = ["ValidationReport", "raise_for_failures", "validate_table"]
