"""Split step: seeded, stratified train/test split."""

from steps.split.split import TEST_FILE, TRAIN_FILE, split_table

__all__ = ["TEST_FILE", "TRAIN_FILE", "split_table"]
