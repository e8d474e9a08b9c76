"""The child side of engine.jobs: what runs inside a job's own process.

``python -m engine.job_worker run <job file>`` (started by engine.jobs.start_job) reads the job
file, does the work of its kind, writes progress and the outcome back to the file atomically,
and starts the job's ``then`` jobs when it succeeds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.analysis.agreement import agreement
from engine.analysis.clustering import cluster_label_errors
from engine.config import TrainConfig
from engine.data import DataSpec
from engine.embedding import compute_embedding
from engine.executor import ExecutorSettings, use_executor
from engine.influence.api import build_projected_store, compute_influence
from engine.jobfile import JOB_KINDS, JobCancelled, read_job, update_job
from engine.jobs import start_job
from engine.jsonvalues import jsonable
from engine.recommend import recommend, score_and_recommend
from engine.retrain import retrain
from engine.selections import load_selections
from engine.train import resume, train
from engine.warmup import warm_run


class _Reporter:
    """The progress callback handed to the engine: (done, total, value=None), throttled."""

    def __init__(self, path: Path, *, min_interval: float = 0.2) -> None:
        self.path, self.min_interval, self._last = path, min_interval, 0.0
        self.stage = ""

    def __call__(self, done: int, total: int, value: float | None = None, *_: Any) -> None:
        now = time.monotonic()
        if self.path == Path(os.devnull):
            return
        if done < total and now - self._last < self.min_interval:
            return
        self._last = now
        msg = f"{self.stage} {done}/{total}".strip()
        if value is not None:
            with contextlib.suppress(TypeError, ValueError):
                msg += f", loss {float(value):.4f}"
        update_job(self.path, done=int(done), total=int(total), message=msg)


def _train(run_dir: Path, rep: _Reporter, **params: Any) -> Any:
    rep.stage = "training step"
    res = train(
        run_dir, DataSpec.from_dict(params.get("data", {})), TrainConfig.from_dict(params.get("train", {})),
        overwrite=bool(params.get("overwrite", False)), progress=rep,
    )  # fmt: skip
    rep.stage = "predictions and PCA map"
    warm_run(run_dir)
    return {"final": res.final, "seconds": res.seconds}


def _resume(run_dir: Path, rep: _Reporter, **params: Any) -> Any:
    rep.stage = "training step"
    res = resume(run_dir, progress=rep, **params)
    rep.stage = "predictions and PCA map"
    warm_run(run_dir)
    return {"final": res.final, "seconds": res.seconds}


def _influence(run_dir: Path, rep: _Reporter, **params: Any) -> Any:
    rep.stage = str(params["method"])
    opts = dict(params.get("options", {}))
    return compute_influence(
        run_dir, params["method"], query=params.get("query", "val"), progress=rep,
        overwrite=bool(params.get("overwrite", True)),
        skip_existing=bool(params.get("skip_existing", False)), **opts,
    ).shape  # fmt: skip


def _retrain(run_dir: Path, rep: _Reporter, **params: Any) -> Any:
    sel = load_selections(run_dir)
    if params.get("drop") is None:
        params["drop"] = sorted(sel.drop)
    if params.get("relabel") is None:
        params["relabel"] = dict(sel.relabel)
    rep.stage = "retraining"
    return retrain(run_dir, progress=rep, **params)


KindFn = Callable[..., Any]


def _plain(stage: str, fn: Callable[..., Any]) -> KindFn:
    """A kind whose work is fn(run_dir, progress=reporter, **params)."""

    def work(run_dir: Path, rep: _Reporter, **params: Any) -> Any:
        rep.stage = stage
        return fn(run_dir, progress=rep, **params)

    return work


KINDS: dict[str, KindFn] = {
    "train": _train,
    "resume": _resume,
    "influence": _influence,
    "retrain": _retrain,
    "embedding": _plain("embedding", compute_embedding),
    "recommend": _plain("recommend", recommend),
    "score-and-recommend": _plain("score and recommend", score_and_recommend),
    "projected-store": _plain("projected store", build_projected_store),
    "clusters": _plain("clusters", cluster_label_errors),
    "agreement": _plain("agreement", agreement),
}
"""The work of each job kind (engine.jobfile.JOB_KINDS): fn(run_dir, reporter, **params)."""
assert tuple(KINDS) == JOB_KINDS, "engine.jobfile.JOB_KINDS and KINDS must list the same kinds"


def _run_kind(kind: str, run_dir: Path, params: dict[str, Any], rep: _Reporter) -> Any:
    kw = {k: v for k, v in params.items() if k != "then"}
    return KINDS[kind](run_dir, rep, **kw)


def run_inline(kind: str, run_dir: str | os.PathLike[str], params: dict[str, Any]) -> Any:
    """Do a job's work in this process, without a job file (tests, scripts)."""
    return _run_kind(kind, Path(run_dir), params, _Reporter(Path(os.devnull)))


def _raise_cancelled(signum: int, frame: Any) -> None:
    raise JobCancelled("cancelled by the user")


def run_job_file(path: str | os.PathLike[str]) -> int:
    """Execute the job described by `path` in this process (the child's entry point)."""
    path = Path(path)
    signal.signal(signal.SIGTERM, _raise_cancelled)
    job = read_job(path) or {}
    update_job(path, state="running", pid=os.getpid(), started=time.time(), message="starting")
    rep = _Reporter(path)
    try:
        where = ExecutorSettings.from_dict(job.get("executor") or {})
        with use_executor(where):
            result = _run_kind(
                job["kind"], Path(job["run_dir"]), dict(job.get("params") or {}), rep
            )
    except JobCancelled:
        update_job(path, state="cancelled", message="cancelled", finished=time.time())
        return 1
    except BaseException as e:  # noqa: BLE001 - every failure is recorded for the page
        from engine.errors import is_user_error, storage_error_message, user_message
        from engine.options import label_of

        user = is_user_error(e)  # jobs are the app's: a parameter is named by its form label
        msg = (
            user_message(e, spell=label_of)
            if user and str(e)
            else storage_error_message(e) or f"{type(e).__name__}: {e}"
        )
        update_job(
            path, state="failed", message=msg, error=msg, user_error=user,
            traceback=None if user else traceback.format_exc(), finished=time.time(),
        )  # fmt: skip
        return 2
    next_ids = [
        start_job(n["kind"], run_dir=job["run_dir"], params=n.get("params", {}), executor=where)
        for n in (job.get("params") or {}).get("then", [])
    ]
    total = max(int((read_job(path) or {}).get("total") or 0), 1)
    update_job(
        path, state="done", message="done", finished=time.time(), result=jsonable(result),
        next_jobs=next_ids, done=total, total=total,
    )  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "run":
        print("usage: python -m engine.job_worker run <job file>", file=sys.stderr)
        return 2
    return run_job_file(argv[1])


if __name__ == "__main__":
    sys.exit(main())
