from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import pytest

from engine.runs import RunDir, RunError, atomic_write_bytes, atomic_write_json


def test_atomic_write_interrupted_half_way_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"old": True})

    def crash(
        fd: int,
    ) -> None:  # the write got half way, then the process "died" before fsync/rename
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b'{"new": tr')
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp files left behind


def _killed_writer(path: str) -> None:
    import engine.runs as runs

    def die(fd: int) -> None:
        os._exit(9)  # SIGKILL-like: no cleanup at all

    runs.os.fsync = die  # type: ignore[assignment]
    runs.atomic_write_bytes(path, b"x" * 1_000_000)


def test_process_killed_mid_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "status.json"
    atomic_write_json(target, {"state": "done"})
    p = mp.get_context("spawn").Process(target=_killed_writer, args=(str(target),))
    p.start()
    p.join(60)
    assert p.exitcode == 9
    assert json.loads(target.read_text()) == {"state": "done"}


def test_create_refuses_existing_and_foreign_directories(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "r")
    run.write_json("config.json", {})
    (run.path / "x").write_text("1")
    with pytest.raises(RunError, match="already exists"):
        RunDir.create(tmp_path / "r")
    RunDir.create(tmp_path / "r", overwrite=True)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "precious.txt").write_text("keep me")
    with pytest.raises(RunError, match="not a Retracer run"):
        RunDir.create(tmp_path / "home", overwrite=True)
    assert (tmp_path / "home" / "precious.txt").exists()


def test_open_names_the_missing_piece(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="not a Retracer run directory"):
        RunDir.open(tmp_path)


def test_lock_refuses_a_second_writer(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "r")
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    with run.lock():
        p = ctx.Process(target=_try_lock, args=(str(run.path), q))
        p.start()
        p.join(30)
    assert "busy" in q.get(timeout=5)
    with run.lock(blocking=False):  # released again
        pass


def _try_lock(path: str, q: mp.Queue) -> None:  # type: ignore[type-arg]
    try:
        with RunDir(path).lock(blocking=False):
            q.put("got the lock")
    except RunError as e:
        q.put(str(e))
