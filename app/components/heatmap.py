"""The inter-class contribution matrix as a clickable plotly figure.

A ``go.Heatmap`` cell click never reaches Streamlit (DESIGN.md section 4), so the matrix is drawn
as a scatter of square markers, one per cell, each carrying ``customdata = [a, b, value]`` with
a = training class (row, y axis) and b = test class (column, x axis). ``st.plotly_chart(...,
on_select="rerun")`` then returns the clicked or box-selected cell, which ``cell_from_event``
reads back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

__all__ = ["cell_from_event", "heatmap_figure", "top_cells"]

# red = harmful (negative: removing the training class would lower the test class's loss),
# blue = helpful (positive), white = no effect.
COLORSCALE = [
    [0.0, "#b2182b"],
    [0.25, "#ef8a62"],
    [0.5, "#f7f7f7"],
    [0.75, "#67a9cf"],
    [1.0, "#2166ac"],
]


def _fmt(v: float) -> str:
    """A cell label of at most 5 characters."""
    if not np.isfinite(v):
        return ""
    a = abs(v)
    if a >= 1000:
        return f"{v:.0e}"
    if a >= 10:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.1f}"
    return f"{v:.2f}"


def heatmap_figure(
    matrix: np.ndarray,
    class_names: Sequence[str],
    *,
    normalised: bool = False,
    selected: tuple[int, int] | None = None,
    size_px: int | None = None,
) -> go.Figure:
    """A square-marker "heatmap" of M (C x C): rows = training class a, columns = test class b.

    M[a, b] < 0 means the training images of class a raise the loss of test class b (harmful).
    The colour scale is symmetric around 0. `selected` = (a, b) draws an outline around that cell.
    """
    m = np.asarray(matrix, dtype=np.float64)
    c = len(class_names)
    if m.shape != (c, c):
        raise ValueError(f"matrix shape {m.shape} does not match {c} class names")
    side = size_px or int(min(640, max(320, 70 * c + 160)))
    plot_px = side - 150  # leave room for tick labels and the colour bar
    marker = max(10, int(plot_px / max(c, 1) * 0.92))
    aa, bb = np.meshgrid(np.arange(c), np.arange(c), indexing="ij")
    a_flat, b_flat, v_flat = aa.ravel(), bb.ravel(), m.ravel()
    finite = np.isfinite(v_flat)
    vmax = float(np.max(np.abs(v_flat[finite]))) if finite.any() else 1.0
    vmax = vmax if vmax > 0 else 1.0
    names = [str(n) for n in class_names]
    custom = np.stack([a_flat, b_flat, np.nan_to_num(v_flat)], axis=1)
    hover_names = np.array(
        [[names[a], names[b]] for a, b in zip(a_flat, b_flat, strict=True)], dtype=object
    )
    fig = go.Figure(
        go.Scatter(
            x=[names[b] for b in b_flat],
            y=[names[a] for a in a_flat],
            mode="markers+text" if c <= 12 else "markers",
            text=[_fmt(v) for v in v_flat],
            textfont={"size": max(8, min(13, marker // 4))},
            customdata=np.concatenate([custom, hover_names], axis=1),
            hovertemplate=(
                "training class %{customdata[3]} -> test class %{customdata[4]}<br>"
                "contribution %{customdata[2]:.4g}<extra></extra>"
            ),
            marker={
                "symbol": "square",
                "size": marker,
                "color": np.nan_to_num(v_flat),
                "colorscale": COLORSCALE,
                "cmin": -vmax,
                "cmax": vmax,
                "colorbar": {
                    "title": {"text": "normalised" if normalised else "contribution"},
                    "thickness": 12,
                },
                "line": {"width": 0},
            },
            showlegend=False,
        )
    )
    if selected is not None:
        a, b = selected
        if 0 <= a < c and 0 <= b < c:
            fig.add_trace(
                go.Scatter(
                    x=[names[b]],
                    y=[names[a]],
                    mode="markers",
                    marker={
                        "symbol": "square-open",
                        "size": marker,
                        "color": "black",
                        "line": {"width": 3},
                    },
                    hoverinfo="skip",
                    showlegend=False,
                )
            )
    fig.update_layout(
        width=side,
        height=side - 40,
        margin={"l": 10, "r": 10, "t": 70, "b": 10},
        xaxis={
            "title": "test class (whose loss)",
            "type": "category",
            "side": "top",
            "categoryorder": "array",
            "categoryarray": names,
        },
        yaxis={
            "title": "training class (whose images)",
            "type": "category",
            "autorange": "reversed",
            "categoryorder": "array",
            "categoryarray": names,
        },
        plot_bgcolor="white",
    )
    return fig


def cell_from_event(event: Any) -> tuple[int, int] | None:
    """The (training class a, test class b) of the first selected cell of a plotly_chart event.

    Accepts the object ``st.plotly_chart(..., on_select="rerun")`` returns (or its dict form);
    None when nothing is selected. Points of other traces (the outline) carry no customdata.
    """
    if event is None:
        return None
    sel = event.get("selection") if isinstance(event, dict) else getattr(event, "selection", None)
    if not sel:
        return None
    points = sel.get("points") if isinstance(sel, dict) else getattr(sel, "points", None)
    for p in points or []:
        cd = p.get("customdata") if isinstance(p, dict) else None
        if cd is not None and len(cd) >= 2:
            try:
                return int(float(cd[0])), int(float(cd[1]))
            except (TypeError, ValueError):
                continue
    return None


def top_cells(
    matrix: np.ndarray, *, k: int = 3, off_diagonal: bool = True
) -> list[tuple[int, int, float]]:
    """The k most harmful cells (most negative M[a, b]) as (a, b, value), off the diagonal by default."""
    m = np.array(matrix, dtype=np.float64)
    if off_diagonal:
        np.fill_diagonal(m, np.nan)
    flat = np.where(np.isfinite(m), m, np.inf).ravel()
    order = np.argsort(flat, kind="stable")[:k]
    c = m.shape[1]
    return [
        (int(i // c), int(i % c), float(flat[i]))
        for i in order
        if np.isfinite(flat[i]) and flat[i] < 0
    ]
