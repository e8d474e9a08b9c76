"""Where a fan-out of independent retrains runs: inline, a local process pool, or a Ray cluster.

Every experiment that retrains many times (the proof's fresh seeds and controls, recommendations,
trust checks, the LDS ground truth, noise-bench, cleanse, leave-one-out) hands its retrains to
``current_executor().map(run_dir, tasks)``. A ``Task`` is a module-level function of the run
directory and a small keyword spec (engine.tasks); it opens the run itself (engine.loading.open_run,
cached per worker) and returns a small result, so nothing large goes through the driver. The run
directory, on a filesystem every worker sees, is the contract between driver and workers.
Modules: engine.fanout (Task, the Executor protocol, inline), engine.pool (local processes),
engine.ray_executor (Ray); this one picks among them (ExecutorSettings, use_executor).

Executors:

- ``local`` (the default): ``workers`` processes of this machine (default: one per core, one in
  all on a CUDA machine); one worker, or a single task, runs inline in this process.
- ``ray``: Ray tasks (one CPU each) on the cluster at ``address`` (default $RETRACER_RAY_ADDRESS,
  else a Ray started on this machine). Needs the ``ray`` extra.

Results do not depend on the executor: every retrain pins its CPU threads to the run's own count
(engine.threads) and is deterministic. ``map`` returns results in task order and calls
``progress(done, total, None)`` as tasks finish. An exception in the driver (Ctrl-C, a cancelled
app job) cancels every outstanding task; a task's own exception is raised as is. A worker that
dies is retried once on a new worker; if it dies again, TaskFailed names the task.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from engine.config import ConfigError
from engine.fanout import Executor, InlineExecutor, Task, TaskFailed
from engine.pool import LocalExecutor
from engine.ray_executor import RayExecutor, import_ray

__all__ = [
    "EXECUTORS",
    "Executor",
    "ExecutorSettings",
    "InlineExecutor",
    "LocalExecutor",
    "RayExecutor",
    "Task",
    "TaskFailed",
    "check_available",
    "current_executor",
    "current_settings",
    "forget_ray",
    "make_executor",
    "settings_from_env",
    "use_executor",
]

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorSettings:
    """Which executor runs the fan-outs: kind local | ray; workers: local processes (None: one per
    core); address: the Ray cluster (None: $RETRACER_RAY_ADDRESS, else a local Ray)."""

    kind: str = "local"
    workers: int | None = None
    address: str | None = None

    def validate(self) -> ExecutorSettings:
        if self.kind not in EXECUTORS:
            raise ConfigError(f"executor must be local or ray, got {self.kind!r}", param="executor")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 1):
            raise ConfigError(
                f"workers must be a positive integer, got {self.workers!r}", param="workers"
            )
        if self.address is not None and not str(self.address).strip():
            raise ConfigError("ray_address must not be empty", param="ray_address")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExecutorSettings:
        workers = d.get("workers")
        return cls(
            kind=str(d.get("kind") or "local"),
            workers=None if workers in (None, "") else int(workers),
            address=str(d["address"]) if d.get("address") else None,
        ).validate()

    def describe(self) -> str:
        """Where the retrains run, in words: "on 2 local worker processes", "on the Ray cluster
        at ADDR", ..."""
        if self.kind == "ray":
            addr = self.address or os.environ.get("RETRACER_RAY_ADDRESS")
            return f"on the Ray cluster at {addr}" if addr else "on a Ray started on this machine"
        n = self.workers or default_workers()
        return "in one process, one after another" if n <= 1 else f"on {n} local worker processes"


def settings_from_env() -> ExecutorSettings:
    """$RETRACER_EXECUTOR (local | ray), $RETRACER_WORKERS and $RETRACER_RAY_ADDRESS."""
    env = os.environ
    return ExecutorSettings.from_dict(
        {
            "kind": env.get("RETRACER_EXECUTOR") or "local",
            "workers": env.get("RETRACER_WORKERS"),
            "address": env.get("RETRACER_RAY_ADDRESS"),
        }  # fmt: skip
    )


def default_workers() -> int:
    """One worker per core this process may use; one on a CUDA machine (the GPU is shared)."""
    import torch

    if torch.cuda.is_available():
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_available(settings: ExecutorSettings) -> None:
    """ConfigError when `settings` ask for Ray and the ray extra is not installed."""
    if settings.validate().kind == "ray":
        import_ray()


# -- the current executor --------------------------------------------------------------------------

_SETTINGS: list[ExecutorSettings] = []  # a stack: use_executor pushes, the bottom is the env's
_BUILT: dict[ExecutorSettings, Executor] = {}


def make_executor(settings: ExecutorSettings) -> Executor:
    """The executor for these settings (built once per process and kept: workers are reused)."""
    settings.validate()
    if settings not in _BUILT:
        if settings.kind == "ray":
            _BUILT[settings] = RayExecutor(settings.address)
        else:
            n = settings.workers or default_workers()
            _BUILT[settings] = InlineExecutor() if n <= 1 else LocalExecutor(n)
    return _BUILT[settings]


def forget_ray() -> None:
    """Drop the Ray executors built so far (after ray.shutdown the next one connects again)."""
    for key in [k for k in _BUILT if k.kind == "ray"]:
        del _BUILT[key]


def current_settings() -> ExecutorSettings:
    """The innermost use_executor's settings, else those of the environment (settings_from_env)."""
    return _SETTINGS[-1] if _SETTINGS else settings_from_env()


def current_executor() -> Executor:
    return make_executor(current_settings())


@contextlib.contextmanager
def use_executor(settings: ExecutorSettings | None) -> Iterator[Executor]:
    """Run the block's fan-outs on `settings` (None: keep the current ones)."""
    if settings is None:
        yield current_executor()
        return
    ex = make_executor(settings)
    _SETTINGS.append(settings)
    try:
        yield ex
    finally:
        _SETTINGS.pop()
