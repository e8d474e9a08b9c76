"""What every executor shares: a Task, the Executor protocol, and the inline executor.

engine.executor picks an executor; engine.pool (local processes) and engine.ray_executor (Ray)
implement the protocol below.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.progress import Progress

__all__ = ["Executor", "InlineExecutor", "OnResult", "Task", "TaskFailed"]

OnResult = Callable[[int, Any], None]


@dataclass(frozen=True)
class Task:
    """One unit of work: fn(run_dir, **kwargs) -> a small picklable result.

    fn: a module-level function (workers import it by name); name: what the task is, in words,
    for errors ("fresh retrain, seed 3, without 96 samples")."""

    fn: Callable[..., Any]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    name: str = "task"

    def run(self, run_dir: str) -> Any:
        return self.fn(run_dir, **self.kwargs)


class TaskFailed(RuntimeError):
    """A task's worker process died twice (killed, out of memory, a crash in native code)."""


class Executor(Protocol):
    kind: str
    workers: int

    def map(
        self,
        run_dir: str | os.PathLike[str],
        tasks: Sequence[Task],
        *,
        progress: Progress | None = None,
        on_result: OnResult | None = None,
    ) -> list[Any]:
        """Run every task on the run at run_dir; their results in task order. on_result(i, r) is
        called in the driver as task i finishes (in finishing order)."""
        ...


class InlineExecutor:
    """Every task in this process, one after another."""

    kind, workers = "local", 1

    def map(
        self,
        run_dir: str | os.PathLike[str],
        tasks: Sequence[Task],
        *,
        progress: Progress | None = None,
        on_result: OnResult | None = None,
    ) -> list[Any]:
        out = []
        for i, task in enumerate(tasks):
            out.append(task.run(os.fspath(run_dir)))
            if on_result is not None:
                on_result(i, out[-1])
            if progress is not None:
                progress(i + 1, len(tasks), None)
        return out
