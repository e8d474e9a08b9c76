"""Harmful images: the training images whose removal would most lower the validation loss."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import state
from app.components.analysis import cluster_section
from app.components.common import SIGN_LINE, require_run, require_scores
from app.components.gallery import render_gallery
from engine.selections import load_selections


def filtered(run: Path, method: str) -> tuple[list[str], dict[str, float]]:
    """Ids after the class / disagreement filters, most harmful first, and their scores."""
    t = state.train_table(run)
    s = state.scores(run, method)
    t = t.join(s.rename("score"), how="inner")
    names = state.bundle(run).class_names
    c1, c2 = st.columns([3, 2])
    classes = c1.multiselect(
        "Given label", list(range(len(names))), key="harmful-classes", format_func=lambda i: names[i],
        placeholder="all classes",
    )  # fmt: skip
    if classes:
        t = t[t["label"].isin(classes)]
    if c2.checkbox("Only where given label ≠ predicted", key="harmful-disagree"):
        t = t[t["label"] != t["predicted"]]
    t = t.sort_values("score", kind="stable")
    return list(t.index), {k: float(v) for k, v in t["score"].items()}


def precision_line(ids: list[str], known: set[str], k: int) -> None:
    top = ids[:k]
    hits = sum(i in known for i in top)
    rate = len(known) / max(len(state.train_table(run)), 1)
    c = st.columns(3)
    c[0].metric(f"Known label errors in the top {len(top)}", f"{hits}")
    c[1].metric("Precision of the top-k", f"{hits / max(len(top), 1):.0%}")
    c[2].metric("Picking at random would give", f"{rate:.0%}")


st.title("Harmful images")
run = require_run()
if run is None:
    st.stop()
methods = require_scores(run)
if methods is None:
    st.stop()
preferred = [m for m in ("sgd-influence", "hydra") if m in methods]
method = st.selectbox(
    "Method", methods, index=methods.index(preferred[0]) if preferred else 0, key="harmful-method",
    help="Known label errors are marked ⚑ when the run has any; compare methods by the precision shown.",
)  # fmt: skip
st.caption(SIGN_LINE)
ids, scores = filtered(run, method)
k = int(st.number_input("Top k", 1, max(len(ids), 1), min(96, max(len(ids), 1)), key="harmful-k"))
known = state.known_errors(run)
if known:
    precision_line(ids, known, k)
sel = load_selections(run)
st.caption(
    f"{len(sel.drop)} image(s) ticked to drop, {len(sel.relabel)} relabelled: they are saved at once; "
    "retrain without them on **Retrain & compare**, download them on **Export**."
)
harm, helpful = st.tabs(["Most harmful", "Most helpful"])
with harm:
    render_gallery(run, ids[:k], scores=scores, key="harmful-top", flipped=known or None)
with helpful:
    render_gallery(run, ids[::-1][:k], scores=scores, key="harmful-help", flipped=known or None)
cluster_section(run)
