"""Class heatmap: which training classes raise or lower the loss of which test classes.

M[a, b] = mean over training images of class a and test images of class b of the score for the
"class" query (HYDRA Fig. 2). Negative (red) = the images of class a raise the loss of test class
b (harmful). Choosing a cell (click it, or use the two select boxes) lists the training images of
class a that raise test class b's loss the most, with drop tick boxes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from app import state
from app.components.common import require_run, show_user_error
from app.components.gallery import render_two_sided
from app.components.heatmap import cell_from_event, heatmap_figure, top_cells
from app.components.progress import active_jobs
from engine import jobs
from engine.influence.methods import query_methods
from engine.influence.scorestore import ScoreStore

K = "heatmap"
DEFAULT_METHOD = "hydra"


def _folder_version(run: Path, method: str) -> float:
    """The cache key of the method's stored scores (0 when absent)."""
    return ScoreStore(run).version(method)


@st.cache_data(max_entries=16, show_spinner=False)
def _matrix(
    path: str, method: str, normalise: bool, version: float
) -> tuple[np.ndarray, list[str]]:
    from engine.influence.api import class_matrix

    m, names = class_matrix(path, method=method, normalise=normalise)
    return np.asarray(m, dtype=np.float64), list(names)


@st.cache_resource(max_entries=16, show_spinner=False)
def _class_scores(path: str, method: str, version: float) -> pd.DataFrame:
    """The class-query scores (N_train rows, one column per test class), indexed by sample_id.
    Shared, not copied per rerun (51k x 10 at full Fashion-MNIST): never mutate it."""
    from engine.influence.api import load_scores

    df = load_scores(path, method, "class").set_index("sample_id")
    df.index = df.index.astype(str)
    return df


def class_scores(run: Path, method: str) -> pd.DataFrame | None:
    """The stored class-query scores of `method`, or None when they are not computed yet.

    (class_matrix would compute missing scores inside the page; that is a job's work.)
    """
    from engine.runs import RunError

    try:
        return _class_scores(str(run), method, _folder_version(run, method))
    except (RunError, FileNotFoundError):
        return None


def load_matrix(run: Path, method: str, normalise: bool) -> tuple[np.ndarray, list[str]] | None:
    """The matrix, or None when the class query of `method` has not been computed yet."""
    try:
        if class_scores(run, method) is None:
            return None
        return _matrix(str(run), method, normalise, _folder_version(run, method))
    except Exception as e:
        if show_user_error(e):
            st.stop()
        raise


def offer_compute(run: Path, method: str) -> None:
    st.info(
        f"The class query of `{method}` is not computed for this run yet. It scores every training "
        "image against the summed loss of each test class (one pass over the trajectory)."
    )
    if st.button(f"Compute the class heatmap with {method}", type="primary", key=f"{K}-compute"):
        jobs.start_job("influence", run_dir=run, params={"method": method, "query": "class"})
        st.rerun()


def _sync_cell_from_chart(names: list[str]) -> None:
    """A new click on the chart moves the two select boxes to that cell (before they are drawn)."""
    cell = cell_from_event(st.session_state.get(f"{K}-chart"))
    if cell is not None and cell != st.session_state.get(f"{K}-last-click"):
        st.session_state[f"{K}-last-click"] = cell
        a, b = cell
        if 0 <= a < len(names) and 0 <= b < len(names):
            st.session_state[f"{K}-train-class"] = a
            st.session_state[f"{K}-test-class"] = b


def cell_gallery(run: Path, method: str, names: list[str], a: int, b: int, value: float) -> None:
    st.subheader(
        f"Training images labelled **{names[a]}** and the loss of test class **{names[b]}**"
    )
    scores = class_scores(run, method)
    if scores is None:
        st.info("No per-image class scores to show yet.")
        return
    col = f"class:{names[b]}" if f"class:{names[b]}" in scores.columns else scores.columns[b]
    table = state.train_table(run)
    in_class = table.index[table["label"] == a]
    s = scores.loc[scores.index.intersection(in_class), col].astype(float)
    flipped = state.known_errors(run)
    st.caption(
        f"Cell value {value:.4g}. Score = estimated change of test class {names[b]}'s summed loss "
        "if the image is removed: **negative = it raises that loss (harmful)**."
    )
    harm = s[s < 0].sort_values(kind="stable").index.tolist()
    helpful = s[s > 0].sort_values(ascending=False, kind="stable").index.tolist()
    render_two_sided(
        run,
        {
            f"Raise its loss — harmful ({len(harm)})": harm,
            f"Lower its loss — helpful ({len(helpful)})": helpful,
        },
        key=K, scores=dict(zip(s.index.tolist(), s.tolist(), strict=True)), page_size=12,
        flipped=flipped,
    )  # fmt: skip


def main() -> None:
    st.title("Class heatmap")
    st.markdown(
        "How much the training images of each class (rows) change the loss of each test class "
        "(columns). **Red = harmful**: removing those training images would lower that test "
        "class's loss. Click a cell, or pick it below, to see the images behind it."
    )
    run = require_run()
    if run is None:
        return
    methods = query_methods()
    default = methods.index(DEFAULT_METHOD) if DEFAULT_METHOD in methods else 0
    c1, c2 = st.columns([2, 1])
    method = c1.selectbox("Method", methods, index=default, key=f"{K}-method")
    normalise = c2.toggle(
        "Normalised",
        key=f"{K}-normalised",
        help="Raw: the mean score over (training image of class a, test image of class b) pairs. "
        "Normalised (HYDRA): each entry divided by sqrt(|row sum x column sum|), so classes of "
        "different sizes compare.",
    )
    running = active_jobs(run, kinds=("influence",))
    got = load_matrix(run, method, normalise)
    if got is None:
        if not running:
            offer_compute(run, method)
        return
    m, names = got
    _sync_cell_from_chart(names)
    if f"{K}-train-class" not in st.session_state:
        worst = top_cells(m, k=1)
        a, b = (worst[0][0], worst[0][1]) if worst else (0, 0)
        st.session_state[f"{K}-train-class"], st.session_state[f"{K}-test-class"] = a, b
    for k in (f"{K}-train-class", f"{K}-test-class"):
        if not 0 <= int(st.session_state[k]) < len(names):
            st.session_state[k] = 0
    left, right = st.columns([3, 2])
    with right:
        st.markdown("**Chosen cell**")
        opts = list(range(len(names)))
        a = st.selectbox(
            "Training class (row)", opts, format_func=lambda i: names[i], key=f"{K}-train-class"
        )
        b = st.selectbox(
            "Test class (column)", opts, format_func=lambda i: names[i], key=f"{K}-test-class"
        )
        worst = top_cells(m, k=3)
        if worst:
            st.markdown("**Most harmful pairs**")
            st.markdown("\n".join(f"- {names[i]} → test {names[j]}: {v:.3g}" for i, j, v in worst))
    with left:
        fig = heatmap_figure(m, names, normalised=normalise, selected=(a, b))
        st.plotly_chart(
            fig,
            key=f"{K}-chart",
            on_select="rerun",
            selection_mode=("points", "box"),
            width="content",
            config={"displaylogo": False},
        )
    cell_gallery(run, method, names, a, b, float(m[a, b]))


main()
