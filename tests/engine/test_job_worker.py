"""The job worker (engine.job_worker): each named kind's work, and results as JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.job_worker import run_inline
from engine.jsonvalues import jsonable


def test_results_become_json_values() -> None:
    @dataclass
    class R:
        a: float
        b: tuple[int, ...]

    out = jsonable({"x": np.arange(3), "r": R(math.nan, (1, 2)), 3: {np.float64(0.5)}})
    assert out == {"x": [0, 1, 2], "r": {"a": None, "b": [1, 2]}, "3": [0.5]}


def test_named_kinds_do_their_work_inline(tiny_copy: Path) -> None:
    shape = run_inline("influence", tiny_copy, {"method": "loss", "query": "val"})
    assert tuple(shape) == (200, 2)  # sample_id + score
    res = run_inline("retrain", tiny_copy, {"drop": [], "control": None, "save": False})
    assert res["n_drop"] == 0  # drop None would mean the run's selections
    store = run_inline("projected-store", tiny_copy, {"method": "hydra", "dim": 64})
    assert Path(store).is_dir()
    # the chained "then" jobs are the job file's business, not the kind's
    again = run_inline("influence", tiny_copy, {"method": "loss", "then": [{"kind": "train"}]})
    assert tuple(again) == (200, 2)
