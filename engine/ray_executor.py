"""The Ray executor: every task a Ray task (the ``ray`` extra; engine.executor picks it)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

from engine.config import ConfigError
from engine.fanout import OnResult, Task, TaskFailed
from engine.progress import Progress

__all__ = ["RayExecutor", "import_ray"]


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "the ray executor needs Ray: pip install 'retracer[ray]' (or use --executor local)",
            param="executor",
        ) from None
    return ray


def _ray_run(task: Task, run_dir: str) -> Any:
    return task.run(run_dir)


class RayExecutor:
    """Ray tasks, one CPU each, retried once when their worker dies (max_retries=1)."""

    kind = "ray"

    def __init__(self, address: str | None = None) -> None:
        ray = import_ray()
        self.address = address or os.environ.get("RETRACER_RAY_ADDRESS") or None
        if not ray.is_initialized():
            ray.init(
                address=self.address, include_dashboard=False, log_to_driver=False,
                logging_level="ERROR", configure_logging=True,
            )  # fmt: skip
        self.workers = int(ray.cluster_resources().get("CPU", 1))
        self._remote = ray.remote(num_cpus=1, max_retries=1)(_ray_run)

    def map(
        self,
        run_dir: str | os.PathLike[str],
        tasks: Sequence[Task],
        *,
        progress: Progress | None = None,
        on_result: OnResult | None = None,
    ) -> list[Any]:
        ray = import_ray()
        path = os.fspath(run_dir)
        pending = {self._remote.options(name=t.name[:100]).remote(t, path): i
                   for i, t in enumerate(tasks)}  # fmt: skip
        results: dict[int, Any] = {}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                i = pending.pop(done[0])
                results[i] = self._get(ray, done[0], tasks[i])
                if on_result is not None:
                    on_result(i, results[i])
                if progress is not None:
                    progress(len(results), len(tasks), None)
        finally:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
        return [results[i] for i in range(len(tasks))]

    @staticmethod
    def _get(ray: Any, ref: Any, task: Task) -> Any:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # the task's own exception: raise it as is
            cause = getattr(e, "cause", None)
            raise (cause if isinstance(cause, BaseException) else e) from None
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as e:
            raise TaskFailed(f"{task.name}: its Ray worker died twice ({type(e).__name__})") from e
