"""Small helpers every page uses: the "nothing to show" messages and user-error display."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import state

SIGN_LINE = (
    "Score = estimated change of the validation loss if the image is removed from training: "
    "**negative = removing it would lower the validation loss = harmful**, positive = helpful."
)


def require_run(*, trained: bool = True) -> Path | None:
    """The current run, or None after telling the user what to do (the page should stop)."""
    run = state.current_run()
    if run is None:
        st.info("No run yet: train one on the **Runs & training** page.")
        return None
    if trained and not state.run_ready(run):
        from engine.runs import RunDir

        s = RunDir(run).status if (run / "config.json").is_file() else {"state": "queued"}
        st.info(
            f"The current run `{run.name}` is not trained yet (state: {s.get('state')}). "
            "Follow its progress on the **Runs & training** page, or pick another run in the sidebar."
        )
        return None
    return run


def require_scores(run: Path) -> list[str] | None:
    """The methods with scores in `run`, or None after telling the user to compute one."""
    methods = state.score_methods(run)
    if not methods:
        st.info("No influence scores for this run yet: compute them on the **Influence** page.")
        return None
    return methods


def show_user_error(e: BaseException) -> bool:
    """Show a user error (bad data, config, run) as one red line; False if it is not one."""
    from engine.errors import is_user_error, user_message
    from engine.options import label_of

    if is_user_error(e):
        st.error(user_message(e, spell=label_of))
        return True
    return False


def class_name(names: list[str], i: object) -> str:
    try:
        return names[int(i)]  # type: ignore[call-overload]
    except (TypeError, ValueError, IndexError):
        return "?"
