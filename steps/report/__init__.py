"""Report step: Markdown and self-contained HTML comparison of the experiments."""

from steps.report.figures import build_figures
from steps.report.report import ReportInputs, render

__all__ = ["ReportInputs", "build_figures", "render"]
