"""Ticks and relabels: saved per id, merged under a lock across processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.selections import clear_selections, load_selections, set_drop, set_relabel

TICKER = """
import sys
from engine.selections import set_drop, set_relabel
run_dir, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
    set_drop(run_dir, [f"{prefix}-{i}"], True)
    set_relabel(run_dir, f"{prefix}-{i}", i % 3)
"""


def test_two_processes_ticking_different_images_both_survive(tmp_path: Path) -> None:
    # separate interpreters, like two Streamlit sessions in two server processes
    procs = [
        subprocess.Popen([sys.executable, "-c", TICKER, str(tmp_path), p, "25"]) for p in ("a", "b")
    ]
    assert [p.wait(60) for p in procs] == [0, 0]
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
