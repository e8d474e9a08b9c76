"""Label-error clustering (HYDRA Table 4): signs, 2-means per class, the flagged cluster."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from engine.analysis.clustering import (
    cluster_label_errors,
    flipped_mask,
    jaccard,
    sign_clusters,
)
from engine.config import ConfigError


def test_jaccard_is_intersection_over_union() -> None:
    a = np.array([1, 1, 0, 0], bool)
    b = np.array([0, 1, 1, 0], bool)
    assert jaccard(a, b) == pytest.approx(1 / 3)
    assert jaccard(a, a) == 1.0
    assert math.isnan(jaccard(np.zeros(3, bool), np.zeros(3, bool)))


def test_sign_clusters_flag_the_harmful_group_in_each_class() -> None:
    """Two classes; in each, a group whose sign pattern is the mirror of the rest and whose
    contributions are negative on average must be the flagged cluster."""
    rng = np.random.default_rng(0)
    n, m = 60, 40
    labels = np.repeat([0, 1], n // 2)
    bad = np.zeros(n, bool)
    bad[rng.choice(np.flatnonzero(labels == 0), 9, replace=False)] = True
    bad[rng.choice(np.flatnonzero(labels == 1), 6, replace=False)] = True
    pattern = np.where(rng.random(m) < 0.7, 1.0, -1.0)  # mostly helpful for the clean samples
    contrib = np.abs(rng.normal(size=(n, m))) * np.where(bad[:, None], -pattern, pattern)
    flip = rng.random((n, m)) < 0.05  # a little sign noise
    contrib[flip] *= -1
    flagged, rows = sign_clusters(contrib, labels)
    assert np.array_equal(flagged, bad)
    for r in rows:
        assert r["mean_flagged"] < r["mean_other"]
        assert r["n_flagged"] == int(bad[labels == r["class"]].sum())


def test_a_class_with_one_sign_pattern_is_not_split() -> None:
    contrib = np.tile([1.0, -2.0, 3.0], (5, 1))
    flagged, rows = sign_clusters(contrib, np.zeros(5, int))
    assert not flagged.any()
    assert rows[0]["n_flagged"] == 0


@pytest.mark.slow
def test_clustering_recovers_an_obviously_separated_flipped_set(noisy_run: Path) -> None:
    """40% pair noise on four digit classes: the flipped images of class c sit in class c+1 and
    hurt its validation samples; the flagged clusters must overlap them far beyond chance."""
    res = cluster_label_errors(noisy_run, method="hydra", exact=True, m=1000)
    assert res["known_errors"] and res["n_flipped"] == 80
    assert res["m"] == 80  # capped at the validation size
    assert res["jaccard_flipped"] > 0.6
    assert res["jaccard_clean"] > 0.6
    flips = flipped_mask(_loaded(noisy_run))
    assert flips is not None and int(flips.sum()) == res["n_flipped"]
    saved = list((noisy_run / "experiments").glob("cluster-*/result.json"))
    assert saved


def test_run_without_known_errors_reports_no_jaccard(tiny_run: Path) -> None:
    res = cluster_label_errors(tiny_run, method="tracin", exact=True, m=15, save=False)
    assert res["m"] == 15
    assert not res["known_errors"]
    assert math.isnan(res["jaccard_flipped"])
    assert set(res["flagged_ids"]) <= set(_loaded(tiny_run).bundle.train.ids)
    assert sum(r["n"] for r in res["classes"]) == res["n_train"]


def test_clustering_refuses_a_method_without_a_trajectory(tiny_run: Path) -> None:
    with pytest.raises(ConfigError):
        cluster_label_errors(tiny_run, method="loss", save=False)
    with pytest.raises(ConfigError):
        cluster_label_errors(tiny_run, m=0, save=False)


def _loaded(run_dir: Path):  # type: ignore[no-untyped-def]
    from engine.loading import open_run

    return open_run(run_dir)
