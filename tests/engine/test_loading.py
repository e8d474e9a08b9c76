"""Opening a run (engine.loading): load_run, and open_run's cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import ConfigError
from engine.loading import clear_open_runs, load_run, open_run
from engine.trusted import set_trusted


def test_open_run_is_cached_until_the_run_changes(tiny_copy: Path) -> None:
    clear_open_runs()
    first = open_run(tiny_copy)
    assert open_run(tiny_copy) is first  # same fingerprint: the same object
    vid = first.bundle.val.ids[0]
    set_trusted(tiny_copy, {vid: 1})  # checked labels change the fingerprint
    after = open_run(tiny_copy)
    assert after is not first and after.bundle.val.ids == [vid]
    clear_open_runs()
    assert open_run(tiny_copy) is not after


def test_an_incomplete_run_is_refused_by_name(tiny_copy: Path) -> None:
    meta = tiny_copy / "trajectory" / "meta.json"
    import json

    m = json.loads(meta.read_text())
    m["logged_steps"] = m["n_steps"] - 1
    meta.write_text(json.dumps(m))
    with pytest.raises(ConfigError, match="incomplete trajectory"):
        load_run(tiny_copy)
    assert load_run(tiny_copy, require_complete=False).traj.n_steps == m["n_steps"]
