"""Scale-aware defaults: knn keeps a bounded sample of the train rows, a forest's trees each
draw at most `max_samples` rows; both say so, and `null` lifts them."""

from __future__ import annotations

from pathlib import Path

import pytest

from steps.ingest import ingest
from steps.ingest.params import IngestParams
from steps.train.families import scale_note
from steps.train.params import KnnParams, RandomForestParams, TrainParams
from steps.train.train import fit_experiment


def synthetic(rows: int):
    return ingest(IngestParams(source=f"synthetic:{rows}"), Path.cwd())


def fitted(family: str, rows: int, **params: object):
    table, meta = synthetic(rows)
    train = TrainParams.model_validate(
        {"seed": 3, "experiments": {family: {"family": family, "params": params}}}
    )
    pipeline, _, found = fit_experiment(table, meta, family, train)
    return pipeline, found


def test_the_defaults_are_bounded_and_stated() -> None:
    assert KnnParams().max_train_rows == 20_000
    assert RandomForestParams().max_samples == 100_000


def test_knn_keeps_a_seeded_sample_of_max_train_rows_by_class() -> None:
    pipeline, found = fitted("knn", 600, max_train_rows=120)

    model = pipeline[-1]
    assert model.n_samples_fit_ == 120
    assert found["fitted_rows"] == 120
    assert sorted(model.classes_.tolist()) == [0, 1]
    again, _ = fitted("knn", 600, max_train_rows=120)
    assert (again[-1]._fit_X == model._fit_X).all()  # the seed picks the same rows


@pytest.mark.parametrize("limit", [None, 5000])
def test_knn_keeps_every_row_without_a_limit_or_below_it(limit: int | None) -> None:
    pipeline, found = fitted("knn", 300, max_train_rows=limit)

    assert pipeline[-1].n_samples_fit_ == 300
    assert found["fitted_rows"] == 300


def test_each_tree_of_a_forest_draws_at_most_max_samples_rows() -> None:
    pipeline, found = fitted("random_forest", 400, n_estimators=5, max_samples=50)

    forest = pipeline[-1]
    assert forest.max_samples == 50
    assert found["fitted_rows"] == 50
    # a tree grown on 50 bootstrap rows has at most 50 leaves' worth of samples
    assert all(tree.tree_.n_node_samples[0] <= 50 for tree in forest.estimators_)


@pytest.mark.parametrize("limit", [None, 100_000])
def test_a_forest_without_a_limit_or_below_it_draws_every_row(limit: int | None) -> None:
    pipeline, found = fitted("random_forest", 200, n_estimators=3, max_samples=limit)

    assert pipeline[-1].max_samples is None
    assert found["fitted_rows"] == 200


def test_the_note_says_what_was_limited_and_how_to_lift_it() -> None:
    knn = scale_note(KnnParams(max_train_rows=100), 750_000)
    forest = scale_note(RandomForestParams(), 750_000)

    assert knn is not None and "sample of 100 of the 750000 train rows" in knn
    assert "max_train_rows: null" in knn
    assert forest is not None and "100000 of the 750000" in forest
    assert "max_samples: null" in forest
    assert scale_note(KnnParams(), 1000) is None
    assert scale_note(RandomForestParams(max_samples=None), 10**7) is None
