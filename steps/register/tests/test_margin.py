"""The bootstrap interval of a metric difference, and the rule that reads it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlrig.experiments.results import Margin
from steps.evaluate import HeldOutPredictions
from steps.register.margin import bootstrap_margin, judge, weighted_label_scorer
from steps.register.params import CompareParams

DEFAULTS = CompareParams()
ROWS = 200


def classifier(correct: int, seed: int = 0) -> HeldOutPredictions:
    """Binary predictions right on `correct` of ROWS rows (which ones drawn by `seed`)."""
    generator = np.random.default_rng(seed)
    target = np.tile([0, 1], ROWS // 2)
    predicted = target.copy()
    wrong = generator.choice(ROWS, ROWS - correct, replace=False)
    predicted[wrong] = 1 - predicted[wrong]
    probabilities = np.column_stack([1.0 - predicted * 0.8 - 0.1, predicted * 0.8 + 0.1])
    return HeldOutPredictions(target, predicted, probabilities, [0, 1])


def regressor(noise: float, seed: int = 0) -> HeldOutPredictions:
    generator = np.random.default_rng(seed)
    target = np.linspace(0.0, 100.0, ROWS)
    return HeldOutPredictions(target, target + generator.normal(0, noise, ROWS), None, [])


def margin(**values: float) -> Margin:
    fields = {
        "versus": "champion version 3",
        "metric": "f1",
        "value": 0.9776,
        "versus_value": 0.9774,
        "difference": 0.0002,
        "low": -0.0105,
        "high": 0.0110,
        "confidence": 0.95,
        "resamples": 1000,
        "rows": 143,
        "seed": 42,
    }
    return Margin.model_validate(fields | values)


def test_the_interval_is_the_same_with_the_same_seed_and_moves_with_another() -> None:
    challenger, champion = classifier(180, seed=1), classifier(170, seed=2)

    first = bootstrap_margin(challenger, champion, "accuracy", "v1", DEFAULTS)
    again = bootstrap_margin(challenger, champion, "accuracy", "v1", DEFAULTS)
    other_seed = bootstrap_margin(
        challenger, champion, "accuracy", "v1", DEFAULTS.model_copy(update={"seed": 7})
    )

    assert (first.low, first.high) == (again.low, again.high)
    assert (first.low, first.high) != (other_seed.low, other_seed.high)
    assert (first.value, first.versus_value) == (0.9, 0.85)
    assert first.difference == pytest.approx(0.05)
    assert (first.resamples, first.rows, first.seed, first.confidence) == (1000, ROWS, 42, 0.95)
    assert first.low < first.difference < first.high


def test_a_higher_confidence_gives_a_wider_interval() -> None:
    challenger, champion = classifier(180, seed=1), classifier(170, seed=2)
    narrow = bootstrap_margin(
        challenger, champion, "f1", "v1", DEFAULTS.model_copy(update={"confidence": 0.8})
    )
    wide = bootstrap_margin(
        challenger, champion, "f1", "v1", DEFAULTS.model_copy(update={"confidence": 0.99})
    )
    assert wide.low < narrow.low < narrow.high < wide.high


def test_a_small_gain_on_few_rows_is_noise_and_a_large_one_is_not() -> None:
    champion = classifier(170, seed=2)
    small = bootstrap_margin(classifier(172, seed=3), champion, "f1", "v1", DEFAULTS)
    large = bootstrap_margin(classifier(198, seed=3), champion, "f1", "v1", DEFAULTS)

    assert small.low < 0 < small.difference < small.high
    assert judge(small, 0.0)[0] is False
    assert 0 < large.low < large.difference
    assert judge(large, 0.0)[0] is True


def test_identical_models_differ_by_exactly_zero() -> None:
    same = classifier(170)
    tie = bootstrap_margin(same, same, "f1", "v1", DEFAULTS)
    assert (tie.difference, tie.low, tie.high) == (0.0, 0.0, 0.0)
    promote, reason = judge(tie, 0.0)
    assert not promote and "does not beat" in reason


@pytest.mark.parametrize("metric", ["rmse", "mae"])
def test_a_lower_error_is_better(metric: str) -> None:
    accurate, rough = regressor(noise=2.0, seed=1), regressor(noise=8.0, seed=2)

    better = bootstrap_margin(accurate, rough, metric, "v1", DEFAULTS)
    worse = bootstrap_margin(rough, accurate, metric, "v1", DEFAULTS)

    assert better.low < better.difference < better.high < 0  # the challenger's error is lower
    assert judge(better, 0.0)[0] is True
    assert worse.difference > 0
    promote, reason = judge(worse, 0.0)
    assert not promote
    assert reason.startswith(f"{metric} (lower is better) {worse.value:.4f} does not beat v1")


def test_log_loss_is_lower_is_better_too() -> None:
    sharp, blunt = classifier(190, seed=1), classifier(150, seed=2)
    better = bootstrap_margin(sharp, blunt, "log_loss", "v1", DEFAULTS)
    assert better.high < 0 and judge(better, 0.0)[0] is True
    assert judge(bootstrap_margin(blunt, sharp, "log_loss", "v1", DEFAULTS), 0.0)[0] is False


@pytest.mark.parametrize("metric", ["accuracy", "precision", "recall", "f1"])
def test_a_weighted_resample_scores_as_the_drawn_rows_do(metric: str) -> None:
    """The distinct rows weighted by their draws give the metric of the drawn rows, a class
    left out of a resample included."""
    generator = np.random.default_rng(5)
    labels = np.array(["cat", "dog", "eel"])
    target = labels[generator.integers(0, 3, 60)]
    uniform = np.full((60, 3), 1 / 3)
    model = HeldOutPredictions(target, labels[generator.integers(0, 3, 60)], uniform, [*labels])
    other = HeldOutPredictions(target, labels[generator.integers(0, 3, 60)], uniform, [*labels])
    weighted = weighted_label_scorer(model, other, metric)
    no_eel = np.flatnonzero((target != "eel") & (model.predicted != "eel"))
    samples = [generator.integers(0, 60, 60) for _ in range(20)] + [no_eel[[0, 1, 1, 2, 3, 3]]]

    for sample in samples:
        direct = model.take(sample).metric(metric) - other.take(sample).metric(metric)
        assert weighted(sample) == pytest.approx(direct, abs=1e-12)


@pytest.mark.parametrize("metric", ["accuracy", "precision", "recall", "f1"])
def test_weighted_counts_score_binary_labels_and_a_label_the_test_lacks(metric: str) -> None:
    """Whole-number labels, one model never right on class 1, the other predicting a label
    (7) that no test row holds: as scikit-learn scores the drawn rows."""
    generator = np.random.default_rng(11)
    target, uniform = generator.integers(0, 2, 80), np.full((80, 2), 0.5)
    model = HeldOutPredictions(target, np.zeros(80, dtype=int), uniform, [0, 1])
    other = HeldOutPredictions(target, np.where(target == 1, 7, target), uniform, [0, 1])
    weighted = weighted_label_scorer(model, other, metric)

    for sample in [generator.integers(0, 80, 80) for _ in range(20)]:
        direct = model.take(sample).metric(metric) - other.take(sample).metric(metric)
        assert weighted(sample) == pytest.approx(direct, abs=1e-12)


def test_resamples_where_the_metric_is_undefined_are_left_out() -> None:
    """ROC AUC needs both classes; on 4 rows some resamples hold one class only."""
    target = np.array([0, 1, 0, 1])
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    model = HeldOutPredictions(target, np.array([0, 1, 0, 1]), probabilities, [0, 1])
    params = DEFAULTS.model_copy(update={"bootstrap_resamples": 200})

    result = bootstrap_margin(model, model, "roc_auc", "v1", params)

    assert 100 < result.resamples < 200  # 2 * (1/2)**4 of them hold one class
    assert (result.low, result.high) == (0.0, 0.0)


def test_the_rule_names_why_a_champion_stays() -> None:
    noise = margin()
    assert judge(noise, 0.0) == (
        False,
        "f1 0.9776 does not beat champion version 3 (0.9774 on the same 143 test rows) beyond "
        "noise: difference +0.0002, 95% interval -0.0105 to +0.0110 includes zero, so the "
        "difference may be chance",
    )
    clear = margin(value=0.99, difference=0.0126, low=0.004, high=0.02)
    assert judge(clear, 0.0) == (
        True,
        "f1 0.9900 beats champion version 3 (0.9774 on the same 143 test rows): difference "
        "+0.0126, 95% interval +0.0040 to +0.0200, clear of zero and beyond "
        "compare.min_improvement = 0",
    )
    assert judge(clear, 0.02) == (
        False,
        "f1 0.9900 does not beat champion version 3 (0.9774 on the same 143 test rows) by "
        "compare.min_improvement = 0.02: difference +0.0126, 95% interval +0.0040 to +0.0200",
    )
    worse = margin(value=0.97, difference=-0.0074, low=-0.02, high=0.001)
    assert judge(worse, 0.0) == (
        False,
        "f1 0.9700 does not beat champion version 3 (0.9774 on the same 143 test rows): "
        "difference -0.0074, 95% interval -0.0200 to +0.0010",
    )
    unknown = margin(low=math.nan, high=math.nan, resamples=0)
    promote, reason = judge(unknown, 0.0)
    assert not promote and "no resample of the test rows could be scored with f1" in reason


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"min_improvement": -0.1}, "greater than or equal to 0"),
        ({"confidence": 1.0}, "less than 1"),
        ({"bootstrap_resamples": 10}, "greater than or equal to 100"),
    ],
)
def test_params_out_of_range_are_refused(update: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CompareParams.model_validate(update)
