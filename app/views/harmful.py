"""Harmful images: the training images whose removal would most lower the validation loss."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import state
from app.components.analysis import cluster_section
from app.components.common import SIGN_LINE, require_run, require_scores
from app.components.gallery import render_two_sided
from app.components.recommendation import latest, pick_method, trust_note, why_line
from engine.selections import load_selections, set_drop

# without a measured recommendation: the label-error ranking first (DESIGN.md section 5)
FALLBACK = ["combined", "margin", "sgd-influence", "hydra"]


def filtered(run: Path, method: str) -> tuple[list[str], dict[str, float]]:
    """Ids after the class / disagreement filters, most harmful first, and their scores."""
    t = state.ranked(run, method)
    names = state.bundle(run).class_names
    c1, c2 = st.columns([3, 2])
    classes = c1.multiselect(
        "Given label", list(range(len(names))), key="harmful-classes", format_func=lambda i: names[i],
        placeholder="all classes",
    )  # fmt: skip
    if classes:
        t = t[t["label"].isin(classes)]
    disagree = c2.checkbox("Only where given label ≠ predicted", key="harmful-disagree")
    if disagree:
        t = t[t["label"] != t["predicted"]]
    if not classes and not disagree:
        return state.ranked_ids(run, method)
    ids = t.index.to_numpy(dtype=object).tolist()
    return ids, state.ranked_ids(run, method)[1]


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
rec = latest(run)
method = pick_method(
    "Method", methods, rec, key="harmful-method", fallback=FALLBACK,
    help="★ = recommended: its top images measurably helped when removed (Influence → Recommend); "
    "⚠ = removing its top images hurt. Known label errors are marked ⚑ when the run has any.",
)  # fmt: skip
why_line(rec, method)
trust_note(run, method)
if rec is not None and rec.get("method") and rec.get("drop"):
    n_rec = len(rec["drop"])
    if st.button(f"Tick the recommended {n_rec}", key="harmful-tick-rec", type="primary",
                 help=f"Tick {rec['method']}'s top {n_rec} to drop; then prove it on Retrain & compare."):  # fmt: skip
        set_drop(run, rec["drop"], True)
        st.toast(f"Ticked {n_rec} images: next, **Retrain & compare**.")
st.caption(SIGN_LINE)
ids, scores = filtered(run, method)
k_default = int(rec["k"]) if rec is not None and rec.get("method") == method else 96
k = int(
    st.number_input("Top k", 1, max(len(ids), 1), min(k_default, max(len(ids), 1)), key="harmful-k")
)
known = state.known_errors(run)
if known:
    precision_line(ids, known, k)
sel = load_selections(run)
st.caption(
    f"{len(sel.drop)} image(s) ticked to drop, {len(sel.relabel)} relabelled: they are saved at once; "
    "retrain without them on **Retrain & compare**, download them on **Export**."
)
render_two_sided(
    run, {"Most harmful": ids[:k], "Most helpful": ids[::-1][:k]}, key="harmful", scores=scores,
    flipped=known or None, suffixes=("top", "help"),
)  # fmt: skip
cluster_section(run)
