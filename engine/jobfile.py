"""The job file: one JSON record per background job, shared by engine.jobs and engine.job_worker.

Where job files live: ``<run_dir>/jobs/<job_id>.json`` (its log beside it as ``<job_id>.log``).
A ``train`` job creates its run directory, which must not exist (or be empty) beforehand, so
its job file lives in ``<workspace>/.jobs/<job_id>.json`` with workspace = ``run_dir``'s parent.
Every write is a read-modify-write under the folder's JSON lock, atomic on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypedDict

from engine.runs import RunDir, read_json

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "JOB_KINDS",
    "JobCancelled",
    "JobRecord",
    "find_job",
    "job_dir",
    "job_files",
    "read_job",
    "update_job",
]

JOB_KINDS = (
    "train",  # {"data": DataSpec dict, "train": TrainConfig dict, "overwrite": bool}
    "resume",  # {} -> engine.train.resume (a train job restarted from its last checkpoint)
    "influence",  # {"method", "query", "options", "overwrite", "skip_existing"}
    "retrain",  # keyword arguments of engine.retrain.retrain (drop / relabel: the run's selections)
    "embedding",  # keyword arguments of engine.embedding.compute_embedding
    "recommend",  # keyword arguments of engine.recommend.recommend
    "score-and-recommend",  # {} -> engine.recommend.score_and_recommend (the demo chain)
    "projected-store",  # keyword arguments of engine.influence.api.build_projected_store
    "clusters",  # keyword arguments of engine.analysis.clustering.cluster_label_errors
    "agreement",  # keyword arguments of engine.analysis.agreement.agreement
)
"""The kinds of background job; every kind may also carry ``then``: [{"kind", "params"}...],
jobs started when it succeeds."""

JobState = Literal["queued", "running", "done", "failed", "cancelled", "interrupted"]
ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("done", "failed", "cancelled", "interrupted")


class JobRecord(TypedDict, total=False):
    """A job file's content (engine.jobs.job_status returns it)."""

    id: str
    kind: str
    run_dir: str
    params: dict[str, Any]
    executor: dict[str, Any]  # engine.executor.ExecutorSettings.to_dict: where its retrains run
    state: JobState
    done: int
    total: int
    message: str
    error: str | None
    user_error: bool
    traceback: str | None
    pid: int | None
    created: float
    started: float | None
    finished: float | None
    result: Any
    next_jobs: list[str]
    restarted_as: str


class JobCancelled(BaseException):
    """Raised inside the job process when it receives SIGTERM (engine.jobs.cancel_job)."""


def job_dir(run_dir: Path, kind: str) -> Path:
    """Where a new job of `kind` on `run_dir` keeps its file."""
    return run_dir.parent / ".jobs" if kind == "train" else run_dir / "jobs"


def read_job(path: Path) -> JobRecord | None:
    """The record in `path`, or None when it cannot be read."""
    try:
        return JobRecord(**read_json(path))  # type: ignore[typeddict-item]
    except (OSError, ValueError, TypeError):
        return None


def update_job(path: Path, **fields: Any) -> JobRecord:
    """Set `fields` in the job file (created when absent); returns the new record."""

    def upd(cur: dict[str, Any]) -> dict[str, Any]:
        return {**cur, **fields}

    return JobRecord(**RunDir(path.parent).update_json(path.name, upd, default={}))  # type: ignore[typeddict-item]


def job_files(run_dir: Path) -> list[Path]:
    """Every job file of `run_dir`: its own folder, then the workspace's train jobs for it."""
    files = sorted((run_dir / "jobs").glob("*.json")) if (run_dir / "jobs").is_dir() else []
    ws_jobs = run_dir.parent / ".jobs"
    if ws_jobs.is_dir():
        for f in sorted(ws_jobs.glob("*.json")):
            j = read_job(f)
            if j and Path(j.get("run_dir", "")).resolve() == run_dir.resolve():
                files.append(f)
    return files


def find_job(run_dir: Path, job_id: str) -> Path:
    """The file of job `job_id`; FileNotFoundError when there is none."""
    for d in (run_dir / "jobs", run_dir.parent / ".jobs"):
        if (d / f"{job_id}.json").is_file():
            return d / f"{job_id}.json"
    raise FileNotFoundError(f"no job {job_id!r} for run {run_dir}")
