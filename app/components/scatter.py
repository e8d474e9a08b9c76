"""The embedding map: a plotly scatter of the training set you can box- or lasso-select.

Each point carries its row in the map's table as its ``customdata``, so ``ids_from_event`` turns
the selection ``st.plotly_chart(..., on_select="rerun", selection_mode=("points", "box",
"lasso"))`` returns into sample ids. Plotly hover labels cannot show images, so the page shows the thumbnails of the
selection below the map.
"""

from __future__ import annotations

from collections.abc import Sequence
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


_HOVER = "%{hovertext}<extra></extra>"  # every line of a point's hover label is in its hovertext


def _escape(s: str) -> str:
    """A class name as literal text in a hover label (plotly renders HTML tags in it)."""
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _point_data(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per point: customdata (N,) float32 = row of df (exact below 2**24), sent to
    the browser as one binary array; hover text (N,) = "id<br>given: A<br>predicted: B<br>score:
    S", each line only when df has the column, and a last line for a known label error; score
    (N,) float64, NaN without scores."""
    score = (
        df["score"].to_numpy(dtype=np.float64)
        if "score" in df.columns
        else np.full(len(df), np.nan)
    )
    # 1-D: a selection event reports each point's customdata as a plain number (a 2-D binary
    # array's rows come back as typed arrays that do not survive the trip to the server)
    cd = np.arange(len(df), dtype=np.float32)
    text = df["sample_id"].astype(str).to_numpy(dtype=object)
    for col, label in (("label_name", "given"), ("predicted_name", "predicted")):
        if col in df.columns:
            names = df[col].astype(str)
            escaped = names.map({n: _escape(n) for n in names.unique()})
            text = text + f"<br>{label}: " + escaped.to_numpy(dtype=object)
    if "score" in df.columns:
        text = text + np.array([f"<br>score: {v:.3g}" for v in score.tolist()], dtype=object)
    if "flipped" in df.columns:
        flipped = df["flipped"].fillna(False).astype(bool).to_numpy()
        text = np.where(flipped, text + "<br>⚑ known label error", text)
    return cd, text, score


def embedding_figure(
    df: pd.DataFrame,
    *,
    color_by: str = "label",
    method: str = "pca",
    selected_ids: set[str] | None = None,
    height: int = 560,
) -> go.Figure:
    """Scatter of df (sample_id, x, y and optional label_name, predicted_name, score, flipped).

    color_by: "label" / "predicted" (one colour per class), "flipped" (noisy vs clean), "score"
    (a diverging colour scale centred at 0; negative = harmful). Each point's ``customdata`` is
    its row in df, one binary float32 array (ids_from_event maps rows back to sample
    ids); its ``hovertext`` the sample id, classes and score. One trace per colour (one for "score",
    on a shared colour axis). Points in `selected_ids` (the ticked set) get a black outline, drawn
    as one extra trace on top. Uses WebGL (Scattergl) above 3,000 points.

    Why this shape (51k points, bench/app_pages.py): the strings go in ``hovertext``, not
    ``text``, because scattergl lays a ``text`` array out on load even with mode="markers" (1.5 s
    in Chromium); building plus serialising takes 0.5 s instead of 0.85 s (the figure is 7.1 MB
    of JSON, 5.3 MB before: the hover strings are longer); one trace per colour, not per
    (given, predicted) pair, mounts faster (89 traces: 0.4-0.8 s more).
    """
    if color_by not in COLOR_OPTIONS:
        raise ValueError(f"color_by must be one of {', '.join(COLOR_OPTIONS)}")
    if color_by == "score" and "score" not in df.columns:
        raise ValueError("no influence scores yet: compute them on the Influence page")
    colour_col = {"label": "label_name", "predicted": "predicted_name", "flipped": "flipped"}.get(
        color_by
    )
    if colour_col is not None and colour_col not in df.columns:
        raise ValueError(f"the map has no {colour_col!r} column to colour by")
    kind = "scattergl" if len(df) > 3000 else "scatter"
    size = 7 if len(df) <= 2000 else 4
    cd, hover, score = _point_data(df)
    xy = df[["x", "y"]].to_numpy(dtype=np.float32)
    groups: dict[str, np.ndarray] = {"": np.arange(len(df))}
    if colour_col:
        col = df[colour_col].astype(str).to_numpy()
        groups = {c: np.flatnonzero(col == c) for c in sorted(set(col.tolist()), key=_natural)}
    traces: list[Any] = []
    vmax = 1.0
    if color_by == "score":
        vmax = float(np.nanmax(np.abs(score))) if np.isfinite(score).any() else 1.0
    for i, (c, rows) in enumerate(groups.items()):
        marker: dict[str, Any] = {"size": size, "opacity": 0.85}
        legend: dict[str, Any] = {"showlegend": False}
        if colour_col:
            name = (
                {"True": "injected noise", "False": "clean"}.get(c, c)
                if color_by == "flipped"
                else c
            )
            marker["color"] = (
                ("#d62728" if c == "True" else "#9e9e9e")
                if color_by == "flipped"
                else _PALETTE[i % len(_PALETTE)]
            )
            legend = {"name": name}
        else:
            marker.update(
                color=np.nan_to_num(score[rows]).astype(np.float32), coloraxis="coloraxis"
            )
            legend["name"] = "score"
        traces.append(
            dict(
                type=kind, x=xy[rows, 0], y=xy[rows, 1], mode="markers", customdata=cd[rows],
                hovertext=hover[rows], hovertemplate=_HOVER,
                marker=marker, **legend,
            )
        )  # fmt: skip
    ticked = df["sample_id"].isin(selected_ids or set()).to_numpy()
    if ticked.any():  # outlines on top, one small trace: no per-point width list over all N points
        traces.append(
            dict(
                type=kind, x=xy[ticked, 0], y=xy[ticked, 1], mode="markers", name="ticked to drop",
                customdata=cd[ticked], hoverinfo="skip",
                marker={"size": size + 2, "color": "rgba(0,0,0,0)",
                        "line": {"width": 1.5, "color": "black"}},
            )
        )  # fmt: skip
    fig = go.Figure(data=traces)  # dicts: each trace is validated once, here
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis={"title": f"{method.upper()} 1", "showticklabels": False, "zeroline": False},
        yaxis={"title": f"{method.upper()} 2", "showticklabels": False, "zeroline": False},
        dragmode="lasso",
        legend={"title": {"text": COLOR_OPTIONS[color_by]}, "itemsizing": "constant"},
        plot_bgcolor="white",
    )
    if color_by == "score":
        fig.update_layout(
            coloraxis={
                "colorscale": _SCORE_SCALE, "cmin": -vmax or -1, "cmax": vmax or 1,
                "colorbar": {"title": {"text": "score"}, "thickness": 12},
            }
        )  # fmt: skip
    return fig


def _natural(s: str) -> tuple[int, str]:
    return (0, f"{int(s):08d}") if s.isdigit() else (1, s)


def ids_from_event(event: Any, ids: Sequence[str]) -> list[str]:
    """The sample ids of the points a plotly_chart selection event holds (in selection order).

    `ids` are the sample ids of the figure's df, in its row order (embedding_figure puts the row
    in customdata); a row outside it is ignored."""
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
        try:
            row = int(cd[0] if isinstance(cd, list | tuple) else cd)
        except (TypeError, ValueError):
            continue
        if not 0 <= row < len(ids):
            continue
        sid = str(ids[row])
        if sid not in seen:
            seen.add(sid)
            out.append(sid)
    return out
