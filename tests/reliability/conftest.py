"""Shared pieces of the reliability tests: a tiny finished run with scores (the "victim" that bad
input must leave untouched), a snapshot of every file of a folder, the CLI run in-process, and a
fault injector for the write path (disk full, permission denied)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.config import TrainConfig
from engine.data import DataSpec

TINY_DATA = DataSpec(dataset="digits", classes=[1, 7], n_train=60, n_val=20, n_test=20, seed=0)
TINY_TRAIN = TrainConfig(model="logreg", binary=True, epochs=2, batch_size=10, lr=0.1)
FAST_TRAIN = ["--model", "logreg", "--epochs", "1", "--batch-size", "4", "--lr", "0.1"]


# -- a finished run that must survive everything -------------------------------------------------
@pytest.fixture(scope="session")
def _victim_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.influence.api import compute_influence
    from engine.train import train

    run = tmp_path_factory.mktemp("victim") / "run"
    train(run, TINY_DATA, TINY_TRAIN)
    compute_influence(run, "loss")
    compute_influence(run, "tracin")
    return run


@pytest.fixture
def victim(_victim_master: Path, tmp_path: Path) -> Path:
    """A private copy of a tiny finished run (digits 1 vs 7, logreg) with loss and tracin scores."""
    dst = tmp_path / "victim"
    shutil.copytree(_victim_master, dst, ignore=shutil.ignore_patterns(".*.lock"))
    return dst


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """{relative path: (sha256, mtime_ns)} of every file under `folder` except lock files."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not (p.name.startswith(".") and p.name.endswith(".lock")):
            out[p.relative_to(folder).as_posix()] = (
                hashlib.sha256(p.read_bytes()).hexdigest(),
                p.stat().st_mtime_ns,
            )
    return out


def leftovers(folder: Path) -> list[str]:
    """Temporary files of an interrupted atomic write (there must never be any)."""
    return [p.name for p in folder.rglob("*.tmp")]


# -- the CLI, in this process (one torch import for the whole file) -------------------------------
@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """cli(*argv) -> (exit code, stdout, stderr) of `retracer *argv`."""
    from engine.cli import main

    def run(*argv: str | os.PathLike[str]) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return rc, out, err

    return run


def error_line(err: str) -> str:
    """The CLI's one error line (progress lines may come before it)."""
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("retracer: error")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# -- images --------------------------------------------------------------------------------------
def png(path: Path, value: int = 0, size: tuple[int, int] = (8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = (np.arange(size[0] * size[1]).reshape(size) * 7 + value * 37) % 256
    Image.fromarray(a.astype(np.uint8)).save(path)
    return path


def image_folder(root: Path, classes: dict[str, int]) -> Path:
    """root/<class>/<i>.png, `n` small grayscale PNGs per class."""
    for c, (name, n) in enumerate(classes.items()):
        for i in range(n):
            png(root / name / f"{i:03d}.png", value=c * 50 + i)
    return root


# -- faults in the write path --------------------------------------------------------------------
class WriteFault:
    """Make writes of files whose name matches `pattern` fail like a full disk (at fsync, where a
    delayed-allocation ENOSPC surfaces) or a read-only / permission-denied folder (at creating the
    temporary file). `after` matching writes succeed first; `sticky` keeps every later write of
    any file failing too (the disk stays full). Tests run as root, so chmod cannot do this."""

    def __init__(self, pattern: str, *, err: int, after: int = 0, sticky: bool = False) -> None:
        self.pattern, self.err, self.after, self.sticky = re.compile(pattern), err, after, sticky
        self.hits: list[str] = []
        self.active = True

    def _check(self, name: str) -> None:
        if not self.active:
            return
        if self.pattern.search(name) or (self.sticky and self.hits):
            if self.after > 0 and not self.hits:
                self.after -= 1
                return
            self.hits.append(name)
            raise OSError(self.err, os.strerror(self.err))


@contextlib.contextmanager
def write_fault(
    monkeypatch: pytest.MonkeyPatch, pattern: str, *, err: int = errno.ENOSPC, **kw: object
) -> Iterator[WriteFault]:
    fault = WriteFault(pattern, err=err, **kw)  # type: ignore[arg-type]
    if err == errno.ENOSPC:
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            name = os.readlink(f"/proc/self/fd/{fd}")
            fault._check(Path(name).name)
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    else:
        real_mkstemp = tempfile.mkstemp

        def mkstemp(*a: object, **k: object) -> tuple[int, str]:
            fault._check(str(k.get("prefix", "")))
            return real_mkstemp(*a, **k)  # type: ignore[call-overload,no-any-return]

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    try:
        yield fault
    finally:
        fault.active = False
