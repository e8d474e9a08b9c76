"""Background jobs: long work (training, influence, retraining, embeddings) in its own process.

``start_job(kind, run_dir=..., params=...)`` writes a job file and starts
``python -m engine.job_worker run <job file>`` in a new session (``start_new_session=True``), so a
Streamlit rerun, a closed browser tab or a restarted server does not kill it. The child writes
its state atomically to the job file; pages poll it with ``job_status``.

The job file's record: engine.jobfile.JobRecord; its kinds and their params: engine.jobfile.JOB_KINDS
(every kind's work is in engine.job_worker.KINDS). A job whose process is gone while its state
says queued / running is reported ``interrupted``. Every callee gets ``progress=`` if its
signature accepts it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from engine.executor import ExecutorSettings
from engine.jobfile import (
    ACTIVE_STATES,
    JOB_KINDS,
    JobCancelled,
    JobRecord,
    find_job,
    job_dir,
    job_files,
    read_job,
    update_job,
)
from engine.runs import process_alive
from engine.workspace import executor_settings

__all__ = [
    "ACTIVE_STATES",
    "JOB_KINDS",
    "JobCancelled",
    "active_job",
    "cancel_job",
    "job_status",
    "list_jobs",
    "restart_job",
    "start_job",
    "wait_job",
]

_QUEUED_GRACE_S = 60.0  # a queued job whose process never started is interrupted after this
_children: list[subprocess.Popen[bytes]] = []  # kept so finished children get reaped


# -- the parent side ------------------------------------------------------------------------
def start_job(
    kind: str,
    *,
    run_dir: str | os.PathLike[str],
    params: dict[str, Any],
    executor: ExecutorSettings | None = None,
) -> str:
    """Start a background job of `kind` on `run_dir`; returns its id at once.

    executor: where the job runs its retrains (default: the workspace's setting,
    engine.workspace.executor_settings), recorded in the job file."""
    if kind not in JOB_KINDS:
        from engine.config import ConfigError

        raise ConfigError(f"unknown job kind {kind!r}; choose one of {', '.join(JOB_KINDS)}")
    json.dumps(params)  # fail here, not in the child, on parameters that cannot be saved
    where = (executor or executor_settings()).validate()
    _reap()
    run = Path(run_dir).resolve()
    job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{secrets.token_hex(3)}"
    path = job_dir(run, kind) / f"{job_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    update_job(
        path, id=job_id, kind=kind, run_dir=str(run), params=params, executor=where.to_dict(),
        state="queued", done=0, total=0,
        message="queued", error=None, pid=None, created=now, started=None, finished=None, result=None,
    )  # fmt: skip
    log = open(path.with_suffix(".log"), "ab")  # noqa: SIM115 - handed to the child
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.job_worker", "run", str(path)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=env, cwd=os.getcwd(),
        )  # fmt: skip
    finally:
        log.close()
    _children.append(proc)
    j = read_job(path) or {}
    if j.get("pid") is None:
        update_job(path, pid=proc.pid)
    return job_id


def _reap() -> None:
    for p in list(_children):
        if p.poll() is not None:
            _children.remove(p)


def _alive(pid: int | None) -> bool:
    """True while `pid` is a live (not zombie) job worker process."""
    if not process_alive(pid, None):
        return False
    try:  # guards against the pid having been reused by another program
        return b"engine.job_worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): trust kill(0)


def _derive(job: JobRecord) -> JobRecord:
    """The job with a dead process's queued / running state reported as 'interrupted'."""
    _reap()
    state = job.get("state")
    too_old = time.time() - float(job.get("created") or 0) > _QUEUED_GRACE_S
    gone = state in ACTIVE_STATES and not _alive(job.get("pid"))
    if gone and (state == "running" or job.get("pid") or too_old):
        job = {
            **job,
            "state": "interrupted",
            "message": "the job's process is gone (server restart or crash)",
        }
    return job


def job_status(run_dir: str | os.PathLike[str], job_id: str) -> JobRecord:
    """The job's current record (see the module docstring); raises FileNotFoundError if unknown."""
    path = find_job(Path(run_dir).resolve(), job_id)
    j = read_job(path)
    if j is None:  # written atomically, so only a vanished file gets here
        raise FileNotFoundError(f"job file {path} is unreadable")
    return _derive(j)


def list_jobs(run_dir: str | os.PathLike[str], *, kind: str | None = None) -> list[JobRecord]:
    """Every job of the run, oldest first (optionally only one kind)."""
    out = []
    for f in job_files(Path(run_dir).resolve()):
        j = read_job(f)
        if j and (kind is None or j.get("kind") == kind):
            out.append(_derive(j))
    return sorted(out, key=lambda j: float(j.get("created") or 0))


def active_job(run_dir: str | os.PathLike[str], *, kind: str | None = None) -> JobRecord | None:
    """The newest queued or running job of the run, or None."""
    act = [j for j in list_jobs(run_dir, kind=kind) if j.get("state") in ACTIVE_STATES]
    return act[-1] if act else None


def cancel_job(run_dir: str | os.PathLike[str], job_id: str) -> JobRecord:
    """SIGTERM the job's process group; the job records 'cancelled'. Returns the record."""
    path = find_job(Path(run_dir).resolve(), job_id)
    j = _derive(read_job(path) or {})
    if j.get("state") not in ACTIVE_STATES:
        return j
    pid = j.get("pid")
    if pid and _alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.time() + 5.0
        while time.time() < deadline and _alive(pid):
            time.sleep(0.05)
            _reap()
    j = read_job(path) or {}
    if j.get("state") in ACTIVE_STATES:
        j = update_job(path, state="cancelled", message="cancelled", finished=time.time())
    return j


def _resumable(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The params with skip_existing set on an influence job and on every influence job chained
    after it (``then``), so a restarted chain keeps the scores it already finished."""
    out = dict(params)
    if kind == "influence":
        out["skip_existing"] = True
    if out.get("then"):
        out["then"] = [
            {**n, "params": _resumable(str(n.get("kind")), dict(n.get("params") or {}))}
            for n in out["then"]
        ]
    return out


def restart_job(run_dir: str | os.PathLike[str], job_id: str) -> str:
    """Start again a job that was interrupted, failed or cancelled; returns the new job's id.

    Finished parts are not redone: an influence job (and every job chained after it) keeps the
    scores already stored for the same method, query and options (``skip_existing``); a train
    job continues from its last checkpoint (engine.train.resume) when its run directory holds
    one, then starts its chained jobs.
    """
    j = job_status(run_dir, job_id)
    if j.get("state") in ACTIVE_STATES:
        from engine.runs import RunError

        raise RunError(f"job {job_id} is still {j.get('state')}; cancel it first")
    kind, params = str(j["kind"]), dict(j.get("params") or {})
    run = Path(j.get("run_dir") or run_dir)
    if kind == "train" and (run / "trajectory" / "meta.json").is_file():
        then = {"then": params.get("then", [])}
        new_id = start_job("resume", run_dir=run, params=_resumable("resume", then))
    elif kind == "train":
        new_id = start_job("train", run_dir=run, params={**params, "overwrite": True})
    else:
        new_id = start_job(kind, run_dir=run, params=_resumable(kind, params))
    update_job(find_job(Path(run_dir), job_id), restarted_as=new_id)
    return new_id


def wait_job(run_dir: str | os.PathLike[str], job_id: str, *, timeout: float = 120.0) -> JobRecord:
    """Block until the job is no longer queued / running (for tests and scripts)."""
    deadline = time.time() + timeout
    while True:
        j = job_status(run_dir, job_id)
        if j["state"] not in ACTIVE_STATES:
            return j
        if time.time() > deadline:
            raise TimeoutError(f"job {job_id} still {j['state']} after {timeout}s")
        time.sleep(0.1)
