"""Summaries, Welch's test and the one-sentence verdicts."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sps

from engine.stats import fmt_p, summarize, verdict, verdict_kind, welch


def test_summarize() -> None:
    s = summarize([0.9, 0.92, 0.94])
    assert s["mean"] == pytest.approx(0.92) and s["std"] == pytest.approx(0.02) and s["n"] == 3
    assert summarize([0.5])["std"] == 0.0
    assert math.isnan(summarize([])["mean"])


def test_welch_matches_scipy_and_handles_fixed_values() -> None:
    a, b = [0.91, 0.93, 0.95, 0.94], [0.90, 0.89, 0.92]
    w = welch(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert (
        w["test"] == "welch"
        and w["p"] == pytest.approx(ref.pvalue)
        and w["t"] == pytest.approx(ref.statistic)
    )
    one = welch([0.95], b)
    assert one["test"] == "one-sample" and one["p"] == pytest.approx(
        sps.ttest_1samp(b, 0.95).pvalue
    )
    assert one["t"] > 0 and one["diff"] == pytest.approx(0.95 - sum(b) / 3)
    assert welch([0.9], [0.8])["test"] == "exact" and welch([0.9], [0.8])["p"] is None
    assert welch([0.9, 0.9], [0.8, 0.8])["p"] == 0.0


def test_fmt_p() -> None:
    assert fmt_p(0.0004) == "p < 0.001" and fmt_p(0.004) == "p = 0.004" and fmt_p(0.2) == "p = 0.20"
    assert fmt_p(0.053) == "p = 0.053"  # not "0.05", which would read as at the threshold
    assert fmt_p(None) == ""


def test_verdict_significant_improvement() -> None:
    s = verdict(
        after=[0.962, 0.965, 0.960],
        before=[0.950, 0.948, 0.951],
        control=[0.949, 0.950, 0.948],
        n_drop=30,
    )
    assert s.startswith("Removing these 30 images raised test accuracy by 1.3 points (p")
    assert "removing 30 random images changed it by -0.1 points on average" in s
    assert "the improvement is not a matter of removing any 30 images" in s


def test_verdict_improvement_no_better_than_random() -> None:
    s = verdict(after=[0.96], before=[0.95], control=[0.955, 0.965, 0.96], n_drop=10)
    assert s.startswith("Removing these 10 images raised test accuracy by 1.0 points;")
    assert "no proof these images were the problem" in s


def test_verdict_harmful_removal_and_no_change() -> None:
    s = verdict(after=[0.90], before=[0.95], control=[0.949, 0.951, 0.95], n_drop=1)
    assert s.startswith("Removing this image lowered test accuracy by 5.0 points")
    assert "helping the model" in s
    s = verdict(after=[0.95], before=[0.95], control=None, n_drop=3, n_relabel=0)
    assert s == "Removing these 3 images did not change test accuracy (it moved 0.0 points)."
    s = verdict(after=[0.97], before=[0.95], control=None, n_drop=0, n_relabel=2)
    assert s.startswith("Relabelling these 2 images raised test accuracy by 2.0 points")


def test_verdict_kind_matches_the_sentence() -> None:
    cases = [
        (dict(after=[0.962, 0.965, 0.960], before=[0.950, 0.948, 0.951],
              control=[0.949, 0.950, 0.948]), "improved", "not a matter of"),
        (dict(after=[0.96], before=[0.95], control=[0.955, 0.965, 0.96]), "inconclusive", "no proof"),
        (dict(after=[0.90], before=[0.95], control=[0.949, 0.951, 0.95]), "worse", "lowered"),
        (dict(after=[0.95], before=[0.95], control=None), "unchanged", "did not change"),
        (dict(after=[0.97], before=[0.95], control=None), "improved", "raised"),
        (dict(after=[0.96, 0.95, 0.97], before=[0.95, 0.96, 0.95], control=None), "inconclusive",
         "could be chance"),
    ]  # fmt: skip
    for kw, kind, words in cases:
        assert verdict_kind(**kw) == kind, kw
        assert words in verdict(**kw, n_drop=5), kw
