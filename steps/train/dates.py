"""Date parts for the model: a scikit-learn transformer the logged model holds.

Kept apart from features.py so that importing the train step loads no scikit-learn; a model
with datetime features loads this module (skops lists it among the model's trusted types).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sklearn.base import BaseEstimator, TransformerMixin

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


class DateParts(TransformerMixin, BaseEstimator):
    """Year, month, day and weekday of each datetime column (and the hour, when the column held
    times at fit), as floats with NaN for a missing date."""

    def fit(self, X: Any, y: Any = None) -> DateParts:
        frame = self._dates(X)
        self.n_features_in_ = frame.shape[1]
        self.columns_ = [str(name) for name in frame.columns]
        self.with_hour_ = [
            bool((frame[name].dt.hour.fillna(0) != 0).any()) for name in frame.columns
        ]
        return self

    def transform(self, X: Any) -> np.ndarray:
        import numpy as np

        frame = self._dates(X)
        parts = []
        for position, name in enumerate(frame.columns):
            dates = frame[name].dt
            parts += [dates.year, dates.month, dates.day, dates.day_of_week]
            if self.with_hour_[position]:
                parts.append(dates.hour)
        return np.column_stack([part.to_numpy(dtype="float64", na_value=np.nan) for part in parts])

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        import numpy as np

        names = []
        for position, name in enumerate(self.columns_):
            kept = ["year", "month", "day", "weekday"] + (
                ["hour"] if self.with_hour_[position] else []
            )
            names += [f"{name}_{part}" for part in kept]
        return np.asarray(names, dtype=object)

    @staticmethod
    def _dates(X: Any) -> pd.DataFrame:
        import pandas as pd

        frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X)
        return frame.apply(lambda column: pd.to_datetime(column, errors="coerce"))
