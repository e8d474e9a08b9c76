"""The public influence API: storage, refusal, class matrix, projected store, influencers, CLI."""

from __future__ import annotations

import numpy as np
import pytest

from engine.cli import main
from engine.influence import api
from engine.influence.classmatrix import hydra_normalise
from engine.influence.methods import run_method
from engine.influence.queries import Query
from engine.loading import LoadedRun


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
