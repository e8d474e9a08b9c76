"""Decoding many files in worker processes (engine.imagedecode.decode_many)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import engine.imagedecode as imagedecode
from engine.imagedecode import decode, decode_many


@pytest.fixture()
def files(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(300):
        p = tmp_path / f"img_{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(p)
        out.append(p)
    (tmp_path / "img_100.png").write_bytes(b"not a png")  # one corrupt file among them
    return out


@pytest.fixture()
def two_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers from 10 files, 16 files a request, a 2-core machine."""
    monkeypatch.setattr(imagedecode, "PROCESSES_FROM_FILES", 10)
    monkeypatch.setattr(imagedecode, "_CHUNK", 16)
    monkeypatch.setattr(imagedecode.os, "cpu_count", lambda: 2)


def _same(a: list[np.ndarray | str], b: list[np.ndarray | str]) -> bool:
    return len(a) == len(b) and all(
        (x == y) if isinstance(x, str) else (isinstance(y, np.ndarray) and np.array_equal(x, y))
        for x, y in zip(a, b, strict=True)
    )


def test_workers_decode_the_same_arrays_in_order_and_report_bad_files(
    files: list[Path], monkeypatch: pytest.MonkeyPatch, two_workers: None
) -> None:
    started: list[int] = []
    real_start = imagedecode.start_workers
    monkeypatch.setattr(imagedecode, "start_workers", lambda k: started.append(k) or real_start(k))
    seen: list[int] = []
    got = decode_many(files, (4, 4), progress=seen.append)
    assert started == [2]  # two worker processes ran beside this one
    serial = []
    for p in files:
        try:
            serial.append(decode(p, (4, 4)))
        except imagedecode.Unreadable as e:
            serial.append(str(e))
    assert _same(got, serial)
    assert isinstance(got[100], str) and "not an image" in got[100]
    assert seen[-1] == len(files) and seen == sorted(seen)


def test_a_worker_that_dies_leaves_its_files_to_this_process(
    files: list[Path], monkeypatch: pytest.MonkeyPatch, two_workers: None
) -> None:

    def dying(k: int) -> list[subprocess.Popen[bytes]]:
        code = "import sys; sys.stdin.buffer.read(8); sys.exit(3)"
        return [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE) for _ in range(k)]  # fmt: skip

    monkeypatch.setattr(imagedecode, "start_workers", dying)
    got = decode_many(files, None)
    monkeypatch.setattr(imagedecode, "PROCESSES_FROM_FILES", 10**9)
    assert _same(got, decode_many(files, None))
