"""The workspace: the folder that holds every run, and which run is the current one.

The workspace is ``$RETRACER_WORKSPACE`` if set, else ``./runs``. Each run is a sub-folder (see
engine.runs). ``<workspace>/.executor.json`` holds where background jobs run their retrains
(engine.executor; set on the Runs page). ``<workspace>/.current`` holds the name of the current run so that a browser
refresh or a server restart keeps it; ``<workspace>/.jobs/`` holds the job files of training
jobs whose run directory does not exist yet (see engine.jobs).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pandas as pd

from engine.config import ConfigError
from engine.executor import ExecutorSettings, settings_from_env
from engine.runs import RunDir, atomic_write_json, atomic_write_text, read_json

__all__ = [
    "RUN_COLUMNS",
    "current_run",
    "executor_settings",
    "save_executor_settings",
    "list_runs",
    "new_run_name",
    "set_current_run",
    "workspace_path",
]

RUN_COLUMNS = ["name", "path", "dataset", "model", "state", "val_acc", "test_acc", "created"]
_CURRENT = ".current"
_EXECUTOR = ".executor.json"


def workspace_path(workspace: str | os.PathLike[str] | None = None) -> Path:
    """The workspace folder: `workspace` if given, else $RETRACER_WORKSPACE, else ./runs."""
    if workspace is not None:
        return Path(workspace)
    return Path(os.environ.get("RETRACER_WORKSPACE") or "runs")


def _is_run(p: Path) -> bool:
    return p.is_dir() and (p / "config.json").is_file()


def list_runs(workspace: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """One row per run in the workspace, newest first.

    Columns: name, path (str), dataset, model ("logreg on resnet18" in head mode), state (new |
    running | done | failed | ...),
    val_acc, test_acc (last epoch's, NaN until an epoch finished), created (unix time).
    """
    ws = workspace_path(workspace)
    rows = []
    if ws.is_dir():
        for p in ws.iterdir():
            if p.name.startswith(".") or not _is_run(p):
                continue
            rows.append(_run_row(p))
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
    return df.sort_values("created", ascending=False, kind="stable").reset_index(drop=True)


def _run_row(p: Path) -> dict[str, object]:
    run = RunDir(p)
    try:
        conf = run.config
    except (OSError, ValueError):
        conf = {}
    data, train = conf.get("data", {}), conf.get("train", {})
    val_acc = test_acc = float("nan")
    mp = p / "metrics.json"
    if mp.is_file():
        try:
            metrics = read_json(mp)
            if metrics:
                val_acc = float(metrics[-1].get("val_acc", float("nan")))
                test_acc = float(metrics[-1].get("test_acc", float("nan")))
        except (OSError, ValueError):
            pass
    try:
        state = str(run.status.get("state", "new"))
    except (OSError, ValueError):
        state = "unknown"
    return {
        "name": p.name,
        "path": str(p),
        "dataset": str(data.get("dataset", "")),
        "model": str(train.get("model", ""))
        + (f" on {train['backbone']}" if train.get("backbone") else ""),  # head mode
        "state": state,
        "val_acc": val_acc,
        "test_acc": test_acc,
        "created": (p / "config.json").stat().st_mtime,
    }


def set_current_run(
    run_dir: str | os.PathLike[str], workspace: str | os.PathLike[str] | None = None
) -> None:
    """Make `run_dir` the current run (persisted in <workspace>/.current, atomically)."""
    ws = workspace_path(workspace)
    run = Path(run_dir)
    name = run.name if run.resolve().parent == ws.resolve() else str(run.resolve())
    atomic_write_text(ws / _CURRENT, name + "\n")


def current_run(workspace: str | os.PathLike[str] | None = None) -> Path | None:
    """The current run's folder, or None when the workspace has no run.

    Falls back to the newest run when the pointer is missing or names a run that is gone. A run
    whose training job has not yet written config.json is still returned if it is the pointer.
    """
    ws = workspace_path(workspace)
    ptr = ws / _CURRENT
    if ptr.is_file():
        name = ptr.read_text(encoding="utf-8").strip()
        if name:
            p = Path(name) if os.path.isabs(name) else ws / name
            if _is_run(p) or _pending_train(ws, p):
                return p
    runs = list_runs(ws)
    return Path(runs["path"].iloc[0]) if len(runs) else None


def _pending_train(ws: Path, p: Path) -> bool:
    """True when a training job for `p` is queued or running (its job file is in .jobs/)."""
    jobs = ws / ".jobs"
    if not jobs.is_dir():
        return False
    for f in jobs.glob("*.json"):
        try:
            j = read_json(f)
        except (OSError, ValueError):
            continue
        if Path(j.get("run_dir", "")).resolve() == p.resolve() and j.get("state") in (
            "queued",
            "running",
        ):
            return True
    return False


def new_run_name(dataset: str, model: str, workspace: str | os.PathLike[str] | None = None) -> str:
    """A fresh, readable run name such as ``digits-mlp-20250101-120000`` (suffixed if taken)."""
    ws = workspace_path(workspace)
    kind, _, arg = dataset.partition(":")
    base = Path(arg.rstrip("/")).stem if arg else kind
    base = re.sub(
        r"[^A-Za-z0-9_.-]+", "-", f"{base}-{model}-{time.strftime('%Y%m%d-%H%M%S')}"
    ).strip("-")
    name, i = base, 2
    while (ws / name).exists():
        name, i = f"{base}-{i}", i + 1
    return name


def executor_settings(workspace: str | os.PathLike[str] | None = None) -> ExecutorSettings:
    """Where this workspace's jobs run their retrains: <workspace>/.executor.json if saved, else
    the environment's (engine.executor.settings_from_env: local, one worker per core)."""
    path = workspace_path(workspace) / _EXECUTOR
    if not path.is_file():
        return settings_from_env()
    try:
        return ExecutorSettings.from_dict(read_json(path))
    except (OSError, ValueError, TypeError, AttributeError) as e:  # ConfigError is a ValueError
        raise ConfigError(
            f"{path} is not a valid executor setting ({e}); save it again on the Runs page "
            "or delete the file",
            param="executor",
        ) from e


def save_executor_settings(
    settings: ExecutorSettings, workspace: str | os.PathLike[str] | None = None
) -> None:
    """Persist `settings` (validated first, written atomically) for the workspace's next jobs."""
    settings.validate()
    ws = workspace_path(workspace)
    ws.mkdir(parents=True, exist_ok=True)
    atomic_write_json(ws / _EXECUTOR, settings.to_dict())
