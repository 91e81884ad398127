"""The report's figures: metrics side by side, the decision's margins, ROC curves."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

from mlrig.experiments.metrics import LOWER_IS_BETTER, task_metrics
from mlrig.experiments.results import Champion, ExperimentResult, Margin
from mlrig.experiments.tables import read_output
from steps.evaluate import CURVE_FILE

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from steps.report.report import ReportInputs

BAR_COLOUR = "#4c72b0"
BEST_COLOUR = "#dd8452"
VERDICT_COLOURS = {
    "better beyond noise": "#2f7d32",
    "within noise": "#b8860b",
    "worse beyond noise": "#b3261e",
}
#: the corner of the ROC plot where good classifiers differ: false positive rate up to this,
#: true positive rate from 1 minus it
ROC_ZOOM = 0.25


def metrics_figure(
    results: list[ExperimentResult], metrics: tuple[str, ...], best: str | None
) -> Figure:
    """One bar chart per metric, experiments side by side; the best of the run in orange."""
    import matplotlib.pyplot as plt

    columns = min(3, len(metrics))
    rows = -(-len(metrics) // columns)
    height = max(2.6, 0.9 + 0.32 * len(results))
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.4 * columns, height * rows), squeeze=False
    )
    names = [result.name for result in results]
    colours = [BEST_COLOUR if name == best else BAR_COLOUR for name in names]
    for axis, metric in zip(axes.flat, metrics, strict=False):
        values = [result.metrics.get(metric, float("nan")) for result in results]
        bars = axis.barh(names, values, color=colours)
        axis.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)  # close scores need the numbers
        axis.margins(x=0.2)
        axis.invert_yaxis()  # the experiments top to bottom, as in the table
        better = "lower" if metric in LOWER_IS_BETTER else "higher"
        axis.set_title(f"{metric} ({better} is better)", fontsize=10)
        axis.tick_params(labelsize=8)
    for axis in list(axes.flat)[len(metrics) :]:
        axis.set_visible(False)
    figure.tight_layout()
    return figure


def margin_rows(champion: Champion) -> list[tuple[str, Margin]]:
    """The decision's comparisons: against the champion re-scored, and against the runner-up."""
    rows = []
    if margin := champion.versus_champion:
        incumbent = f" ({champion.incumbent_experiment})" if champion.incumbent_experiment else ""
        rows.append((f"vs {margin.versus}{incumbent}", margin))
    if margin := champion.versus_runner_up:
        rows.append((f"vs runner-up {margin.versus}", margin))
    return rows


def margin_figure(champion: Champion) -> Figure:
    """The best experiment's difference to each model it was measured against, with the
    bootstrap interval: a bar across zero is a difference within noise."""
    import matplotlib.pyplot as plt

    rows = margin_rows(champion)
    figure, axis = plt.subplots(figsize=(7.5, 0.9 + 0.55 * len(rows)))
    for position, (_, margin) in enumerate(rows):
        colour = VERDICT_COLOURS.get(margin.verdict, "grey")
        axis.errorbar(
            margin.difference,
            position,
            xerr=[[margin.difference - margin.low], [margin.high - margin.difference]],
            fmt="o",
            color=colour,
            capsize=4,
        )
    axis.axvline(0.0, color="grey", linestyle="--", linewidth=1)
    if champion.min_improvement:
        side = -1 if champion.metric in LOWER_IS_BETTER else 1
        axis.axvline(side * champion.min_improvement, color="grey", linestyle=":", linewidth=1)
    axis.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    axis.set_ylim(-0.6, len(rows) - 0.4)
    axis.invert_yaxis()
    better = "left" if champion.metric in LOWER_IS_BETTER else "right"
    confidence = rows[0][1].confidence if rows else 0.95
    axis.set_xlabel(
        f"{champion.metric}: {champion.experiment} minus the other, {confidence:.0%} interval "
        f"({better} of 0: {champion.experiment} is better)",
        fontsize=8,
    )
    axis.tick_params(axis="x", labelsize=8)
    figure.tight_layout()
    return figure


def roc_axes(axis: Axes, curves: dict[str, dict], zoomed: bool) -> None:
    for name, curve in curves.items():
        axis.plot(curve["fpr"], curve["tpr"], label=name, linewidth=1.2)
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    if zoomed:
        axis.set(xlim=(0, ROC_ZOOM), ylim=(1 - ROC_ZOOM, 1.005), title="top left corner")
    else:
        axis.set(title="ROC, test set")
    axis.set(xlabel="false positive rate", ylabel="true positive rate")


def roc_figure(curves: dict[str, dict]) -> Figure:
    """Every experiment's ROC curve, whole and zoomed on the corner where they differ."""
    import matplotlib.pyplot as plt

    figure, (whole, corner) = plt.subplots(1, 2, figsize=(10, 4.6))
    roc_axes(whole, curves, zoomed=False)
    roc_axes(corner, curves, zoomed=True)
    corner.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return figure


def build_figures(inputs: ReportInputs, evaluate_dir: Path) -> dict[str, Figure]:
    """The report's figures by file name."""
    import matplotlib

    matplotlib.use("Agg")
    champion = inputs.champion
    best = champion.experiment if champion else None
    metrics = task_metrics(inputs.meta.task)  # type: ignore[arg-type]
    figures = {"metrics.png": metrics_figure(inputs.results, metrics, best)}
    if champion and margin_rows(champion):
        figures["margins.png"] = margin_figure(champion)
    curves = {
        result.name: json.loads(read_output(evaluate_dir / result.name / CURVE_FILE))
        for result in inputs.results
    }
    curves = {name: curve for name, curve in curves.items() if curve}
    if curves:
        figures["roc.png"] = roc_figure(curves)
    return figures


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()
