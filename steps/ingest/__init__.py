"""Ingest step: the configured source as a Parquet table."""

from steps.ingest.ingest import ingest, write_table

__all__ = ["ingest", "write_table"]
