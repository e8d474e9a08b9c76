"""Influence: compute estimators as background jobs; show each method's score distribution and time."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import state
from app.components.analysis import agreement_section
from app.components.common import SIGN_LINE, require_run
from app.components.histogram import histogram_figure
from app.components.progress import active_jobs
from app.components.recommendation import hurting, latest, render_table, trust_note
from engine import jobs
from engine.influence.methods import get_method, method_names


def _chain(run: Path, methods: list[str]) -> None:
    """One job per method, each started when the previous one ends (2 cores: no point in parallel)."""
    spec: dict[str, object] | None = None
    for m in reversed(methods):
        params: dict[str, object] = {"method": m, "query": "val"}
        if spec is not None:
            params["then"] = [spec]
        spec = {"kind": "influence", "params": params}
    if spec is not None:
        jobs.start_job("influence", run_dir=run, params=spec["params"])  # type: ignore[arg-type]


def compute_section(run: Path) -> None:
    names = method_names()
    have = set(state.score_methods(run))
    default = [m for m in ("hydra",) if m in names and m not in have][:1]
    chosen = st.multiselect(
        "Methods",
        names,
        default=default,
        key="influence-methods",
        format_func=lambda m: f"{m} ✓" if m in have else m,
        help="\n\n".join(f"**{m}**: {get_method(m).description}" for m in names),
    )
    busy = jobs.active_job(run) is not None
    if st.button("Compute", type="primary", key="influence-compute", disabled=not chosen or busy):
        _chain(run, list(chosen))
        st.rerun()
    if busy:
        st.caption("A job is running on this run; new computations start when it ends.")


def results_section(run: Path) -> None:
    methods = state.score_methods(run)
    if not methods:
        st.info("No scores yet: choose one or more methods above and press **Compute**.")
        return
    st.markdown(SIGN_LINE)
    trust_note(run, methods)
    rec = latest(run)
    bad = hurting(rec)
    rows = []
    for m in methods:
        s = state.scores(run, m)
        info = state.score_info(run, m)
        secs = info.get("seconds")
        rows.append(
            {
                "method": m,
                "seconds": round(float(secs), 2) if isinstance(secs, int | float) else None,
                "harmful (score < 0)": int((s < 0).sum()),
                "most harmful": float(s.min()),
                "most helpful": float(s.max()),
                "measured removal": "★ recommended"
                if rec and m == rec.get("method")
                else "⚠ hurt"
                if m in bad
                else "",
            }
        )
    st.dataframe(rows, hide_index=True, width="stretch")
    pick = st.multiselect(
        "Score distribution of", methods, default=methods[:1], key="influence-hist"
    )
    fig = histogram_figure({m: state.scores(run, m).to_numpy() for m in pick})
    st.plotly_chart(fig, key="influence-histogram")


def recommend_section(run: Path) -> None:
    """Measure which method's top k helps when removed (engine.recommend), as a background job."""
    from engine.recommend import default_k

    st.subheader("Recommend: which method's suggestions help this model?")
    n = len(state.bundle(run).train)
    c1, c2 = st.columns(2)
    text = c1.text_input(
        "Images to remove (k; empty = let the measurement choose)", "", key="influence-rec-k",
        help=f"Empty: 5, 10, 15 and 20% of the training set are measured (default k {default_k(n)} "
        "on big runs). Or give one number, or several separated by commas.",
    )  # fmt: skip
    objective = c2.radio("Objective", ["acc", "loss"], horizontal=True, key="influence-rec-obj",
                         format_func={"acc": "validation accuracy", "loss": "validation loss"}.get)  # fmt: skip
    from engine.trusted import trusted_counts

    label_only = False
    if not trusted_counts(run)["val"]["checked"]:
        label_only = st.checkbox(
            "My validation labels may share the training set's mistakes: measure only methods "
            "that do not read them", key="influence-rec-label-only",
            help="loss, margin, confident learning ... Or check some validation labels on "
            "**Check labels**: the measurement then rests on them.",
        )  # fmt: skip
    busy = jobs.active_job(run) is not None
    if st.button("Measure and recommend", key="influence-rec-start", disabled=busy):
        try:
            k = [int(x) for x in text.replace(" ", "").split(",") if x] or None
        except ValueError:
            st.error(f"k must be a number or comma-separated numbers, got {text!r}")
            return
        kwargs = {"k": k, "objective": objective, "label_only": label_only}
        jobs.start_job("recommend", run_dir=run, params=kwargs)
        st.rerun()
    rec = latest(run)
    if rec is None:
        st.caption(
            "Nothing measured yet for the current scores. Each scored method's top k is removed "
            "and the model retrained (seconds on small runs); the method whose removal helps most "
            "becomes the default on every page."
        )
        return
    st.markdown(rec["why"])
    render_table(rec, key="influence-rec-table")


st.title("Influence")
run = require_run()
if run is None:
    st.stop()
active_jobs(run)
compute_section(run)
results_section(run)
recommend_section(run)
agreement_section(run)
