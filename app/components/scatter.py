"""The embedding map: a plotly scatter of the training set you can box- or lasso-select.

Each point carries its sample id in ``customdata[0]``, so ``ids_from_event`` turns the selection
``st.plotly_chart(..., on_select="rerun", selection_mode=("points", "box", "lasso"))`` returns
into sample ids. Plotly hover labels cannot show images, so the page shows the thumbnails of the
selection below the map.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

__all__ = ["COLOR_OPTIONS", "embedding_figure", "ids_from_event"]

COLOR_OPTIONS = {
    "label": "given label",
    "score": "influence score (red = harmful)",
    "flipped": "known label error",
    "predicted": "predicted label",
}
_PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]  # fmt: skip
_SCORE_SCALE = [[0.0, "#b2182b"], [0.5, "#e0e0e0"], [1.0, "#2166ac"]]


def _hover(df: pd.DataFrame) -> tuple[np.ndarray, str]:
    cols = ["sample_id"]
    lines = ["%{customdata[0]}"]
    for name, label, fmt in (
        ("label_name", "given", ""),
        ("predicted_name", "predicted", ""),
        ("score", "score", ":.3g"),
        ("flipped", "known label error", ""),
    ):
        if name in df.columns:
            lines.append(f"{label}: %{{customdata[{len(cols)}]{fmt}}}")
            cols.append(name)
    return df[cols].to_numpy(dtype=object), "<br>".join(lines) + "<extra></extra>"


def embedding_figure(
    df: pd.DataFrame,
    *,
    color_by: str = "label",
    method: str = "pca",
    selected_ids: set[str] | None = None,
    height: int = 560,
) -> go.Figure:
    """Scatter of df (sample_id, x, y and optional label_name, predicted_name, score, flipped).

        color_by: "label" / "predicted" (one trace per class), "flipped" (noisy vs clean), "score"
        (a diverging colour scale centred at 0; negative = harmful). Points in `selected_ids` (the
        ticked set) get a black outline, drawn as one extra trace on top (its customdata holds their ids
    too, so a selection over them still reads). Uses WebGL (Scattergl) above 3,000 points.
    """
    if color_by not in COLOR_OPTIONS:
        raise ValueError(f"color_by must be one of {', '.join(COLOR_OPTIONS)}")
    scatter = go.Scattergl if len(df) > 3000 else go.Scatter
    size = 7 if len(df) <= 2000 else 4
    ticked = df["sample_id"].isin(selected_ids or set()).to_numpy()
    fig = go.Figure()
    if color_by in ("label", "predicted", "flipped"):
        col = {"label": "label_name", "predicted": "predicted_name", "flipped": "flipped"}[color_by]
        if col not in df.columns:
            raise ValueError(f"the map has no {col!r} column to colour by")
        groups = sorted(df[col].astype(str).unique(), key=_natural)
        for i, g in enumerate(groups):
            part = df[df[col].astype(str) == g]
            cd, tmpl = _hover(part)
            name = (
                {"True": "injected noise", "False": "clean"}.get(g, g)
                if color_by == "flipped"
                else g
            )
            color = (
                ("#d62728" if g == "True" else "#9e9e9e")
                if color_by == "flipped"
                else _PALETTE[i % len(_PALETTE)]
            )
            fig.add_trace(
                scatter(
                    x=part["x"],
                    y=part["y"],
                    mode="markers",
                    name=name,
                    customdata=cd,
                    hovertemplate=tmpl,
                    marker={"size": size, "color": color, "opacity": 0.85},
                )
            )
    else:
        if "score" not in df.columns:
            raise ValueError("no influence scores yet: compute them on the Influence page")
        s = df["score"].to_numpy(dtype=np.float64)
        vmax = float(np.nanmax(np.abs(s))) if np.isfinite(s).any() else 1.0
        cd, tmpl = _hover(df)
        fig.add_trace(
            scatter(
                x=df["x"],
                y=df["y"],
                mode="markers",
                name="score",
                customdata=cd,
                hovertemplate=tmpl,
                marker={
                    "size": size,
                    "color": np.nan_to_num(s),
                    "colorscale": _SCORE_SCALE,
                    "cmin": -vmax or -1,
                    "cmax": vmax or 1,
                    "colorbar": {"title": {"text": "score"}, "thickness": 12},
                },
                showlegend=False,
            )
        )
    if ticked.any():  # outlines on top, one small trace: no per-point width list over all N points
        part = df[ticked]
        fig.add_trace(
            scatter(
                x=part["x"], y=part["y"], mode="markers", name="ticked to drop",
                customdata=part[["sample_id"]].to_numpy(dtype=object), hoverinfo="skip",
                marker={"size": size + 2, "color": "rgba(0,0,0,0)",
                        "line": {"width": 1.5, "color": "black"}},
            )
        )  # fmt: skip
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis={"title": f"{method.upper()} 1", "showticklabels": False, "zeroline": False},
        yaxis={"title": f"{method.upper()} 2", "showticklabels": False, "zeroline": False},
        dragmode="lasso",
        legend={"title": {"text": COLOR_OPTIONS[color_by]}, "itemsizing": "constant"},
        plot_bgcolor="white",
    )
    return fig


def _natural(s: str) -> tuple[int, str]:
    return (0, f"{int(s):08d}") if s.isdigit() else (1, s)


def ids_from_event(event: Any) -> list[str]:
    """The sample ids of the points a plotly_chart selection event holds (in selection order)."""
    if event is None:
        return []
    sel = event.get("selection") if isinstance(event, dict) else getattr(event, "selection", None)
    if not sel:
        return []
    points = sel.get("points") if isinstance(sel, dict) else getattr(sel, "points", None)
    out: list[str] = []
    seen: set[str] = set()
    for p in points or []:
        cd = p.get("customdata") if isinstance(p, dict) else None
        if cd is None:
            continue
        sid = str(cd[0] if isinstance(cd, list | tuple) else cd)
        if sid not in seen:
            seen.add(sid)
            out.append(sid)
    return out
