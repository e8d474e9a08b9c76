"""Agreement of a fast estimator with exact SGD-Influence (HYDRA Figs. 3-5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.analysis.agreement import agreement, agreement_figure, score_agreement, sensitivities
from engine.config import ConfigError


def test_score_agreement_of_a_vector_with_itself() -> None:
    x = np.random.default_rng(0).normal(size=50)
    r = score_agreement(x, x)
    assert r["sign_error_rate"] == 0.0
    assert r["spearman"] == 1.0
    assert r["top10_overlap"] == 1.0


def test_score_agreement_counts_sign_flips_and_reversed_ranks() -> None:
    x = np.arange(1.0, 11.0)
    r = score_agreement(x, -x)
    assert r["sign_error_rate"] == 1.0
    assert r["spearman"] == pytest.approx(-1.0)
    y = x.copy()
    y[:3] *= -1  # three sign errors
    assert score_agreement(x, y)["sign_error_rate"] == pytest.approx(0.3)
    with pytest.raises(ConfigError):
        score_agreement(x, x[:5])


def test_a_method_agrees_perfectly_with_itself(noisy_run: Path) -> None:
    res = agreement(noisy_run, fast="hydra", exact="hydra", n_samples=3, save=False)
    assert res["sign_error_rate"] == 0.0
    assert res["spearman"] == 1.0
    assert len(res["sample_ids"]) == 3
    assert np.all(np.asarray(res["error_mean"]) == 0.0)
    assert res["exact_norm_mean"][-1] > 0


@pytest.mark.slow
def test_forward_sensitivities_give_each_methods_adjoint_scores(noisy_run: Path) -> None:
    """-<u, d theta_T / d w_k> from the unrolled forward recursion equals the adjoint pass's score_k
    for exact curvature, the last-epoch window, hydra and tracin (float64)."""
    from engine.influence.api import compute_influence
    from engine.influence.queries import Query, flat_query_gradients
    from engine.loading import open_run

    loaded = open_run(noisy_run)
    u = flat_query_gradients(loaded, Query("val"), loaded.final_theta).detach()[:, 0]
    pick = np.array([0, 17, 101, 199])
    methods = ("sgd-influence", "sgd-influence-last", "hydra", "tracin")
    sens = sensitivities(loaded, pick, methods, every=40)
    assert sens["steps"][0] == 0 and sens["steps"][-1] == loaded.traj.n_steps
    for m in methods:
        scores = compute_influence(noisy_run, m, overwrite=True)["score"].to_numpy()[pick]
        est = -(u @ sens["final"][m]).numpy()
        assert np.allclose(est, scores, rtol=1e-9, atol=1e-12 * np.abs(scores).max()), m
    # the reference's own difference is zero; the approximations drift away from it
    assert np.all(sens["diff"]["sgd-influence"] == 0)
    assert sens["diff"]["hydra"][-1].mean() > 0


def test_agreement_report_and_figure(noisy_run: Path) -> None:
    res = agreement(noisy_run, fast="tracin", exact="hydra", n_samples=2, points=10)
    assert 0.0 <= res["sign_error_rate"] <= 1.0
    assert -1.0 <= res["spearman"] <= 1.0
    assert len(res["steps"]) == len(res["error_mean"]) == len(res["epochs"])
    assert res["error_mean"][0] == 0.0  # both start at d theta_0 / d w = 0
    assert Path(res["path"], "result.json").is_file()
    assert Path(res["figure"]["html"]).is_file()
    fig = agreement_figure(res)
    assert len(fig.data) == 2


def test_agreement_needs_trajectory_methods(noisy_run: Path) -> None:
    with pytest.raises(ConfigError):
        agreement(noisy_run, fast="loss", exact="sgd-influence", n_samples=2, save=False)
