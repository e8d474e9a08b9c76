"""Ticks and relabels: saved per id, merged under a lock across processes."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from engine.selections import clear_selections, load_selections, set_drop, set_relabel


def _tick_many(run_dir: str, prefix: str, n: int) -> None:
    for i in range(n):
        set_drop(run_dir, [f"{prefix}-{i}"], True)
        set_relabel(run_dir, f"{prefix}-{i}", i % 3)


def test_two_processes_ticking_different_images_both_survive(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_tick_many, args=(str(tmp_path), p, 25)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    sel = load_selections(tmp_path)
    assert sel.drop == {f"{p}-{i}" for p in "ab" for i in range(25)}
    assert sel.relabel == {f"{p}-{i}": i % 3 for p in "ab" for i in range(25)}


def test_untick_relabel_and_clear(tmp_path: Path) -> None:
    assert len(load_selections(tmp_path)) == 0
    set_drop(tmp_path, ["x", "y", "z"], True)
    set_drop(tmp_path, "y", False)
    set_relabel(tmp_path, "w", 4)
    sel = load_selections(tmp_path)
    assert sel.drop == {"x", "z"} and sel.relabel == {"w": 4} and sel.ids == {"x", "z", "w"}
    set_relabel(tmp_path, "w", None)
    assert load_selections(tmp_path).relabel == {}
    clear_selections(tmp_path, ids=["x"])
    assert load_selections(tmp_path).drop == {"z"}
    clear_selections(tmp_path)
    assert len(load_selections(tmp_path)) == 0
