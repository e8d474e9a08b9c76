"""Retraining results as figures, tables and a verdict.

The result's shape is engine.retrain.RetrainResult (groups ``before`` / ``after`` /
``control_runs``, ``stats``, ``verdict``, ``verdict_kind``, ``class_names``, ...).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

__all__ = [
    "GROUPS",
    "accuracy_figure",
    "accuracy_table",
    "history_table",
    "p_values",
    "per_class_figure",
    "per_class_table",
    "render_experiment",
]

GROUPS = (("before", "before"), ("after", "after"), ("control_runs", "random control"))
_COLORS = {"before": "#7f7f7f", "after": "#2166ac", "random control": "#ef8a62"}


def _summary(result: dict[str, Any], group: str, metric: str) -> dict[str, Any] | None:
    g = result.get(group)
    if not g:
        return None
    s = (g.get("summary") or {}).get(metric)
    return s if isinstance(s, dict) else None


def accuracy_table(result: dict[str, Any], *, metric: str = "test_acc") -> pd.DataFrame:
    """One row per group present: group, mean, std, n (accuracy as a fraction)."""
    rows = []
    for key, label in GROUPS:
        s = _summary(result, key, metric)
        if s is not None and s.get("n", 0):
            rows.append(
                {
                    "group": label,
                    "mean": float(s["mean"]),
                    "std": float(s.get("std") or 0.0),
                    "n": int(s["n"]),
                }
            )
    return pd.DataFrame(rows, columns=["group", "mean", "std", "n"])


def accuracy_figure(result: dict[str, Any], *, metric: str = "test_acc") -> go.Figure:
    """Bars of before / after / control test accuracy (%) with error bars of one standard deviation."""
    t = accuracy_table(result, metric=metric)
    fig = go.Figure(
        go.Bar(
            x=t["group"],
            y=t["mean"] * 100,
            error_y={"type": "data", "array": (t["std"] * 100).tolist(), "visible": True},
            marker_color=[_COLORS.get(g, "#999") for g in t["group"]],
            text=[
                f"{m * 100:.1f}%" + (f" ± {s * 100:.1f}" if s > 0 else "") + f" (n={n})"
                for m, s, n in zip(t["mean"], t["std"], t["n"], strict=True)
            ],
            textposition="outside",
            hovertemplate="%{x}: %{y:.2f}%<extra></extra>",
        )
    )
    lo = float(((t["mean"] - t["std"]) * 100).min()) if len(t) else 0.0
    fig.update_layout(
        height=360,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        yaxis={
            "title": "test accuracy (%)" if metric == "test_acc" else metric,
            "range": [max(0.0, lo - 8), 103],
        },
        xaxis={"title": ""},
        plot_bgcolor="white",
        showlegend=False,
    )
    return fig


def per_class_table(result: dict[str, Any]) -> pd.DataFrame:
    """class, before, after, control (test accuracy %, control NaN if none), change = after - before."""
    names = list(result.get("class_names") or [])
    cols: dict[str, list[float]] = {}
    for key, label in GROUPS:
        s = _summary(result, key, "per_class_acc")
        if s is not None:
            cols[label] = [float(v) * 100 for v in s.get("mean", [])]
    n = len(names) or max((len(v) for v in cols.values()), default=0)
    names = names or [str(i) for i in range(n)]
    df = pd.DataFrame({"class": names})
    for label in ("before", "after", "random control"):
        vals = cols.get(label)
        df[label] = vals if vals and len(vals) == n else [math.nan] * n
    df["change"] = df["after"] - df["before"]
    return df


def per_class_figure(result: dict[str, Any]) -> go.Figure:
    """Per-class change of test accuracy (after - before, and control - before), in points."""
    t = per_class_table(result)
    fig = go.Figure()
    fig.add_trace(
        go.Bar(x=t["class"], y=t["change"], name="after - before", marker_color=_COLORS["after"])
    )
    if t["random control"].notna().any():
        fig.add_trace(
            go.Bar(
                x=t["class"],
                y=t["random control"] - t["before"],
                name="control - before",
                marker_color=_COLORS["random control"],
            )
        )
    fig.update_layout(
        height=300,
        barmode="group",
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        yaxis={"title": "change (points)", "zeroline": True, "zerolinecolor": "#444"},
        xaxis={"title": "test class", "type": "category"},
        plot_bgcolor="white",
    )
    return fig


def p_values(result: dict[str, Any], *, metric: str = "test_acc") -> dict[str, float | None]:
    """{"after_vs_before": p, "after_vs_control": p} (None where there is no test)."""
    st = (result.get("stats") or {}).get(metric) or {}
    out: dict[str, float | None] = {}
    for k in ("after_vs_before", "after_vs_control"):
        v = st.get(k) or {}
        out[k] = v.get("p") if isinstance(v, dict) else None
    return out


def _pct(s: dict[str, Any] | None) -> float:
    return float(s["mean"]) * 100 if s and s.get("n") else math.nan


def history_table(experiments: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per earlier retraining experiment, newest first: when, mode, changes, accuracies, p."""
    rows = []
    for r in experiments:
        if r.get("kind", "retrain") != "retrain":
            continue
        pv = p_values(r)
        created = r.get("created")
        rows.append(
            {
                "id": r.get("id", ""),
                "when": time.strftime("%Y-%m-%d %H:%M", time.localtime(float(created)))
                if created
                else "",
                "mode": r.get("mode", ""),
                "seeds": r.get("seeds", 1),
                "dropped": r.get("n_drop", len(r.get("drop") or [])),
                "relabelled": r.get("n_relabel", len(r.get("relabel") or {})),
                "before %": _pct(_summary(r, "before", "test_acc")),
                "after %": _pct(_summary(r, "after", "test_acc")),
                "control %": _pct(_summary(r, "control_runs", "test_acc")),
                "p vs control": pv["after_vs_control"],
                "verdict": r.get("verdict", ""),
            }
        )
    return pd.DataFrame(rows)


def _fmt_p(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def render_experiment(result: dict[str, Any], *, key: str) -> None:
    """Draw one result: the verdict, the accuracy bars, p-values, and per-class changes."""
    import streamlit as st

    verdict = result.get("verdict") or ""
    if verdict:
        # results saved before verdict_kind existed fall back to the neutral box
        show = {"improved": st.success, "inconclusive": st.warning, "mixed": st.warning}
        show.get(str(result.get("verdict_kind")), st.info)(verdict)
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(accuracy_figure(result), key=f"{key}_acc", width="stretch")
    with right:
        t = accuracy_table(result)
        losses = accuracy_table(result, metric="test_loss").set_index("group")
        for _, row in t.iterrows():
            spread = f" ± {row['std'] * 100:.2f}" if row["std"] > 0 else ""
            loss = losses["mean"].get(row["group"])
            st.metric(f"{row['group']} test accuracy", f"{row['mean'] * 100:.2f}%{spread}")
            if loss is not None:
                st.caption(f"{row['group']}: test loss {loss:.4f}")
        pa, pl = p_values(result), p_values(result, metric="test_loss")
        test = "paired by seed" if result.get("paired") else "one exact retrain"
        st.caption(
            f"p-values after vs before: accuracy {_fmt_p(pa['after_vs_before'])}, loss "
            f"{_fmt_p(pl['after_vs_before'])}; after vs random control: accuracy "
            f"{_fmt_p(pa['after_vs_control'])}, loss {_fmt_p(pl['after_vs_control'])} ({test}). "
            f"Mode {result.get('mode', '?')}, {result.get('n_drop', 0)} dropped, "
            f"{result.get('n_relabel', 0)} relabelled, {float(result.get('seconds') or 0):.1f} s."
        )
    with st.expander("Per-class test accuracy", expanded=False):
        st.plotly_chart(per_class_figure(result), key=f"{key}_pc", width="stretch")
        st.dataframe(per_class_table(result).round(2), hide_index=True, width="stretch")
