"""PNG plots of metrics against step: the curves of the ToRL paper's training-dynamics figure.

Figures are built with ``matplotlib.figure.Figure`` (rendered by Agg) rather than pyplot, so no
global backend or figure state is touched and nothing needs a display.
"""

from __future__ import annotations

from typing import Sequence

from matplotlib.figure import Figure

__all__ = ["metric_figure", "dynamics_figure"]

Series = Sequence[tuple[int, float]]


def _draw(ax, key: str, points: Series) -> None:
    steps, values = zip(*sorted(points))
    ax.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3)
    ax.set_title(key)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)


def metric_figure(key: str, points: Series) -> Figure:
    """One metric against step."""
    fig = Figure(figsize=(5, 3.5), layout="constrained")
    _draw(fig.add_subplot(), key, points)
    return fig


def dynamics_figure(series: dict[str, Series]) -> Figure:
    """All given metrics side by side, one panel each (the paper's figure layout)."""
    fig = Figure(figsize=(4 * len(series), 3.5), layout="constrained")
    for ax, (key, points) in zip(fig.subplots(1, len(series), squeeze=False)[0], series.items()):
        _draw(ax, key, points)
    return fig
