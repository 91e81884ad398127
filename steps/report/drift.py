"""The report's drift section: the latest `mlrig drift` checks of the champion version the
report names, as MLflow holds them, each linked to its HTML report in reports/drift/.

Everything comes from the MLflow store (no clock, no listing of files), so the same store gives
the same section. The report stage does not depend on the store: a check made after the stage
ran shows the next time it runs (its inputs changed, or `dvc repro --force --single-item report`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from mlrig.experiments.results import Champion
from mlrig.tracking.drift_checks import LATEST_CHECKS, DriftCheck, latest_checks

if TYPE_CHECKING:
    from mlrig.settings import Settings


class ReportedCheck(DriftCheck):
    """A drift check with its HTML report's address relative to the main report."""

    link: str | None  # None: the check recorded no report


class DriftSection(BaseModel):
    """The champion version's latest drift checks, newest first."""

    model: str
    version: str
    limit: int  # how many checks at most the section lists
    checks: list[ReportedCheck]


def drift_section(
    settings: Settings, champion: Champion | None, report_dir: Path, limit: int = LATEST_CHECKS
) -> DriftSection | None:
    """The latest drift checks of the champion version, or None when there are none (or no
    registered champion): the report then has no drift section at all.

    Args:
        settings: where the MLflow store and the project's root are.
        champion: the register step's decision; its version is the one the report names.
        report_dir: the folder the main report is written to (links are relative to it).
        limit: how many checks at most.
    """
    if champion is None or champion.version is None:
        return None
    checks = latest_checks(settings, champion.registered_model, champion.version, limit)
    if not checks:
        return None
    return DriftSection(
        model=champion.registered_model,
        version=champion.version,
        limit=limit,
        checks=[
            ReportedCheck(**dict(check), link=report_link(settings.root, check, report_dir))
            for check in checks
        ],
    )


def report_link(root: Path, check: DriftCheck, report_dir: Path) -> str | None:
    """The check's HTML report relative to the main report's folder: `drift/<file>.html`."""
    if not check.report:
        return None
    target = (root / check.report).resolve()
    return Path(os.path.relpath(target, report_dir.resolve())).as_posix()
