"""Where a fan-out of independent retrains runs: inline, a local process pool, or a Ray cluster.

Every experiment that retrains many times (the proof's fresh seeds and controls, recommendations,
trust checks, the LDS ground truth, noise-bench, cleanse, leave-one-out) hands its retrains to
``current_executor().map(run_dir, tasks)``. A ``Task`` is a module-level function of the run
directory and a small keyword spec (engine.tasks); it opens the run itself (engine.loading.open_run,
cached per worker) and returns a small result, so nothing large goes through the driver. The run
directory, on a filesystem every worker sees, is the contract between driver and workers.

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

import atexit
import contextlib
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from engine.config import ConfigError
from engine.progress import Progress

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
    "worker_main",
]

EXECUTORS = ("local", "ray")
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


# -- inline ----------------------------------------------------------------------------------------


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


# -- local processes -------------------------------------------------------------------------------


def worker_main(fd: int) -> None:
    """A pool process (``python -c ...worker_main(fd)``): import the engine's tasks, say it is
    ready, then run the (i, task, run_dir) messages that arrive on the socket fd until told to
    stop or the socket closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    conn = Connection(fd)
    import engine.counterfactual  # noqa: F401 - what every retrain needs (torch, the data), first

    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        i, task, run_dir = msg
        try:
            reply: tuple[Any, ...] = ("ok", i, task.run(run_dir))
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the driver
            reply = ("error", i, _portable(e), traceback.format_exc())
        conn.send(reply)


def _portable(e: BaseException) -> BaseException:
    """e itself when the driver can rebuild it (it pickles, and type(e)(*e.args) works, which
    is how an exception is unpickled), else a RuntimeError with its text."""
    try:
        pickle.dumps(e)
        type(e)(*e.args)
        return e
    except Exception:  # noqa: BLE001 - any exception that does not survive the trip
        return RuntimeError(f"{type(e).__name__}: {e}")


@dataclass
class _Worker:
    """A pool process and its socket; ready once it has imported the engine."""

    proc: subprocess.Popen[bytes]
    conn: Connection
    ready: bool = False
    job: tuple[int, Task] | None = None
    started: float = field(default_factory=time.perf_counter)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.conn.close()


class LocalExecutor:
    """`workers` processes of this machine, kept for the next fan-out of this process.

    Each worker is a fresh interpreter that imports only the engine (not this program's
    ``__main__``, so scripts and notebooks need no main guard) and finds the task functions on
    this process's sys.path; it talks to the driver over its own socket. Starting one takes
    about 4 s here (importing torch), so the first fan-out times one task in the driver and
    starts the workers only when the rest would take longer than twice that; while any worker
    is still starting, the driver goes on running tasks itself.
    (Forking the driver instead starts at once, but a worker forked after torch had run
    multi-threaded hung on a lock of the thread pool.)"""

    kind = "local"
    boot_seconds = 5.0  # a worker's start, until measured (4 s here, importing torch)

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: list[_Worker] = []
        atexit.register(self.close)

    def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        code = "import sys; from engine.executor import worker_main; worker_main(int(sys.argv[1]))"
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", code, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL, env=env,
            )  # fmt: skip
        finally:
            theirs.close()
        return _Worker(proc, Connection(ours.detach()))

    def start(self, *, timeout: float = 120.0) -> None:
        """Start the workers now and wait until they are ready (a warm pool for what follows)."""
        self._fill()
        end = time.monotonic() + timeout
        while not all(w.ready for w in self._pool) and time.monotonic() < end:
            for w in list(self._pool):
                if not w.ready and w.conn.poll(0.1):
                    self._hear(w, {}, [])

    def close(self) -> None:
        """Stop every worker."""
        for w in self._pool:
            with contextlib.suppress(OSError):
                w.conn.send(None)
            try:
                w.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                w.kill()
        self._pool = []

    def _fill(self) -> None:
        """Replace dead workers and start missing ones (they boot in the background)."""
        for w in [w for w in self._pool if not w.alive()]:
            self._pool.remove(w)
            w.conn.close()
        while len(self._pool) < self.workers:
            self._pool.append(self._spawn())

    def map(
        self,
        run_dir: str | os.PathLike[str],
        tasks: Sequence[Task],
        *,
        progress: Progress | None = None,
        on_result: OnResult | None = None,
    ) -> list[Any]:
        if self.workers <= 1 or len(tasks) <= 1:
            return InlineExecutor().map(run_dir, tasks, progress=progress, on_result=on_result)
        path = os.fspath(run_dir)
        queue = list(enumerate(tasks))[::-1]  # pop() takes the next task
        results: dict[int, Any] = {}
        deaths: dict[int, int] = {}

        def done(i: int, value: Any) -> None:
            results[i] = value
            if on_result is not None:
                on_result(i, value)
            if progress is not None:
                progress(len(results), len(tasks), None)

        if not self._pool:  # no workers yet: time one task here, and start them only if it pays
            t = time.perf_counter()
            i, task = queue.pop()
            done(i, task.run(path))
            if (time.perf_counter() - t) * len(queue) < 2 * self.boot_seconds:
                while queue:  # the rest takes less than starting the workers would
                    i, task = queue.pop()
                    done(i, task.run(path))
                return [results[i] for i in range(len(tasks))]
        self._fill()
        retries: list[tuple[int, Task]] = []  # tasks whose worker died: never run in the driver
        try:
            while len(results) < len(tasks):
                for w in self._pool:
                    if w.ready and w.job is None and (retries or queue):
                        w.job = retries.pop() if retries else queue.pop()
                        w.conn.send((w.job[0], w.job[1], path))
                booting = any(not w.ready for w in self._pool)
                if queue and booting:  # the pool is not up yet: do one task here meanwhile
                    i, task = queue.pop()
                    done(i, task.run(path))
                    timeout: float | None = 0.0
                else:
                    timeout = None
                heard = wait([x.conn for x in self._pool], timeout)
                for w in [w for w in self._pool if w.conn in heard]:
                    self._hear(w, deaths, retries, done)
        except BaseException:
            for w in self._pool:  # Ctrl-C, a cancelled job, a failed task: stop what runs
                if w.job is not None:
                    w.kill()
            self._pool = [w for w in self._pool if w.job is None]
            raise
        return [results[i] for i in range(len(tasks))]

    def _hear(
        self,
        w: _Worker,
        deaths: dict[int, int],
        retries: list[tuple[int, Task]],
        done: Callable[[int, Any], None] | None = None,
    ) -> None:
        """Read one message of w: ready, a result, a task's error; or notice that w died (its
        task goes to `retries`, for another worker; TaskFailed the second time)."""
        try:
            reply = w.conn.recv()
        except (EOFError, OSError):
            reply = None
        if reply is None:
            job = w.job
            w.kill()
            self._pool.remove(w)
            if job is not None:
                i, task = job
                deaths[i] = deaths.get(i, 0) + 1
                if deaths[i] > 1:
                    raise TaskFailed(
                        f"{task.name}: its worker process died twice (exit code {w.proc.returncode})"
                    )
                retries.append(job)
            self._fill()
            return
        if reply[0] == "ready":
            w.ready = True
            type(self).boot_seconds = time.perf_counter() - w.started
            return
        w.job = None
        if reply[0] == "error":
            raise reply[2]
        if done is not None:
            done(reply[1], reply[2])


# -- Ray -------------------------------------------------------------------------------------------


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "the ray executor needs Ray: pip install 'retracer[ray]' (or use --executor local)",
            param="executor",
        ) from None
    return ray


def check_available(settings: ExecutorSettings) -> None:
    """ConfigError when `settings` ask for Ray and the ray extra is not installed."""
    if settings.validate().kind == "ray":
        _import_ray()


def _ray_run(task: Task, run_dir: str) -> Any:
    return task.run(run_dir)


class RayExecutor:
    """Ray tasks, one CPU each, retried once when their worker dies (max_retries=1)."""

    kind = "ray"

    def __init__(self, address: str | None = None) -> None:
        ray = _import_ray()
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
        ray = _import_ray()
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
