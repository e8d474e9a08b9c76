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
import multiprocessing as mp
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
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
    """A pool process started as a fresh ``python -c ...worker_main(fd)``: serve the socket fd."""
    _serve(Connection(fd))


def _forked_main(conn: Connection, inherited: list[int]) -> None:
    """A pool process forked from the driver: close the other workers' sockets it inherited (so
    their ends still close when they die), then serve."""
    for fd in inherited:
        with contextlib.suppress(OSError):
            os.close(fd)
    _serve(conn)


def _serve(conn: Connection) -> None:
    """Run the (i, task, run_dir) messages that arrive on conn until told to stop or it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
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


def _can_fork() -> bool:
    """Forking this process is safe: POSIX, no other Python thread, no CUDA context, no Ray
    driver (gRPC threads). A forked worker starts in milliseconds and shares the loaded run."""
    if os.name != "posix" or threading.active_count() > 1:
        return False
    import torch

    if torch.cuda.is_initialized():
        return False
    ray = sys.modules.get("ray")
    return not (ray is not None and getattr(ray, "is_initialized", lambda: False)())


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
    """A pool process: forked (multiprocessing) or started fresh (subprocess), and its socket."""

    proc: Any  # multiprocessing.Process (forked) | subprocess.Popen (fresh)
    conn: Connection
    job: tuple[int, Task] | None = None

    def alive(self) -> bool:
        if isinstance(self.proc, subprocess.Popen):
            return self.proc.poll() is None
        return bool(self.proc.is_alive())

    @property
    def exitcode(self) -> int | None:
        if isinstance(self.proc, subprocess.Popen):
            return self.proc.returncode
        return self.proc.exitcode  # type: ignore[no-any-return]

    def wait(self, timeout: float) -> bool:
        """True when the process ended within `timeout` seconds."""
        if isinstance(self.proc, subprocess.Popen):
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        self.proc.join(timeout)
        return not self.proc.is_alive()

    def kill(self) -> None:
        self.proc.kill()
        self.wait(10)
        self.conn.close()


class LocalExecutor:
    """`workers` processes of this machine, kept for the next fan-out of this process.

    Workers are forked from this process where that is safe (they start at once, with torch and
    any open run already loaded), else started as fresh interpreters (about 4 s each here, for
    importing torch); see _spawn. Each talks to the driver over its own socket."""

    kind = "local"

    def __init__(self, workers: int, *, start: str = "auto") -> None:
        """start: "auto" (fork where that is safe, else fresh), "fork" or "fresh"."""
        if start not in ("auto", "fork", "fresh"):
            raise ConfigError(f"start must be auto, fork or fresh, got {start!r}", param="start")
        self.workers, self.start = workers, start
        self._idle: list[_Worker] = []
        atexit.register(self.close)

    def _spawn(self, others: Sequence[_Worker]) -> _Worker:
        """A new worker: forked from this process where that is safe (_can_fork), else a fresh
        ``python`` that imports only the engine (not this program's ``__main__``, so scripts and
        notebooks need no main guard), finding the task functions on this process's sys.path."""
        if self.start == "fork" or (self.start == "auto" and _can_fork()):
            ctx = mp.get_context("fork")
            parent, child = ctx.Pipe()
            inherited = [w.conn.fileno() for w in others if not w.conn.closed]
            proc: Any = ctx.Process(target=_forked_main, args=(child, inherited), daemon=True)
            proc.start()
            child.close()
            return _Worker(proc, parent)
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

    def _take(self, busy: Sequence[_Worker]) -> _Worker:
        """An idle worker that is still alive (one killed while idle is dropped), else a new one."""
        while self._idle:
            w = self._idle.pop()
            if w.alive():
                return w
            w.conn.close()
        return self._spawn([*self._idle, *busy])

    def close(self) -> None:
        """Stop the idle workers."""
        for w in self._idle:
            with contextlib.suppress(OSError):
                w.conn.send(None)
            if not w.wait(5):
                w.kill()
        self._idle = []

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
        busy: list[_Worker] = []
        try:
            while queue or busy:
                while queue and len(busy) < self.workers:
                    w = self._take(busy)
                    w.job = queue.pop()
                    w.conn.send((w.job[0], w.job[1], path))
                    busy.append(w)
                ready = wait(
                    [w.conn for w in busy]
                )  # a reply, or the end of a dead worker's socket
                for w in [w for w in busy if w.conn in ready]:
                    busy.remove(w)
                    got = self._collect(w, deaths, queue)
                    if got is None:
                        continue
                    i, value = got
                    results[i] = value
                    if on_result is not None:
                        on_result(i, value)
                    if progress is not None:
                        progress(len(results), len(tasks), None)
        finally:
            for w in busy:  # an exception (Ctrl-C, a cancelled job, a failed task): stop them
                w.kill()
        return [results[i] for i in range(len(tasks))]

    def _collect(
        self, w: _Worker, deaths: dict[int, int], queue: list[tuple[int, Task]]
    ) -> tuple[int, Any] | None:
        """The finished worker's (index, result); None when it died and its task was queued again."""
        assert w.job is not None
        i, task = w.job
        try:
            reply = w.conn.recv()
        except (EOFError, OSError):
            reply = None
        if reply is None:  # the process died in the middle of the task
            w.kill()
            deaths[i] = deaths.get(i, 0) + 1
            if deaths[i] > 1:
                raise TaskFailed(
                    f"{task.name}: its worker process died twice (exit code {w.exitcode})"
                )
            queue.append((i, task))  # retried first, on a new worker
            return None
        w.job = None
        self._idle.append(w)
        if reply[0] == "error":
            raise reply[2]
        return reply[1], reply[2]


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
