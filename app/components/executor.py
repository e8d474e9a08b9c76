"""The Runs page's "where retrains run" setting: local processes or a Ray cluster, saved in the
workspace (engine.workspace.executor_settings) and used by every background job started after."""

from __future__ import annotations

import streamlit as st

from app import state
from app.components.common import show_user_error
from engine.config import ConfigError
from engine.executor import EXECUTORS, ExecutorSettings, check_available
from engine.workspace import executor_settings, save_executor_settings

__all__ = ["executor_form"]


def executor_form() -> None:
    ws = state.workspace()
    try:
        cur = executor_settings(ws)
    except ConfigError as e:  # a damaged .executor.json: say so, and let the form replace it
        show_user_error(e)
        cur = ExecutorSettings()
    with st.expander(f"Where retrains run: {cur.describe()}"):
        st.caption(
            "Proofs, recommendations, trust checks and benchmarks retrain many times; each retrain "
            "is independent, so they can run side by side. Results are the same on every executor. "
            "Ray needs `pip install 'retracer[ray]'` and a run folder that every Ray node can read."
        )
        with st.form("executor-form"):
            kind = st.radio(
                "Executor", EXECUTORS, index=EXECUTORS.index(cur.kind), horizontal=True,
                help="local: processes on this machine; ray: tasks on a Ray cluster",
            )  # fmt: skip
            workers = st.number_input(
                "Local worker processes (0: one per core; 1: one after another)",
                min_value=0, max_value=256, value=int(cur.workers or 0), step=1,
            )  # fmt: skip
            address = st.text_input(
                "Ray address", value=cur.address or "",
                placeholder="e.g. 10.0.0.1:6379 (empty: $RETRACER_RAY_ADDRESS, else a local Ray)",
            )  # fmt: skip
            if st.form_submit_button("Save"):
                _save(ExecutorSettings(str(kind), int(workers) or None, address.strip() or None))


def _save(new: ExecutorSettings) -> None:
    try:
        check_available(new)
        save_executor_settings(new, state.workspace())
    except Exception as e:
        if not show_user_error(e):
            raise
    else:
        st.success(f"Saved: background jobs now retrain {new.describe()}.")
