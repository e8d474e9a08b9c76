"""The score store (engine.influence.scorestore): what is stored, read, refused and reused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.config import ConfigError
from engine.fingerprint import run_fingerprint
from engine.influence import api
from engine.influence.methods import get_method, run_method
from engine.influence.queries import Query
from engine.influence.scorestore import ScoreStore
from engine.loading import LoadedRun, load_run
from engine.runs import RunError
from tests.engine.influence.conftest import make_run


def test_storage_round_trip_and_listing(tiny_run: LoadedRun) -> None:
    run_dir = tiny_run.run.path
    frame = api.compute_influence(run_dir, "tracin", query="class")
    assert list(frame.columns) == ["sample_id", "class:1", "class:7"]
    assert list(frame["sample_id"]) == list(tiny_run.bundle.train.ids)
    ref = run_method("tracin", tiny_run, Query("class"))
    np.testing.assert_array_equal(frame[["class:1", "class:7"]].to_numpy(), ref)
    back = api.load_scores(run_dir, "tracin", "class")
    pd.testing.assert_frame_equal(back, frame)
    params = json.loads((run_dir / "influence/tracin/class/params.json").read_text())
    assert params["method"] == "tracin" and params["query"] == "class"
    # every option of the method, so a stored set says exactly how it was made
    assert params["options"] == get_method("tracin").defaults
    assert params["options"]["curvature"] == "none" and "hessian_scale" in params["options"]
    assert (
        params["fingerprint"]["n_train"] == 30
        and params["fingerprint"]["n_steps"] == tiny_run.traj.n_steps
    )
    assert params["seconds"] > 0 and params["engine_version"]
    listed = {(d["method"], d["query"]): d for d in api.list_scores(run_dir)}
    assert listed[("tracin", "class")]["n"] == 30


def test_refuses_to_overwrite_other_parameters(tiny_run: LoadedRun) -> None:
    run_dir = tiny_run.run.path
    api.compute_influence(run_dir, "hydra")
    api.compute_influence(run_dir, "hydra")  # same parameters: fine
    with pytest.raises(RunError, match="overwrite"):
        api.compute_influence(run_dir, "hydra", last_epochs=1)
    last = api.compute_influence(run_dir, "hydra", last_epochs=1, overwrite=True)
    np.testing.assert_allclose(api.load_scores(run_dir, "hydra")["score"], last["score"])
    with pytest.raises(RunError, match="no sgd-influence-last scores"):
        api.load_scores(run_dir, "sgd-influence-last", "self")


def test_scores_of_another_run_are_refused(
    tiny_run: LoadedRun, aug_run: LoadedRun, tmp_path: Path
) -> None:
    api.compute_influence(tiny_run.run.path, "tracin", query="val")
    other = tmp_path / "other"
    shutil.copytree(aug_run.run.path, other)
    shutil.copytree(tiny_run.run.path / "influence", other / "influence", dirs_exist_ok=True)
    with pytest.raises(RunError, match="another run"):
        api.load_scores(other, "tracin", "val")


@pytest.fixture
def own(runs_root: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny influence run, with no scores."""
    if not (runs_root / "store-src").exists():
        make_run(runs_root, "store-src")
    dst = tmp_path / "run"
    shutil.copytree(runs_root / "store-src", dst)
    shutil.rmtree(dst / "influence", ignore_errors=True)
    return dst


def test_version_changes_when_scores_are_written(own: Path) -> None:
    store = ScoreStore(own)
    assert store.version() == 0.0 and store.version("loss") == 0.0 and store.stored() == []
    store.compute("loss")
    v = store.version()
    assert v > 0 and store.version("loss") == v and store.version("margin") == 0.0
    assert store.methods() == ["loss"] and store.params("loss")["method"] == "loss"
    assert store.series("loss").index.tolist() == store.scores("loss")["sample_id"].tolist()


def test_get_or_compute_without_options_keeps_what_is_stored(own: Path) -> None:
    store = ScoreStore(own)
    first = store.compute("hydra", last_epochs=1)
    again = store.get_or_compute("hydra")  # whatever options made them: what the pages show
    pd.testing.assert_frame_equal(again, first)
    assert store.params("hydra")["options"]["last_epochs"] == 1


def test_get_or_compute_with_defaults_never_replaces_a_users_choice(own: Path) -> None:
    store = ScoreStore(own)
    chosen = store.compute("hydra", last_epochs=1)
    defaults = store.get_or_compute("hydra", options={})
    assert not np.allclose(defaults["score"], chosen["score"])  # computed with the defaults
    assert store.params("hydra")["options"]["last_epochs"] == 1  # and not stored over them
    fresh = store.get_or_compute("margin", options={})  # nothing stored: computed and stored
    assert store.params("margin") is not None
    pd.testing.assert_frame_equal(store.scores("margin"), fresh)


def test_a_composite_method_gets_its_parts_from_the_store(own: Path) -> None:
    store = ScoreStore(own)
    with pytest.raises(ConfigError, match="score store"):
        run_method("combined", load_run(own), Query("val"))  # no parts given
    store.compute("combined", influence="hydra", weight=None)
    assert set(store.methods()) == {"combined", "hydra", "margin"}  # the parts were stored too


def test_stale_scores_are_recomputed_by_get_or_compute(own: Path) -> None:
    store = ScoreStore(own)
    store.compute("loss")
    params = json.loads((own / "influence/loss/val/params.json").read_text())
    params["fingerprint"]["final_checkpoint_sha256"] = "0" * 64  # made for other weights
    (own / "influence/loss/val/params.json").write_text(json.dumps(params))
    with pytest.raises(RunError, match="another run"):
        store.scores("loss")
    store.get_or_compute("loss")
    assert store.params("loss")["fingerprint"] == run_fingerprint(own)


def test_metrics_are_the_runs_epochs(own: Path) -> None:
    rows = ScoreStore(own).metrics()
    assert [r["epoch"] for r in rows] == [1, 2, 3] and "val_acc" in rows[-1]
    assert ScoreStore(own / "nope").metrics() == []


def test_scores_computed_beside_other_stored_options_keep_every_query_column(own: Path) -> None:
    store = ScoreStore(own)
    chosen = store.compute("hydra", query="class", last_epochs=1)
    defaults = store.get_or_compute("hydra", "class", options={})  # computed, not stored
    assert list(defaults.columns) == list(chosen.columns) == ["sample_id", "class:1", "class:7"]
    assert not np.allclose(defaults["class:1"], chosen["class:1"])
    assert store.params("hydra", "class")["options"]["last_epochs"] == 1
