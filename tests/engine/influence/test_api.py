"""The public influence API: storage, refusal, class matrix, projected store, influencers, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.cli import main
from engine.influence import api
from engine.influence.classmatrix import hydra_normalise
from engine.influence.featurestore import open_store
from engine.influence.methods import run_method
from engine.influence.queries import Query
from engine.loading import LoadedRun
from engine.runs import RunError
from tests.engine.influence.conftest import make_run


@pytest.fixture(scope="module")
def wide_run(runs_root: Path) -> LoadedRun:
    """mlp [16] (P = 1074 > the projection dims used), 60 samples, for the projected store."""
    return make_run(
        runs_root, "wide", widths=[16], epochs=4, batch_size=10, data={"n_train": 60, "n_test": 20}
    )


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
    assert params["options"] == {"curvature": "none"}
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


@pytest.mark.parametrize("method", ["hydra", "sgd-influence"])
def test_class_matrix_equals_brute_force_pair_average(tiny_run: LoadedRun, method: str) -> None:
    b = tiny_run.bundle
    pairs = run_method(method, tiny_run, Query("test", tuple(b.test.ids)))  # (N_train, N_test)
    tr, te = b.train.labels.numpy(), b.test.labels.numpy()
    brute = np.array([[pairs[np.ix_(tr == a, te == c)].mean() for c in range(2)] for a in range(2)])
    m, names = api.class_matrix(tiny_run.run.path, method)
    assert names == b.class_names
    np.testing.assert_allclose(m, brute, rtol=1e-9, atol=0)
    norm, _ = api.class_matrix(tiny_run.run.path, method, normalise=True)
    np.testing.assert_allclose(norm, m / np.sqrt(np.abs(np.outer(m.sum(1), m.sum(0)))), rtol=1e-12)


def test_hydra_normalise_divides_by_row_and_column_sums() -> None:
    m = np.array([[4.0, 1.0], [1.0, 9.0]])
    out = hydra_normalise(m)
    assert out[0, 0] == pytest.approx(4.0 / np.sqrt(5.0 * 5.0))
    assert out[1, 0] == pytest.approx(1.0 / np.sqrt(10.0 * 5.0))


@pytest.mark.parametrize("method", ["hydra", "tracin"])
def test_projected_store_agrees_with_exact_scores(wide_run: LoadedRun, method: str) -> None:
    path = api.build_projected_store(wide_run.run.path, method, dim=512, seed=0)
    st = open_store(wide_run.run.path, method, dim=512, seed=0)
    assert st.features.shape == (60, 512) and st.projector.kind == "srht"
    assert path == st.path
    agree = api.projection_agreement(wide_run.run.path, method, n_test=4, dim=512)
    assert len(agree["spearman"]) == 4 and agree["min"] > 0.9, agree


def test_identity_store_when_dim_exceeds_parameters(tiny_run: LoadedRun) -> None:
    api.build_projected_store(tiny_run.run.path, "hydra", dim=4096)
    st = open_store(tiny_run.run.path, "hydra", dim=4096)
    assert st.projector.kind == "identity"
    tid = tiny_run.bundle.test.ids[0]
    exact = run_method("hydra", tiny_run, Query("test", (tid,)))[:, 0]
    from engine.influence.api import gradients_of_test_samples

    np.testing.assert_allclose(
        st.scores(gradients_of_test_samples(tiny_run, [tid]))[:, 0], exact, rtol=1e-5, atol=1e-9
    )


def test_store_metadata_is_checked_on_reload(wide_run: LoadedRun) -> None:
    run_dir = wide_run.run.path
    path = api.build_projected_store(run_dir, "tracin", dim=128, seed=3)
    meta = json.loads((path / "meta.json").read_text())
    meta["fingerprint"]["final_checkpoint_sha256"] = "0" * 64
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(RunError, match="another run"):
        open_store(run_dir, "tracin", dim=128, seed=3)
    with pytest.raises(Exception, match="Hessian-free"):
        api.build_projected_store(run_dir, "sgd-influence", dim=128)


@pytest.mark.parametrize("exact", [False, True])
def test_influencers_are_sorted(wide_run: LoadedRun, exact: bool) -> None:
    tid = wide_run.bundle.test.ids[1]
    out = api.test_influencers(wide_run.run.path, tid, method="hydra", k=5, exact=exact, dim=512)
    assert list(out.columns) == ["sample_id", "score", "rank", "kind"]
    harm, helpful = out[out["kind"] == "harmful"], out[out["kind"] == "helpful"]
    assert len(harm) == len(helpful) == 5
    assert list(harm["rank"]) == [1, 2, 3, 4, 5] and list(helpful["rank"]) == [60, 59, 58, 57, 56]
    assert harm["score"].is_monotonic_increasing and helpful["score"].is_monotonic_decreasing
    assert harm["score"].max() <= helpful["score"].min()
    if exact:
        ref = run_method("hydra", wide_run, Query("test", (tid,)))[:, 0]
        ids = np.asarray(wide_run.bundle.train.ids)
        assert list(harm["sample_id"]) == list(ids[np.argsort(ref)[:5]])


def test_cli_influence_and_influencers(
    tiny_run: LoadedRun, capsys: pytest.CaptureFixture[str]
) -> None:
    rd = str(tiny_run.run.path)
    assert main(["influence", "--run-dir", rd, "--method", "tracin", "--query", "self"]) == 0
    out = capsys.readouterr().out
    assert (
        "most harmful" in out and len([ln for ln in out.splitlines() if ln.startswith("  ")]) == 10
    )
    assert main(["influence", "--run-dir", rd, "--method", "sgd-influence", "--query", "self"]) == 2
    assert "self" in capsys.readouterr().err
    tid = tiny_run.bundle.test.ids[0]
    assert (
        main(["influencers", "--run-dir", rd, "--test-id", tid, "--k", "3", "--dim", "4096"]) == 0
    )
    assert "most helpful" in capsys.readouterr().out
    assert main(["influencers", "--run-dir", rd, "--test-id", "nope"]) == 2
