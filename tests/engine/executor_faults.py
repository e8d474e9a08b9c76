"""Task functions for the executor tests: a worker that dies, one that always dies, a slow one.

Module-level so that worker processes (spawned, or Ray's) can import them by name."""

from __future__ import annotations

import os
import time
from pathlib import Path


def echo(run_dir: str, *, value: int) -> tuple[str, int]:
    return run_dir, value


def whose(run_dir: str) -> int:
    """The process that ran the task."""
    return os.getpid()


def die_once(run_dir: str, *, marker: str, value: int) -> int:
    """Kill the worker process the first time (no cleanup, as a crash or the OOM killer would)."""
    m = Path(marker)
    if not m.exists():
        m.write_text(str(os.getpid()))
        os._exit(17)
    return value


def always_die(run_dir: str, **_: object) -> None:
    os._exit(17)


def fail(run_dir: str, *, message: str) -> None:
    raise ValueError(message)


def slow_write(run_dir: str, *, path: str, seconds: float) -> str:
    time.sleep(seconds)
    Path(path).write_text("done")
    return path
