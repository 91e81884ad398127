"""The stage graph's helpers (mlrig.dvc.dag)."""

from __future__ import annotations

from mlrig.dvc.dag import with_descendants

#: each stage with the stages it depends on, as dvc.yaml's pipeline has them
GRAPH = {
    "ingest": set(),
    "split": {"ingest"},
    "train@a": {"split"},
    "train@b": {"split"},
    "evaluate@a": {"split", "train@a"},
    "evaluate@b": {"split", "train@b"},
    "register": {"train@a", "train@b", "evaluate@a", "evaluate@b"},
    "report": {"ingest", "register"},
}


def test_a_stage_brings_everything_that_depends_on_it() -> None:
    """A train stage run again for a store that lacks its run brings its evaluate, register
    and report: it fits the same bytes, so DVC alone would skip them."""
    assert with_descendants(GRAPH, ["train@a"]) == {"train@a", "evaluate@a", "register", "report"}
    assert with_descendants(GRAPH, ["report"]) == {"report"}
    assert with_descendants(GRAPH, []) == set()
