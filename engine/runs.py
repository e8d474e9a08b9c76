"""Run directories: one folder per training run, every file written atomically.

Layout of a run directory::

    config.json        the full configuration that made the run
    manifest.csv       one row per sample: sample_id, split, label, true_label, path, flipped
    data.safetensors   the images (uint8, N x C x H x W) and labels of every split
    status.json        {"state": "running" | "done" | "failed" | "interrupted", "message": ...}
    metrics.json       per-epoch train / val / test loss and accuracy
    trajectory/        logged steps and checkpoints (see engine.trajectory)
    influence/         scores per method (see engine.influence)

Atomic means: write to a temporary file in the same folder, fsync, then rename over the target, so
a reader sees either the old file or the new one, never half of either.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

__all__ = [
    "RunDir",
    "RunError",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_save_tensors",
    "read_json",
]

ENGINE_VERSION = "0.1.0"


class RunError(Exception):
    """A run directory is missing, incomplete, or would be overwritten."""


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` so that readers see the old or the new content, never a mix."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as e:  # e.g. EACCES / EROFS: name the file the caller wanted, not the temporary
        if e.errno is None:
            raise
        raise type(e)(e.errno, e.strerror, str(target)) from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            # e.g. ENOSPC from write/fsync carries no file name: say which file could not be saved
            raise type(e)(e.errno, e.strerror, str(target)) from e
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_save_tensors(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor]) -> None:
    """Save named tensors with safetensors, atomically. Tensors are made contiguous on the CPU."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, save(flat))


def load_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def process_start(pid: int) -> str | None:
    """The start time of process `pid` (Linux /proc), to tell it from a later process with the same
    pid; None where /proc is unavailable."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_alive(pid: int | None, start: str | None) -> bool:
    """True while process `pid` (started at `start`, see process_start) still runs."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True  # no /proc: trust kill(0)
    return state != "Z" and (start is None or process_start(int(pid)) == start)


def _is_lock_file(p: Path) -> bool:
    return p.name.startswith(".") and p.name.endswith(".lock") and p.is_file()


class RunDir:
    """A run directory on disk. Cheap to construct; every accessor reads from disk."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    # -- creation --------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str], *, overwrite: bool = False) -> RunDir:
        """Make a new, empty run directory. Refuses an existing non-empty one unless `overwrite`."""
        p = Path(path)
        if p.exists() and any(not _is_lock_file(c) for c in p.iterdir()):
            if not overwrite:
                raise RunError(
                    f"run directory {p} already exists and is not empty; "
                    "pick another --run-dir or pass --overwrite"
                )
            if not (p / "config.json").exists():
                raise RunError(f"refusing to overwrite {p}: it is not a Retracer run directory")
            # Never delete a run another job is writing (training, resuming): its lock says so.
            # The lock files stay, so a job that opens them later still meets the same lock.
            with cls(p).lock(blocking=False):
                for c in p.iterdir():
                    if _is_lock_file(c):
                        continue
                    if c.is_dir() and not c.is_symlink():
                        shutil.rmtree(c)
                    else:
                        c.unlink()
        p.mkdir(parents=True, exist_ok=True)
        return cls(p)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunDir:
        p = Path(path)
        if not (p / "config.json").is_file():
            raise RunError(f"{p} is not a Retracer run directory (no config.json)")
        return cls(p)

    # -- files -------------------------------------------------------------------------------
    def file(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.file(name), obj)

    def read_json(self, name: str, default: Any = None) -> Any:
        p = self.file(name)
        if not p.exists():
            if default is not None:
                return default
            raise RunError(f"{p} is missing")
        return read_json(p)

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.read_json("config.json"))

    # -- status ------------------------------------------------------------------------------
    def set_status(self, state: str, message: str = "", **extra: Any) -> None:
        """Record the run's state. A "running" state also records who runs it (pid and the
        process's start time), so a reader can tell a live job from one that was killed."""
        owner = (
            {"pid": os.getpid(), "pid_start": process_start(os.getpid())}
            if state == "running"
            else {}
        )
        record = {"state": state, "message": message, "time": time.time(), **owner, **extra}
        if state != "failed":
            self.write_json("status.json", record)
            return
        # Recording a failure must not hide it: when the disk is full this write fails too, the
        # status keeps saying "running", and readers see "interrupted" once the process is gone.
        with contextlib.suppress(OSError):
            self.write_json("status.json", record)

    @property
    def status(self) -> dict[str, Any]:
        """The recorded status; "running" whose process is gone reads as "interrupted"."""
        p = self.file("status.json")
        if not p.exists():
            return {"state": "new", "message": ""}
        st = dict(read_json(p))
        if st.get("state") == "running" and not process_alive(st.get("pid"), st.get("pid_start")):
            st["state"] = "interrupted"
            st["message"] = (
                f"the process writing this run is gone (killed or crashed) while: {st.get('message', '')}; "
                f"`retracer resume --run-dir {self.path}` continues training from the last checkpoint"
            )
        return st

    # -- locking -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(
        self, name: str = "run", *, blocking: bool = True, shared: bool = False
    ) -> Iterator[None]:
        """An advisory file lock (fcntl) so two processes never write the same run at once.

        Training and resuming hold the "run" lock exclusively; readers that must not see the run
        replaced under them (influence jobs) hold it shared. Non-blocking: RunError when busy."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.file(f".{name}.lock"), "a+") as f:
            flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (
                0 if blocking else fcntl.LOCK_NB
            )
            try:
                fcntl.flock(f.fileno(), flags)
            except BlockingIOError as e:
                raise RunError(
                    f"run {self.path} is busy: another job holds its '{name}' lock; "
                    "wait for it to end or cancel it, then try again"
                ) from e
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def update_json(self, name: str, update: Callable[[Any], Any], *, default: Any) -> Any:
        """Read-modify-write a JSON file under a lock, so concurrent writers merge."""
        with self.lock(f"json-{name}"):
            p = self.file(name)
            current = read_json(p) if p.exists() else default
            new = update(current)
            atomic_write_json(p, new)
            return new

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"
