"""The embedding map's figure: every point once, rows that map back to ids, hover text per point."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.components.scatter import embedding_figure, ids_from_event


def _map(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, n)
    predicted = np.where(rng.random(n) < 0.8, label, (label + 1) % 3)
    names = np.array(["cat", "dog", "<b>bird%"], dtype=object)
    return pd.DataFrame(
        {
            "sample_id": [f"s{i:03d}" for i in range(n)],
            "x": rng.normal(size=n),
            "y": rng.normal(size=n),
            "label_name": names[label],
            "predicted_name": names[predicted],
            "score": rng.normal(size=n),
            "flipped": rng.random(n) < 0.2,
        }
    )


def _esc(name: str) -> str:
    return name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@pytest.mark.parametrize("color_by", ["label", "predicted", "flipped", "score"])
def test_every_point_once_with_its_row_score_and_class_names(color_by: str) -> None:
    df = _map()
    fig = embedding_figure(df, color_by=color_by, selected_ids={"s001", "s002"})
    *points, ticked = fig.data
    assert ticked.name == "ticked to drop" and len(ticked.x) == 2
    rows = np.concatenate([np.asarray(t.customdata) for t in points]).astype(int)
    assert sorted(rows.tolist()) == list(range(len(df)))  # each point exactly once
    for t in points:
        r = np.asarray(t.customdata).astype(int)
        np.testing.assert_allclose(t.x, df["x"].to_numpy()[r], rtol=1e-6)
        assert t.hovertemplate == "%{hovertext}<extra></extra>"
        for h, i in zip(t.hovertext, r, strict=True):  # id, classes (HTML-escaped), error mark
            row = df.iloc[i]
            want = f"{row.sample_id}<br>given: {_esc(row.label_name)}<br>predicted: "
            want += _esc(row.predicted_name) + f"<br>score: {row.score:.3g}"
            want += "<br>⚑ known label error" if row.flipped else ""
            assert h == want
    if color_by == "score":
        assert fig.layout.coloraxis.cmin == -fig.layout.coloraxis.cmax
        assert all(t.marker.coloraxis == "coloraxis" for t in points)
    else:  # one trace, and legend entry, per colour
        col = {"label": "label_name", "predicted": "predicted_name", "flipped": "flipped"}[color_by]
        assert len(points) == df[col].nunique() == len({t.marker.color for t in points})


def test_a_selection_maps_rows_back_to_ids_in_order_without_repeats() -> None:
    df = _map()
    ids = df["sample_id"].tolist()
    fig = embedding_figure(df, color_by="label")
    t = max(fig.data, key=lambda tr: len(tr.x))  # a trace with at least 3 points
    picked = [t.customdata[2], t.customdata[0], t.customdata[2], 10_000.0, "x"]
    event = {"selection": {"points": [{"customdata": float(c) if c != "x" else c} for c in picked]}}
    want = [ids[int(t.customdata[2])], ids[int(t.customdata[0])]]
    assert ids_from_event(event, ids) == want
    assert ids_from_event(None, ids) == [] and ids_from_event({"selection": {}}, ids) == []
