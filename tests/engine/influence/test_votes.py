"""attack-votes: successful attacks vote for their top harmful training images; rank by similarity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.config import ConfigError, TrainConfig
from engine.data import DataSpec
from engine.influence.api import compute_influence
from engine.influence.methods import get_method, run_method
from engine.influence.queries import Query
from engine.influence.votes import attack_features, successful_attacks, vote_scores
from engine.loading import load_run
from engine.train import train

SPEC = DataSpec(
    dataset="digits", classes=[1, 7], n_train=200, n_val=40, n_test=50, backdoor="1:7",
    backdoor_rate=0.1,
)  # fmt: skip
CFG = TrainConfig(model="mlp", widths=[16], epochs=6, batch_size=16, lr=0.1)


@pytest.fixture(scope="module")
def bd_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("votes") / "run"
    train(run, SPEC, CFG)
    return run


def _poisoned(run: Path) -> np.ndarray:
    b = load_run(run).bundle
    ids = set(b.poisoned_ids())
    return np.array([i in ids for i in b.train.ids], dtype=bool)


def test_successful_attacks_are_test2_images_sent_to_the_target(bd_run: Path) -> None:
    loaded = load_run(bd_run)
    ids = successful_attacks(loaded)
    b = loaded.bundle
    assert b.attack is not None
    assert ids, "the tiny run must learn the backdoor for the test to mean anything"
    assert set(ids) <= set(b.attack.ids)
    assert all(i.endswith("+wm") for i in ids)


def test_poisoned_ids_dominate_the_top(bd_run: Path) -> None:
    pois = _poisoned(bd_run)
    n_p = int(pois.sum())
    assert n_p >= 2
    frame = compute_influence(bd_run, "attack-votes")
    scores = frame["score"].to_numpy()
    assert list(frame["sample_id"]) == list(load_run(bd_run).bundle.train.ids)
    top = np.argsort(scores, kind="stable")[:n_p]
    assert pois[top].sum() > n_p / 2  # most of the top n are poisoned (base rate ~5%)
    assert pois[np.argmin(scores)]


def test_exact_features_give_the_per_test_sample_hydra_scores(bd_run: Path) -> None:
    loaded = load_run(bd_run)
    ids = successful_attacks(loaded)[:3]
    _, s = attack_features(loaded, ids, base="hydra")
    ref = run_method("hydra", loaded, Query("test", tuple(ids)))
    np.testing.assert_allclose(s, ref, rtol=1e-6, atol=1e-9 * np.abs(ref).max())


def test_vote_scores_ranks_and_options() -> None:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(6, 4))
    feats[1] = feats[0] * 2.0  # same direction as sample 0
    s = rng.normal(size=(6, 5))
    s[0] -= 10.0  # sample 0 is every attack's top harmful one
    sim = vote_scores(feats, s)
    assert sim[0] == pytest.approx(-1.0) and sim[1] == pytest.approx(-1.0)
    assert (sim[2:] > -1.0 + 1e-9).all()
    assert np.argmin(vote_scores(feats, s, rank="votes")) == 0
    np.testing.assert_allclose(vote_scores(feats, s, rank="sum"), s.sum(axis=1))
    with pytest.raises(ConfigError, match="rank"):
        vote_scores(feats, s, rank="median")
    assert not get_method("attack-votes").uses_query


def test_needs_a_backdoored_run(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    train(plain, DataSpec(dataset="digits", classes=[1, 7], n_train=60, n_val=20, n_test=20), CFG)
    with pytest.raises(ConfigError, match="backdoored run"):
        run_method("attack-votes", load_run(plain), Query("val"))
