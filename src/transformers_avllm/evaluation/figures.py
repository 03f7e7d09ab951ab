"""The report figure `evaluate` writes beside the report's JSON (`<output stem>.report.png`): the task's metrics as
bars, one panel per scale, and after a grounding run the grounding table as bars (full inputs vs. ablated, per
ablation and modality group). A dotted line marks chance where the task has one: multiple choice, the mean of
1 / (number of options) over the samples (`scoring.chance_accuracy`). Open-ended answers, captions and judge scores
have no finite set of answers to guess from, so no chance line is drawn for them."""

from __future__ import annotations

from pathlib import Path

from ..plotting import grouped_bars, new_figure, save_figure

# The scales metrics are drawn on: (axis label, y limits; None: fitted to the values).
SCALES = {
    "fraction": ("fraction of samples", (0.0, 1.05)),
    "judge": ("judge score (0-5)", (0.0, 5.25)),
    "cider": ("CIDEr-D / SPIDEr", None),
}
FRACTION_METRICS = ("exact_match", "normalized_match", "accuracy", "spice")
ABLATION_LABELS = {"no_audio": "muted", "no_video": "blanked"}


def metric_scale(name: str) -> str:
    """The scale of a report metric: a fraction (matches, accuracy, SPICE), CIDEr-D / SPIDEr, or a 0-5 judge score
    (`score` and every judge criterion)."""
    if name in FRACTION_METRICS:
        return "fraction"
    return "cider" if name in ("cider", "spider") else "judge"


def report_figure(report: dict):
    """The figure of an `evaluate` report: a panel per metric scale (the computed metrics, chance dotted on the
    multiple-choice accuracy), and a grounding panel when the report has a grounding table."""
    by_scale: dict[str, dict[str, float]] = {}
    for name, value in report["metrics"].items():
        if value is not None:
            by_scale.setdefault(metric_scale(name), {})[name] = value
    rows = [row for row in (report.get("grounding") or {}).get("rows", []) if row["full"] is not None]
    figure, panels = new_figure(max(len(by_scale) + bool(rows), 1))
    panels = iter(panels)
    for scale, metrics in by_scale.items():
        label, ylim = SCALES[scale]
        chance = [report.get("chance") if name == "accuracy" else None for name in metrics]
        grouped_bars(
            next(panels), list(metrics), {"full": list(metrics.values())}, chance=chance, ylabel=label,
            ylim=ylim, values=True, title=f"{report['dataset']} ({report['counts'].get('scored', 0)} scored)",
        )  # fmt: skip
    if rows:
        metric, grounding = rows[0]["metric"], next(panels)
        groups = [f"{ABLATION_LABELS[row['condition']]}: {row['modality']} (n={row['n']})" for row in rows]
        grouped_bars(
            grounding, groups, {"full": [row["full"] for row in rows], "ablated": [row["ablated"] for row in rows]},
            chance=[row.get("chance") for row in rows], ylabel=metric, ylim=SCALES[metric_scale(metric)][1],
            title="grounding: full vs. muted / blanked",
        )  # fmt: skip
        grounding.tick_params(axis="x", labelrotation=20, labelsize=8)
    if not by_scale and not rows:
        empty = next(panels)
        empty.text(0.5, 0.5, f"{report['dataset']}: no metric computed", ha="center", va="center")
        empty.set_axis_off()
    return figure


def save_report_figure(report: dict, path: str | Path) -> None:
    """Writes `report_figure(report)` to `path` (PNG)."""
    save_figure(report_figure(report), path)
