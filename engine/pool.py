"""The local executor: worker processes of this machine (engine.executor picks it by default)."""

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from engine.fanout import InlineExecutor, OnResult, Task, TaskFailed
from engine.progress import Progress

__all__ = ["LocalExecutor", "worker_main"]


def worker_main(fd: int) -> None:
    """A pool process (``python -c "from engine.pool import worker_main; ..."``): import the engine's tasks, say it is
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
    multi-threaded hung in a futex wait: the driver had 3 OS threads, one of them held a lock.)"""

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
        code = "import sys; from engine.pool import worker_main; worker_main(int(sys.argv[1]))"
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
