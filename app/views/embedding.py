"""Embedding map: the training set in 2-D (penultimate-layer features), coloured by label, score
or injected noise. Box- or lasso-select points, confirm, and they are ticked to drop.

PCA is drawn at once; UMAP runs in a background job (its first run compiles for about a minute)
and replaces the PCA map when it is ready.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import state
from app.components.common import require_run, show_user_error
from app.components.gallery import render_gallery
from app.components.progress import active_jobs
from app.components.recommendation import latest, pick_method, trust_note, why_caption
from app.components.scatter import COLOR_OPTIONS, embedding_figure, ids_from_event
from engine import jobs
from engine.embedding import embedding_path, has_embedding
from engine.selections import load_selections, set_drop

K = "embedding"


def _version(run: Path) -> float:
    return max(
        (p.stat().st_mtime for m in ("pca", "umap") if (p := embedding_path(run, m)).is_file()),
        default=0.0,
    )


@st.cache_data(max_entries=8, show_spinner="Computing the PCA map ...")
def _embedding(path: str, version: float, run_version: float) -> pd.DataFrame:
    from engine.embedding import load_embedding

    return load_embedding(path)


class MapData(NamedTuple):
    """The map's table and what the page derives from it (cached and shared: never mutate)."""

    df: pd.DataFrame  # sample_id, x, y, method, label, predicted, flipped, names (, score)
    ids: list[str]  # df's sample ids in row order (ids_from_event maps rows back through it)
    scores: dict[str, float] | None
    flipped: set[str]


def _map_table(run: Path, method: str | None) -> pd.DataFrame:
    emb = _embedding(str(run), _version(run), state.run_version(run))
    names = np.asarray([*state.bundle(run).class_names, "?"], dtype=object)
    t = state.train_table(run)
    df = emb.set_index("sample_id").join(t[["label", "predicted", "flipped"]], how="left")
    for col in ("label", "predicted"):  # -1 (unknown) shows as "?"
        codes = df[col].fillna(-1).to_numpy(dtype=np.int64)
        df[f"{col}_name"] = names[np.where(codes < 0, len(names) - 1, codes)]
    known = state.known_errors(run)  # injected noise, or the data set's list of known errors
    df["flipped"] = df["flipped"].fillna(False).astype(bool) | df.index.isin(known)
    if method:
        s = state.scores(run, method)
        df["score"] = s.reindex(df.index).to_numpy(dtype=np.float64)
    return df.reset_index()


@st.cache_resource(max_entries=8, show_spinner=False)
def _map_data(
    path: str, method: str | None, version: float, run_version: float, score_version: float
) -> MapData:
    df = _map_table(Path(path), method)
    ids = df["sample_id"].astype(str).tolist()
    scores = (
        dict(zip(ids, df["score"].to_numpy(dtype=float).tolist(), strict=True))
        if "score" in df
        else None
    )
    return MapData(df, ids, scores, set(df.loc[df["flipped"], "sample_id"].astype(str)))


def map_data(run: Path, method: str | None) -> MapData:
    """The map joined with labels, predictions, the flipped flag and (optionally) a method's
    scores; built once per run, map and score version (0.2 s at 51k), not on every rerun."""
    from engine.influence.scorestore import ScoreStore

    sv = ScoreStore(run).version(method) if method else 0.0
    return _map_data(str(run), method, _version(run), state.run_version(run), sv)


@st.cache_resource(max_entries=4, show_spinner=False)
def _figure(
    path: str, method: str | None, color_by: str, version: float, run_version: float,
    score_version: float, ticked_key: str, _ticked: frozenset[str],
) -> go.Figure:  # fmt: skip
    df = _map_data(path, method, version, run_version, score_version).df
    kind = str(df["method"].iloc[0]) if len(df) else "pca"
    return embedding_figure(df, color_by=color_by, method=kind, selected_ids=set(_ticked))


def map_figure(run: Path, method: str | None, color_by: str, ticked: set[str]) -> go.Figure:
    """The map's figure, rebuilt only when the map, the scores, the colouring or the ticked set
    changed (0.45 s at 51k): a lasso selection's rerun reuses it. Shared: never mutate it."""
    from engine.influence.scorestore import ScoreStore

    sv = ScoreStore(run).version(method) if method else 0.0
    key = hashlib.sha1("\n".join(sorted(ticked)).encode()).hexdigest()
    return _figure(
        str(run), method, color_by, _version(run), state.run_version(run), sv, key,
        frozenset(ticked),
    )  # fmt: skip


def umap_controls(run: Path) -> None:
    running = active_jobs(run, kinds=("embedding",))
    if has_embedding(run, "umap") or running:
        return
    last = jobs.list_jobs(run, kind="embedding")
    if last and last[-1].get("state") == "failed":
        st.warning(f"The last UMAP job failed: {last[-1].get('error') or last[-1].get('message')}")
    c1, c2 = st.columns([1, 3])
    if c1.button("Compute the UMAP map", key=f"{K}-umap"):
        jobs.start_job("embedding", run_dir=run, params={"method": "umap"})
        st.rerun()
    c2.caption(
        "This is the PCA map. UMAP separates the classes better; it runs in the background "
        "(about a minute the first time on a small CPU) and replaces this map when it is done."
    )


def selection_section(
    run: Path, ids: list[str], scores: dict[str, float] | None, flipped: set[str]
) -> None:
    if not ids:
        st.caption(
            "Use the box or lasso tool (top right of the map) to select points; their images "
            "show here and one button ticks them all to drop."
        )
        return
    sel = load_selections(run)
    new = [i for i in ids if i not in sel.drop]
    st.markdown(f"**{len(ids)} images selected** ({len(ids) - len(new)} already ticked).")
    c1, c2, _ = st.columns([2, 2, 3])
    if c1.button(
        f"Tick these {len(ids)} images to drop",
        type="primary",
        key=f"{K}-confirm",
        disabled=not new,
    ):
        set_drop(run, ids, True)
        st.toast(f"Ticked {len(new)} images; see them on Retrain & compare.")
        st.rerun()
    if c2.button("Untick them", key=f"{K}-untick", disabled=len(new) == len(ids) and bool(new)):
        set_drop(run, ids, False)
        st.rerun()
    render_gallery(run, ids, scores=scores, key=f"{K}-gallery", page_size=12, flipped=flipped)


def main() -> None:
    st.title("Embedding map")
    st.markdown(
        "Each point is a training image, placed by what the model's last hidden layer sees. "
        "Mislabeled images often sit inside another class's cluster. Select points with the box "
        "or lasso tool to look at them and tick them to drop."
    )
    run = require_run()
    if run is None:
        return
    methods = state.score_methods(run)
    has_noise = bool(state.known_errors(run))
    options = (
        ["label", "predicted"] + (["score"] if methods else []) + (["flipped"] if has_noise else [])
    )
    c1, c2 = st.columns([3, 2])
    color_by = c1.radio(
        "Colour by",
        options,
        format_func=lambda o: COLOR_OPTIONS[o],
        horizontal=True,
        key=f"{K}-color",
    )
    rec = latest(run)
    method = (
        pick_method("Scores of", methods, rec, key=f"{K}-method", where=c2) if methods else None
    )
    why_caption(rec, method)
    if method and color_by == "score":
        trust_note(run, method)
    if not methods:
        c2.caption(
            "No influence scores yet: compute them on the **Influence** page to colour by score."
        )
    try:
        data = map_data(run, method)
    except Exception as e:
        if show_user_error(e):
            return
        raise
    df = data.df
    kind = str(df["method"].iloc[0]) if len(df) else "pca"
    umap_controls(run)
    sel = load_selections(run)
    fig = map_figure(run, method, color_by, sel.drop)
    event = st.plotly_chart(
        fig,
        key=f"{K}-chart",
        on_select="rerun",
        selection_mode=("points", "box", "lasso"),
        width="stretch",
        config={"displaylogo": False},
    )
    st.caption(
        f"{kind.upper()} of {len(df)} training images · outlined = ticked to drop ({len(sel.drop)}). "
        "Hover a point for its id, labels and score."
    )
    ids = ids_from_event(event, data.ids)
    selection_section(run, ids, data.scores, data.flipped if has_noise else set())


main()
