"""Background jobs: long work (training, influence, retraining, embeddings) in its own process.

``start_job(kind, run_dir=..., params=...)`` writes a job file and starts
``python -m engine.job_worker run <job file>`` in a new session (``start_new_session=True``), so a
Streamlit rerun, a closed browser tab or a restarted server does not kill it. The child writes
its state atomically to the job file; pages poll it with ``job_status``.

Where job files live: ``<run_dir>/jobs/<job_id>.json`` (its log beside it as ``<job_id>.log``).
A ``train`` job creates its run directory, which must not exist (or be empty) beforehand, so
its job file lives in ``<workspace>/.jobs/<job_id>.json`` with workspace = ``run_dir``'s parent;
``job_status`` / ``list_jobs`` look in both places.

Job file: {id, kind, run_dir, params, state: queued | running | done | failed | cancelled |
interrupted, done, total, message, error, pid, created, started, finished, result, next_jobs}.
A job whose process is gone while its state says queued / running is reported ``interrupted``.

Kinds (params):
- ``train``: {"data": DataSpec dict, "train": TrainConfig dict, "overwrite": bool,
  "then": [{"kind", "params"}...]}  -> engine.train.train; ``then`` jobs start when it succeeds.
- ``influence``: {"method", "query": "val", "options": {}, "overwrite": true}
  -> engine.influence.api.compute_influence (result: the score frame's shape)
- ``retrain``: kwargs of engine.retrain.retrain (drop / relabel default to the run's selections)
- ``embedding``: kwargs of engine.embedding.compute_embedding
- ``call``: {"function": "pkg.module:name", "args": [], "kwargs": {}, "pass_run_dir": true}
Every callee gets ``progress=`` if its signature accepts it.
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

from engine.runs import RunDir, process_alive, read_json

__all__ = [
    "ACTIVE_STATES",
    "JOB_KINDS",
    "JobCancelled",
    "active_job",
    "cancel_job",
    "job_status",
    "list_jobs",
    "restart_job",
    "run_inline",
    "start_job",
    "wait_job",
]

JOB_KINDS = ("train", "influence", "retrain", "embedding", "call")
ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("done", "failed", "cancelled", "interrupted")
_QUEUED_GRACE_S = 60.0  # a queued job whose process never started is interrupted after this
_children: list[subprocess.Popen[bytes]] = []  # kept so finished children get reaped


class JobCancelled(BaseException):
    """Raised inside the job process when it receives SIGTERM (cancel_job)."""


# -- locations ------------------------------------------------------------------------------
def _job_dir(run_dir: Path, kind: str) -> Path:
    return run_dir.parent / ".jobs" if kind == "train" else run_dir / "jobs"


def _job_files(run_dir: Path) -> list[Path]:
    files = sorted((run_dir / "jobs").glob("*.json")) if (run_dir / "jobs").is_dir() else []
    ws_jobs = run_dir.parent / ".jobs"
    if ws_jobs.is_dir():
        for f in sorted(ws_jobs.glob("*.json")):
            j = _read(f)
            if j and Path(j.get("run_dir", "")).resolve() == run_dir.resolve():
                files.append(f)
    return files


def _find(run_dir: Path, job_id: str) -> Path:
    for d in (run_dir / "jobs", run_dir.parent / ".jobs"):
        if (d / f"{job_id}.json").is_file():
            return d / f"{job_id}.json"
    raise FileNotFoundError(f"no job {job_id!r} for run {run_dir}")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return dict(read_json(path))
    except (OSError, ValueError):
        return None


def _update(path: Path, **fields: Any) -> dict[str, Any]:
    def upd(cur: dict[str, Any]) -> dict[str, Any]:
        return {**cur, **fields}

    return dict(RunDir(path.parent).update_json(path.name, upd, default={}))


# -- the parent side ------------------------------------------------------------------------
def start_job(kind: str, *, run_dir: str | os.PathLike[str], params: dict[str, Any]) -> str:
    """Start a background job of `kind` on `run_dir`; returns its id at once."""
    if kind not in JOB_KINDS:
        from engine.config import ConfigError

        raise ConfigError(f"unknown job kind {kind!r}; choose one of {', '.join(JOB_KINDS)}")
    json.dumps(params)  # fail here, not in the child, on parameters that cannot be saved
    _reap()
    run = Path(run_dir).resolve()
    job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{secrets.token_hex(3)}"
    path = _job_dir(run, kind) / f"{job_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    _update(
        path, id=job_id, kind=kind, run_dir=str(run), params=params, state="queued", done=0, total=0,
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
    j = _read(path) or {}
    if j.get("pid") is None:
        _update(path, pid=proc.pid)
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


def _derive(job: dict[str, Any]) -> dict[str, Any]:
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


def job_status(run_dir: str | os.PathLike[str], job_id: str) -> dict[str, Any]:
    """The job's current record (see the module docstring); raises FileNotFoundError if unknown."""
    path = _find(Path(run_dir).resolve(), job_id)
    j = _read(path)
    if j is None:  # written atomically, so only a vanished file gets here
        raise FileNotFoundError(f"job file {path} is unreadable")
    return _derive(j)


def list_jobs(run_dir: str | os.PathLike[str], *, kind: str | None = None) -> list[dict[str, Any]]:
    """Every job of the run, oldest first (optionally only one kind)."""
    out = []
    for f in _job_files(Path(run_dir).resolve()):
        j = _read(f)
        if j and (kind is None or j.get("kind") == kind):
            out.append(_derive(j))
    return sorted(out, key=lambda j: float(j.get("created") or 0))


def active_job(
    run_dir: str | os.PathLike[str], *, kind: str | None = None
) -> dict[str, Any] | None:
    """The newest queued or running job of the run, or None."""
    act = [j for j in list_jobs(run_dir, kind=kind) if j.get("state") in ACTIVE_STATES]
    return act[-1] if act else None


def cancel_job(run_dir: str | os.PathLike[str], job_id: str) -> dict[str, Any]:
    """SIGTERM the job's process group; the job records 'cancelled'. Returns the record."""
    path = _find(Path(run_dir).resolve(), job_id)
    j = _derive(_read(path) or {})
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
    j = _read(path) or {}
    if j.get("state") in ACTIVE_STATES:
        j = _update(path, state="cancelled", message="cancelled", finished=time.time())
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
        call = {"function": "engine.train:resume", "then": params.get("then", [])}
        new_id = start_job("call", run_dir=run, params=_resumable("call", call))
    elif kind == "train":
        new_id = start_job("train", run_dir=run, params={**params, "overwrite": True})
    else:
        new_id = start_job(kind, run_dir=run, params=_resumable(kind, params))
    _update(_find(Path(run_dir), job_id), restarted_as=new_id)
    return new_id


def wait_job(
    run_dir: str | os.PathLike[str], job_id: str, *, timeout: float = 120.0
) -> dict[str, Any]:
    """Block until the job is no longer queued / running (for tests and scripts)."""
    deadline = time.time() + timeout
    while True:
        j = job_status(run_dir, job_id)
        if j["state"] not in ACTIVE_STATES:
            return j
        if time.time() > deadline:
            raise TimeoutError(f"job {job_id} still {j['state']} after {timeout}s")
        time.sleep(0.1)


def run_inline(kind: str, run_dir: str | os.PathLike[str], params: dict[str, Any]) -> Any:
    """Do a job's work in this process, without a job file (tests, scripts)."""
    from engine.job_worker import run_inline as inline

    return inline(kind, run_dir, params)
