"""Report step: Markdown and self-contained HTML comparison of the experiments."""

from steps.report.report import ReportInputs, build_figures, render

__all__ = ["ReportInputs", "build_figures", "render"]
