"""Predict, then prove: the sum of the exact scores, stored beside each retrain's measured change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.config import ConfigError
from engine.influence.api import compute_influence
from engine.prediction import predicted_change, prediction_agreement, prediction_pairs
from engine.retrain import retrain


@pytest.fixture
def run(tiny_copy: Path) -> Path:
    return tiny_copy


def test_predicted_change_is_the_sum_of_the_exact_scores(run: Path) -> None:
    assert np.isnan(predicted_change(run, ["digits-0001"]))  # nothing stored yet
    s = compute_influence(run, "sgd-influence")
    drop = s.sample_id.tolist()[:7]
    assert predicted_change(run, drop) == pytest.approx(float(s.score.iloc[:7].sum()))
    with pytest.raises(ConfigError, match="not a training sample"):
        predicted_change(run, ["nope"])


def test_each_retrain_keeps_its_prediction_and_measurement(run: Path) -> None:
    s = compute_influence(run, "sgd-influence").sort_values("score", kind="stable")
    for k in (3, 10, 25):
        res = retrain(run, drop=s.sample_id.tolist()[:k], mode="all", control_draws=1)
        assert res["predicted"]["val_loss_change"] == pytest.approx(s.score.iloc[:k].sum())
        b = res["before"]["summary"]["val_loss"]["mean"]
        a = res["after"]["summary"]["val_loss"]["mean"]
        assert res["measured_val_loss_change"] == pytest.approx(a - b)
    rel = retrain(run, relabel={s.sample_id.iloc[0]: 0}, mode="all", control=None)
    assert rel["predicted"] is None  # a relabel is not a removal: no prediction
    pairs = prediction_pairs(run)
    assert len(pairs) == 3 and list(pairs["n_drop"]) == [25, 10, 3]
    agree = prediction_agreement(pairs)
    assert agree["n"] == 3 and -1 <= agree["spearman"] <= 1 and 0 <= agree["sign_agreement"] <= 1
    assert np.isnan(prediction_agreement(pairs.iloc[:0])["pearson"])
