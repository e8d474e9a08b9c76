"""`combined`: merged rank percentiles of the training loss and validation-loss influence."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import rankdata

from engine.config import ConfigError
from engine.influence.api import compute_influence, load_scores
from engine.influence.combined import RULES, merge_suspicions, percentiles, structure_weight
from engine.influence.methods import get_method, method_names
from engine.loading import LoadedRun, load_run


@pytest.fixture
def own_run(tiny_run: LoadedRun, tmp_path: Path) -> LoadedRun:
    """A private copy of the session's tiny run: other tests store scores with other options on
    the shared one, and these tests compute and store their own."""
    dst = tmp_path / "run"
    shutil.copytree(tiny_run.run.path, dst, ignore=shutil.ignore_patterns(".*.lock", "influence"))
    return load_run(dst)


def test_percentiles_rank_the_most_suspicious_last() -> None:
    p = percentiles(np.array([0.3, -2.0, 5.0, 0.3]))
    assert p.tolist() == [0.625, 0.25, 1.0, 0.625]


@pytest.mark.parametrize("rule", RULES)
def test_one_component_keeps_its_order(rule: str) -> None:
    s = np.random.default_rng(1).normal(size=40)
    merged = merge_suspicions([s], rule=rule)
    assert np.array_equal(np.argsort(merged), np.argsort(s))
    assert merged.min() == 0.0 and merged.max() == 1.0


@pytest.mark.parametrize("rule", RULES)
def test_agreeing_components_put_the_shared_top_first(rule: str) -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=30), rng.normal(size=30)
    a[7] = b[7] = 10.0  # most suspicious for both
    assert int(np.argmax(merge_suspicions([a, b], rule=rule))) == 7


def test_fisher_favours_one_strong_flag_over_two_lukewarm_ones() -> None:
    a = np.arange(100.0)
    b = np.arange(100.0)[::-1].copy()
    b[0] = 1000.0  # sample 0: last for a, first for b
    merged = merge_suspicions([a, b], rule="fisher")
    # sample 0 (ranks 100 and 1) beats the middle sample 50 (ranks ~50 and ~50); the mean ties them
    assert merged[0] > merged[50]
    with pytest.raises(ConfigError):
        merge_suspicions([a], rule="nope")


def test_combined_is_registered_with_its_defaults() -> None:
    assert "combined" in method_names()
    spec = get_method("combined")
    assert not spec.uses_query
    assert spec.defaults["rule"] == "fisher" and spec.defaults["weight"] == "auto"


def test_combined_through_compute_influence_is_a_ranking_of_the_training_ids(
    own_run: LoadedRun,
) -> None:
    run = own_run.run.path
    frame = compute_influence(
        run, "combined", influence="hydra", base="loss", weight=None, overwrite=True
    )
    ids = list(own_run.bundle.train.ids)
    assert list(frame["sample_id"]) == ids
    s = frame["score"].to_numpy()
    assert s.min() == pytest.approx(-1.0) and s.max() == pytest.approx(0.0)
    order = frame.sort_values("score", kind="stable")["sample_id"].tolist()
    assert sorted(order) == sorted(ids) and len(set(order)) == len(ids)
    # documented orientation: negative = suspicious; it merges -loss-score and -hydra-score ranks
    loss = load_scores(run, "loss")["score"].to_numpy()
    hydra = load_scores(run, "hydra")["score"].to_numpy()
    expect = -np.log(1 - rankdata(-loss) / len(ids) + 1 / len(ids)) - np.log(
        1 - rankdata(-hydra) / len(ids) + 1 / len(ids)
    )
    assert np.array_equal(np.argsort(-expect, kind="stable"), np.argsort(s, kind="stable"))
    assert load_scores(run, "combined")["score"].tolist() == s.tolist()
    default = compute_influence(run, "combined", overwrite=True)["score"].to_numpy()
    assert default.min() == pytest.approx(-1.0) and default.max() == pytest.approx(0.0)
    # the defaults merge the stored margin, hydra and sgd-influence scores with the auto weight
    w = structure_weight(own_run)
    parts = [-load_scores(run, m)["score"].to_numpy() for m in ("margin", "hydra", "sgd-influence")]
    weights = [1 - w, w / 2, w / 2]
    keep = [i for i, x in enumerate(weights) if x > 0]
    expect_default = -merge_suspicions([parts[i] for i in keep], weights=[weights[i] for i in keep])
    assert np.allclose(default, expect_default)


def test_weight_moves_between_the_loss_and_influence_orders(own_run: LoadedRun) -> None:
    run = own_run.run.path
    loss = compute_influence(run, "loss")["score"].to_numpy()
    hydra = compute_influence(run, "hydra")["score"].to_numpy()
    only_loss = compute_influence(run, "combined", influence="hydra", weight=0.0, overwrite=True)
    only_infl = compute_influence(run, "combined", influence="hydra", weight=1.0, overwrite=True)
    assert np.array_equal(rankdata(only_loss["score"]), rankdata(loss))
    assert np.array_equal(rankdata(only_infl["score"]), rankdata(hydra))
    with pytest.raises(ConfigError):
        compute_influence(run, "combined", weight=1.5, overwrite=True)


def test_structure_weight_is_a_share(own_run: LoadedRun) -> None:
    from engine.influence.combined import structure_weight

    w = structure_weight(own_run)
    assert 0.0 <= w <= 1.0
    # two classes: every misprediction lands on the one other class
    assert w in (0.0, 1.0)


def test_loss_only_combined_orders_like_the_loss(own_run: LoadedRun) -> None:
    run = own_run.run.path
    frame = compute_influence(run, "combined", influence="none", base="loss", overwrite=True)
    loss = compute_influence(run, "loss")["score"].to_numpy()
    # highest training loss (most negative loss score) = most suspicious = most negative combined
    assert int(np.argmin(frame["score"].to_numpy())) == int(np.argmin(loss))
    assert np.corrcoef(rankdata(frame["score"]), rankdata(loss))[0, 1] == pytest.approx(1.0)


def test_self_influence_component_uses_the_positive_end(own_run: LoadedRun) -> None:
    run = own_run.run.path
    frame = compute_influence(
        run, "combined", influence="hydra", use_loss=False, use_self=True, overwrite=True
    )  # no loss: equal weights of the two influence components
    hydra = load_scores(run, "hydra")["score"].to_numpy()
    self_inf = load_scores(run, "hydra", "self")["score"].to_numpy()
    # the suspicious end of self-influence is the POSITIVE end (a memorised sample)
    expect = merge_suspicions([-hydra, self_inf], rule="fisher")
    assert np.allclose(frame["score"].to_numpy(), -expect)
    assert not np.allclose(frame["score"].to_numpy(), -merge_suspicions([-hydra, -self_inf]))
    with pytest.raises(ConfigError):
        compute_influence(run, "combined", influence="none", use_loss=False, overwrite=True)
    with pytest.raises(ConfigError):
        compute_influence(run, "combined", rule="median", overwrite=True)
