"""bench/app_pages.py in Chromium on a tiny scored run: the landing page and every page settle and
are timed, Test sample answers a new image from hydra's index, and the gallery's memory rows come
back (the figures themselves are for BENCHMARKS.md, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.influence.api import build_projected_store, compute_influence
from tests.e2e.conftest import browser_missing

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "app_pages.py"


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.skipif(bool(browser_missing()), reason=browser_missing() or "-")
def test_every_page_settles_and_the_gallery_is_paged(tiny_copy: Path) -> None:
    run = tiny_copy
    compute_influence(run, "hydra")
    build_projected_store(run, "hydra")
    got = subprocess.run(
        [sys.executable, str(SCRIPT), "--run-dir", str(run), "--rounds", "2", "--gallery-pages", "2", "--picks", "1",
         "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert got.returncode == 0, got.stdout[-3000:] + got.stderr[-3000:]
    out = json.loads(got.stdout.strip().splitlines()[-1])
    assert set(out["pages"]) >= {"Harmful images", "Embedding map", "Class heatmap", "Export"}
    assert all(len(ts) == 2 and all(t >= 0 for t in ts) for ts in out["pages"].values())
    assert out["landing"] > 0
    assert len(out["picks"]) == 1 and out["picks"][0] > 0
    assert [r["page"] for r in out["gallery"]] == [1, 2]
    assert all(r["server_mb"] > 50 and r["chromium_mb"] > 50 for r in out["gallery"])
