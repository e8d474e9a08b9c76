"""Test sample: "why did the model get this wrong?" Pick a test image (the misclassified ones are
shown first) and see the training images that most raise its loss (harmful) and most lower it."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import state
from app.components.common import require_run, show_user_error
from app.components.gallery import render_two_sided
from app.components.progress import active_jobs
from engine import jobs
from engine.influence.methods import fast_methods, query_methods
from engine.influence.scorestore import ScoreStore

K = "test"
DEFAULT_METHOD = "hydra"
GRID = 16


def _influence_version(run: Path) -> float:
    return ScoreStore(run).version()


@st.cache_data(
    max_entries=64, show_spinner="Scoring the training images against this test image ..."
)
def _projected(path: str, test_id: str, method: str, k: int, version: float) -> pd.DataFrame:
    from engine.influence.api import test_influencers

    return pd.DataFrame(test_influencers(path, test_id, method=method, k=k, exact=False))


@st.cache_data(max_entries=64, show_spinner=False)
def _exact(path: str, test_id: str, method: str, k: int, version: float) -> pd.DataFrame | None:
    """The stored exact scores for query test:<id> as the k most harmful and k most helpful."""
    from engine.influence.api import load_scores
    from engine.runs import RunError

    try:
        frame = load_scores(path, method, f"test:{test_id}")
    except RunError:
        return None
    s = frame.set_index("sample_id")[f"test:{test_id}"].astype(float).sort_values(kind="stable")
    rank = pd.Series(range(1, len(s) + 1), index=s.index)
    harm = s.index[: min(k, len(s))]
    helpful = s.index[len(harm) :][::-1][:k]
    pick = list(harm) + list(helpful)
    return pd.DataFrame(
        {
            "sample_id": pick,
            "score": s[pick].to_numpy(),
            "rank": rank[pick].to_numpy(),
            "kind": ["harmful"] * len(harm) + ["helpful"] * len(helpful),
        }
    )


def test_table(run: Path) -> pd.DataFrame:
    """Test samples: sample_id (index), label, predicted, confidence, correct (cached and shared:
    never mutate it)."""
    return _test_table(str(run), state.run_version(run))


@st.cache_resource(max_entries=4, show_spinner=False)
def _test_table(path: str, version: float) -> pd.DataFrame:
    run = Path(path)
    m = state.bundle(run).manifest
    t = m[m["split"] == "test"].set_index("sample_id")[["label", "path"]]
    p = state.predictions(run)
    p = p[p["split"] == "test"].set_index("sample_id")[["predicted", "confidence", "prob_given"]]
    t = t.join(p, how="left")
    t["correct"] = t["label"] == t["predicted"]
    return t


@st.cache_data(max_entries=8, show_spinner=False)
def _attack_predictions(path: str, version: float) -> pd.DataFrame:
    from engine.experiments.backdoor_bench import attack_predictions

    return attack_predictions(path)


def attack_table(run: Path) -> pd.DataFrame:
    """A backdoored run's watermarked test images (test-2), like test_table; "correct" = not
    sent to the wrong class (the attack failed on it)."""
    t = _attack_predictions(str(run), state.run_version(run)).set_index("sample_id")
    t["correct"] = t["label"] == t["predicted"]
    return t


def option_labels(table: pd.DataFrame, names: list[str]) -> dict[str, str]:
    """sample_id -> "id — true A, pred B" (and " ✗" when wrong) for the test-image picker.

    Built in one pass over columns: a format_func that indexed the table per option spent 2.4 s
    of every rerun on a 10k-image test split."""
    return {
        sid: f"{sid} — true {names[int(y)]}, pred {names[int(p)]}" + ("" if ok else "  ✗")
        for sid, y, p, ok in zip(
            table.index.tolist(), table["label"].tolist(), table["predicted"].tolist(),
            table["correct"].tolist(), strict=True,
        )
    }  # fmt: skip


@st.cache_resource(max_entries=8, show_spinner=False)
def _test_labels(path: str, version: float, names: tuple[str, ...]) -> dict[str, str]:
    return option_labels(_test_table(path, version), list(names))


def _pick(sample_id: str) -> None:
    st.session_state[f"{K}-id"] = sample_id
    st.session_state[f"{K}-picked"] = True


def misclassified_grid(
    run: Path, table: pd.DataFrame, names: list[str], *, split: str = "test"
) -> None:
    wrong = list(table.index[~table["correct"]])
    if not wrong:
        st.success(
            "The model gets every test image right. Pick any test image below to see its influencers."
        )
        return
    st.markdown(
        f"**{len(wrong)} misclassified test images** of {len(table)} — press one to inspect it."
    )
    n_pages = max(1, math.ceil(len(wrong) / GRID))
    page = 1
    if n_pages > 1:
        left, _ = st.columns([1, 4])
        page = int(left.number_input(f"Page (of {n_pages})", 1, n_pages, 1, key=f"{K}-grid-page"))
    shown = wrong[(page - 1) * GRID : page * GRID]
    cols = st.columns(8)
    for i, sid in enumerate(shown):
        with cols[i % 8].container(border=True):
            url = state.thumbnail_url(run, sid, split=split)
            if url:
                st.image(url, width=state.THUMB_PX)
            r = table.loc[sid]
            st.markdown(
                f"true **{names[int(r['label'])]}** · pred **{names[int(r['predicted'])]}**"
            )
            st.button("Why?", key=f"{K}-pick-{sid}", on_click=_pick, args=(sid,))


def sample_header(
    run: Path, table: pd.DataFrame, names: list[str], sid: str, *, split: str = "test"
) -> None:
    r = table.loc[sid]
    c1, c2, c3, c4 = st.columns([1, 1, 1, 1])
    png = state.thumbnail(run, sid, split=split, px=128)
    if png:
        c1.image(png, width=128, caption=sid)
    c2.metric("True label", names[int(r["label"])])
    c3.metric(
        "Predicted",
        names[int(r["predicted"])],
        delta="wrong" if not r["correct"] else "right",
        delta_color="inverse" if not r["correct"] else "normal",
        delta_arrow="off",  # right / wrong is not a rise or a fall
    )
    c4.metric(
        "Confidence",
        f"{float(r['confidence']):.2f}",
        help=f"probability of the true label {float(r['prob_given']):.2f}",
    )


def influencers_figure(df: pd.DataFrame) -> go.Figure:
    """Horizontal bars of the influencers' scores: harmful (red, negative) and helpful (blue)."""
    d = df.sort_values("score", kind="stable")
    fig = go.Figure(
        go.Bar(
            x=d["score"],
            y=[str(i) for i in d["sample_id"]],
            orientation="h",
            marker_color=["#b2182b" if v < 0 else "#2166ac" for v in d["score"]],
            hovertemplate="%{y}: %{x:.4g}<extra></extra>",
        )
    )
    fig.update_layout(
        height=max(220, 14 * len(d) + 60),
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis={
            "title": "score (negative = raises this image's loss = harmful)",
            "zeroline": True,
            "zerolinecolor": "#444",
        },
        yaxis={"title": "", "type": "category", "autorange": "reversed", "tickfont": {"size": 9}},
        plot_bgcolor="white",
    )
    return fig


def _influencers(run: Path, sid: str, method: str, k: int, exact: bool) -> pd.DataFrame | None:
    """The influencers, or None after offering the job that makes them possible."""
    running = active_jobs(run, kinds=("influence", "projected-store"))
    if exact:
        got = _exact(str(run), sid, method, k, _influence_version(run))
        if got is None and not running:
            st.info(
                f"Exact `{method}` scores for `{sid}` are not computed yet: one pass over the trajectory."
            )
            if st.button(f"Compute exact {method} scores for this image", key=f"{K}-exact-start"):
                jobs.start_job(
                    "influence", run_dir=run, params={"method": method, "query": f"test:{sid}"}
                )
                st.rerun()
        return got
    from engine.influence.featurestore import store_ready

    if not store_ready(run, method):
        if not running:
            st.info(
                f"To answer any test image at once, `{method}` needs a per-image index of the training "
                "set (one pass over the trajectory, built once per run)."
            )
            if st.button(f"Build the {method} index", type="primary", key=f"{K}-store-start"):
                jobs.start_job("projected-store", run_dir=run, params={"method": method})
                st.rerun()
        return None
    return _projected(str(run), sid, method, k, _influence_version(run))


def influencers_section(run: Path, sid: str, method: str, k: int, exact: bool) -> None:
    try:
        df = _influencers(run, sid, method, k, exact)
    except ImportError as e:  # the influence API is not installed in this checkout
        st.info(f"Per-image influencers need engine.influence.api, which is unavailable ({e}).")
        return
    except Exception as e:
        if show_user_error(e):
            return
        raise
    if df is None:
        return
    if df.empty:
        st.info("No influencers returned for this test image.")
        return
    scores = dict(zip(df["sample_id"].astype(str), df["score"].astype(float), strict=True))
    flipped = state.known_errors(run)
    harmful = [str(i) for i in df.loc[df["kind"] == "harmful", "sample_id"]]
    helpful = [str(i) for i in df.loc[df["kind"] == "helpful", "sample_id"]]
    st.caption(
        "Score = estimated change of this test image's loss if the training image is removed: "
        f"**negative = the training image raises its loss (harmful)**, positive = it lowers it. "
        f"{'Exact adjoint pass' if exact else 'Served from the projected index (approximate)'}."
    )
    st.plotly_chart(
        influencers_figure(df), key=f"{K}-bars", width="stretch", config={"displaylogo": False}
    )
    render_two_sided(
        run,
        {
            f"Raise its loss — harmful ({len(harmful)})": harmful,
            f"Lower its loss — helpful ({len(helpful)})": helpful,
        },
        key=K, scores=scores, page_size=12, flipped=flipped,
    )  # fmt: skip


def main() -> None:
    st.title("Test sample")
    st.markdown(
        "**Why did the model get this wrong?** Pick a test image to see the training images that "
        "pushed the model towards its answer (they raise the image's loss) and those that held it back."
    )
    run = require_run()
    if run is None:
        return
    names = state.bundle(run).class_names
    table, split = test_table(run), "test"
    if state.bundle(run).attack is not None:  # a backdoored run: offer its watermarked images
        split = st.radio(
            "Test images",
            ["test", "attack"],
            format_func=lambda s: "clean (test-1)" if s == "test" else "watermarked (test-2)",
            horizontal=True,
            key=f"{K}-set",
            help="Watermarked: every test image outside the backdoor's target class with the "
            "trigger stamped on; the influencers of one it fools are the poisoned images.",
        )
        if split == "attack":
            table = attack_table(run)
    if table.empty:
        st.info("This run has no test images.")
        return
    try:
        methods = query_methods()
    except ImportError as e:
        st.info(f"Influence estimators are unavailable ({e}).")
        return
    ids = table.index.tolist()
    wrong = table.index[~table["correct"]].tolist()
    labels = (
        _test_labels(str(run), state.run_version(run), tuple(names))
        if split == "test"
        else option_labels(table, names)
    )
    if st.session_state.get(f"{K}-id") not in ids:
        st.session_state[f"{K}-id"] = wrong[0] if wrong else ids[0]
    picked = bool(st.session_state.get(f"{K}-picked"))
    with st.expander("Misclassified test images", expanded=not picked):
        misclassified_grid(run, table, names, split=split)
    c1, c2, c3 = st.columns([3, 2, 1])
    sid = c1.selectbox(
        "Test image",
        ids,
        key=f"{K}-id",
        format_func=labels.__getitem__,
    )
    default = methods.index(DEFAULT_METHOD) if DEFAULT_METHOD in methods else 0
    method = c2.selectbox("Method", methods, index=default, key=f"{K}-method")
    k = int(c3.number_input("How many", 4, 200, 12, step=4, key=f"{K}-k"))
    fast = method in fast_methods([method])
    exact = (
        st.toggle(
            "Exact scores (one pass per test image)",
            value=not fast,
            disabled=not fast,
            key=f"{K}-exact",
            help="Hessian-free methods (hydra, tracin) answer any test image at once from a projected "
            "index; exact scores run the method's pass for this one image.",
        )
        if fast
        else True
    )
    sample_header(run, table, names, sid, split=split)
    influencers_section(run, sid, method, k, exact)


main()
