"""The figures the package writes (the demo's `report.png` and `ablation.png`, `avllm eval`'s report figure):
matplotlib figures made without pyplot (no global backend, nothing left open), and the one chart they share, grouped
bars with a dotted line at each group's chance level."""

from __future__ import annotations

from pathlib import Path


def new_figure(num_panels: int, panel_size: tuple[float, float] = (5.0, 4.0)):
    """A figure of `num_panels` axes side by side, each `panel_size` inches: (figure, [axes, ...])."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(panel_size[0] * num_panels, panel_size[1]))
    return figure, list(figure.subplots(1, num_panels, squeeze=False)[0])


def grouped_bars(
    axes,
    groups: list[str],
    series: dict[str, list[float | None]],
    *,
    chance: list[float | None] | None = None,
    ylabel: str = "",
    title: str = "",
    ylim: tuple[float, float] | None = None,
    values: bool = False,
) -> None:
    """One bar per (group, series), the series side by side within each group (a None value: no bar), and a dotted
    black line across group i at `chance[i]` (None: no line). `values`: write each bar's value above it."""
    width = 0.8 / len(series)
    for offset, (name, heights) in enumerate(series.items()):
        drawn = [(index, height) for index, height in enumerate(heights) if height is not None]
        positions = [index - 0.4 + (offset + 0.5) * width for index, _ in drawn]
        bars = axes.bar(positions, [height for _, height in drawn], width, label=name)
        if values:
            axes.bar_label(bars, fmt="%.2f", fontsize=7)
    levels = [(index, level) for index, level in enumerate(chance or []) if level is not None]
    for index, level in levels:
        label = "chance" if index == levels[0][0] else None
        axes.hlines(level, index - 0.45, index + 0.45, colors="black", linestyles="dotted", label=label)
    axes.set_xticks(range(len(groups)), groups)
    axes.set(ylabel=ylabel, title=title)
    if ylim is not None:
        axes.set_ylim(*ylim)
    if len(series) > 1 or levels:
        axes.legend(fontsize=8)


def save_figure(figure, path: str | Path, dpi: int = 100) -> None:
    """Lays the figure out and writes it (the format from the file name, e.g. PNG)."""
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
