"""Live progress of a background job: a fragment that polls the job file every second."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from engine import jobs

_LABELS = {
    "train": "Training",
    "influence": "Influence",
    "retrain": "Retraining",
    "embedding": "Embedding",
}


def job_label(job: dict[str, object]) -> str:
    kind = str(job.get("kind", "job"))
    label = _LABELS.get(kind, kind)
    params = job.get("params") or {}
    if kind == "influence" and isinstance(params, dict):
        label += f" ({params.get('method')})"
    return label


@st.fragment(run_every=1.0)
def job_progress(run_dir: str | Path, job_id: str) -> None:
    """Progress bar, message and a cancel button for one job; reruns the page when it ends.

    The job runs in its own process (engine.jobs), so closing the tab does not stop it; reopening
    the page shows it again (see `active_jobs`).
    """
    try:
        j = jobs.job_status(run_dir, job_id)
    except FileNotFoundError:
        st.warning(f"job {job_id} not found")
        return
    state, label = j.get("state"), job_label(j)
    done, total = int(j.get("done") or 0), int(j.get("total") or 0)
    if state in jobs.ACTIVE_STATES:
        frac = min(done / total, 1.0) if total else 0.0
        st.progress(frac, text=f"{label}: {j.get('message') or state}")
        if st.button("Cancel", key=f"cancel-{job_id}"):
            jobs.cancel_job(run_dir, job_id)
            st.rerun()
        return
    seen = st.session_state.setdefault("_jobs_seen_final", set())
    if state == "done":
        st.success(f"{label}: done")
    elif state == "failed":
        st.error(f"{label} failed: {j.get('error') or j.get('message')}")
    else:
        st.warning(f"{label}: {state}. {j.get('message') or ''}")
    if job_id not in seen:  # rerun the whole page once so it shows the new results
        seen.add(job_id)
        st.rerun()


def active_jobs(
    run_dir: str | Path | None, *, kinds: tuple[str, ...] | None = None
) -> list[dict[str, object]]:
    """Show the progress of every queued / running job of the run; returns them."""
    if (
        run_dir is None
        or not Path(run_dir).exists()
        and not (Path(run_dir).parent / ".jobs").exists()
    ):
        return []
    listed = [j for j in jobs.list_jobs(run_dir) if kinds is None or j.get("kind") in kinds]
    act = [j for j in listed if j.get("state") in jobs.ACTIVE_STATES]
    for j in act:
        job_progress(run_dir, str(j["id"]))
    for j in listed:
        if j.get("state") == "interrupted" and not j.get("restarted_as"):
            interrupted_job(run_dir, j)
    return act


def interrupted_job(run_dir: str | Path, job: dict[str, object]) -> None:
    """A job killed with its process (server restart, crash): offer to restart it, keeping what it
    finished (scores already stored, training checkpoints)."""
    job_id = str(job["id"])
    c = st.columns([4, 1])
    c[0].warning(f"{job_label(job)} was interrupted: {job.get('message') or ''}")
    if c[1].button("Restart", key=f"restart-{job_id}"):
        jobs.restart_job(run_dir, job_id)
        st.rerun()


def last_failure(run: Path | None, *, kind: str | None = None, what: str | None = None) -> None:
    """An error box when the run's newest finished job (of `kind`) failed; `what` names it
    ("retraining"; default: "<kind> job")."""
    if run is None:
        return
    done = [j for j in jobs.list_jobs(run, kind=kind) if j.get("state") not in jobs.ACTIVE_STATES]
    if done and done[-1].get("state") == "failed":
        name = what or f"{done[-1].get('kind')} job"
        st.error(f"The last {name} failed: {done[-1].get('error') or done[-1].get('message')}")
