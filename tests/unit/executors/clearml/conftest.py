"""What the ClearML tests of this folder leave to the other tests of their process."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def lightgbm_booster_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Put lightgbm.Booster back after the test.

    A PipelineController built here runs ClearML's Task.init with every framework binding on,
    and its lightgbm binding replaces the class lightgbm.Booster with a function for the rest
    of the process: a later test's `isinstance(model, lightgbm.Booster)` (MLflow's lightgbm
    flavor) then fails. Imported first, lightgbm is patched at once rather than on a later
    import, so the attribute recorded here is the class.
    """
    import lightgbm

    monkeypatch.setattr(lightgbm, "Booster", lightgbm.Booster)
