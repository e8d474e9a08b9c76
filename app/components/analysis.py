"""Sections for the analyses of engine.analysis: label-error clustering (Harmful images page) and
the agreement of a fast estimator with exact SGD-Influence (Influence page).

Both computations run as background jobs (engine.jobs ``call`` kind) that save an experiment in
the run (``experiments/cluster-*`` / ``experiments/agreement-*``); the sections show the newest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from engine import jobs
from engine.experiments.report import list_experiments
from engine.selections import load_selections, set_drop

CLUSTER_METHODS = ("hydra", "tracin")
FAST_METHODS = ("hydra", "sgd-influence-last", "tracin")


def latest(run: str | Path, kind: str, **match: Any) -> dict[str, Any] | None:
    """The newest saved experiment of `kind` whose keys equal `match` (None if there is none)."""
    for r in list_experiments(run, kind=kind):
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def _start(run: Path, kind: str, params: dict[str, Any]) -> None:
    jobs.start_job(kind, run_dir=run, params=params)


def _fmt(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and x != x) else f"{x:.2f}"


def cluster_table(res: dict[str, Any]) -> pd.DataFrame:
    """One row per given class: size, flagged, known errors, Jaccard indices."""
    return pd.DataFrame(
        [
            {
                "class": str(r["name"]),
                "images": r["n"],
                "flagged": r["n_flagged"],
                "known errors": r["n_flipped"],
                "Jaccard (flagged, errors)": r["jaccard_flipped"],
                "Jaccard (rest, clean)": r["jaccard_clean"],
            }
            for r in res["classes"]
        ]
    )


def cluster_section(run: Path) -> None:
    """HYDRA Table 4: flag a cluster per class; tick the flagged images in one click."""
    st.subheader("Suspicious clusters")
    st.caption(
        "For each training image, the signs of its contributions to up to 1000 validation images; "
        "within each given label, two clusters (k-means); the cluster that raises the validation "
        "loss more is flagged as likely label errors (HYDRA, Table 4)."
    )
    busy = jobs.active_job(run) is not None
    c1, c2, c3 = st.columns([2, 2, 2])
    method = c1.selectbox("Estimator", CLUSTER_METHODS, key="harmful-cluster-method")
    m = int(c2.number_input("Validation images", 10, 5000, 1000, step=100, key="harmful-cluster-m"))
    if c3.button("Find clusters", key="harmful-cluster-run", disabled=busy):
        _start(run, "clusters", {"method": method, "m": m})
        st.rerun()
    res = latest(run, "cluster", method=method)
    if res is None:
        st.info("No clustering yet for this estimator: press **Find clusters**.")
        return
    flagged = list(res["flagged_ids"])
    line = f"{len(flagged)} of {res['n_train']} images flagged ({res['m']} validation images)."
    if res.get("known_errors"):
        line += (
            f" Against the known label errors: Jaccard {_fmt(res['jaccard_flipped'])}, "
            f"precision {_fmt(res['precision'])}, recall {_fmt(res['recall'])}."
        )
    st.markdown(line)
    st.dataframe(cluster_table(res), hide_index=True, width="stretch")
    ticked = load_selections(run).drop
    todo = [i for i in flagged if i not in ticked]
    label = (
        f"Tick the {len(todo)} flagged images to drop" if todo else "All flagged images are ticked"
    )
    if st.button(label, key="harmful-cluster-tick", disabled=not todo):
        set_drop(run, todo)
        st.rerun()


def agreement_section(run: Path) -> None:
    """A fast method against exact sgd-influence: sign errors, Spearman, d theta/d w error plot."""
    from engine.analysis.agreement import agreement_figure

    st.subheader("Fast vs exact")
    st.caption(
        "How far a fast estimator is from exact SGD-Influence on this run: the share of images "
        "whose sign flips, the rank correlation, and the parameter-space error of "
        "dθ_t/dw_k along training for a few images (HYDRA Figs. 3–5)."
    )
    busy = jobs.active_job(run) is not None
    c1, c2, c3 = st.columns([2, 2, 2])
    fast = c1.selectbox("Fast method", FAST_METHODS, key="influence-agree-fast")
    n = int(c2.number_input("Images followed", 0, 200, 20, key="influence-agree-n"))
    if c3.button("Compare", key="influence-agree-run", disabled=busy):
        _start(run, "agreement", {"fast": fast, "exact": "sgd-influence", "n_samples": n})
        st.rerun()
    res = latest(run, "agreement", fast=fast, exact="sgd-influence")
    if res is None:
        st.info("No comparison yet for this method: press **Compare** (runs exact sgd-influence).")
        return
    m = st.columns(3)
    m[0].metric("Sign errors", f"{res['sign_error_rate']:.1%}")
    m[1].metric("Spearman", f"{res['spearman']:.3f}")
    m[2].metric("Top-10% overlap", f"{res['top10_overlap']:.0%}")
    if res.get("steps"):
        st.plotly_chart(agreement_figure(res), key="influence-agree-figure")
