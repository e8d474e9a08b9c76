"""Summaries, comparisons and the verdicts: one rule for the sentence and its kind."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from engine.stats import (
    compare,
    fmt_p,
    holm,
    metric_kind,
    overall_kind,
    resolution,
    summarize,
    verdict,
)


def test_summarize() -> None:
    s = summarize([0.9, 0.92, 0.94])
    assert s["mean"] == pytest.approx(0.92) and s["std"] == pytest.approx(0.02) and s["n"] == 3
    assert summarize([0.5])["std"] == 0.0
    assert math.isnan(summarize([])["mean"])


def test_compare_welch_and_paired_match_scipy() -> None:
    a, b = [0.91, 0.93, 0.95, 0.94], [0.90, 0.89, 0.92]
    w = compare(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert w["test"] == "welch" and w["p"] == pytest.approx(ref.pvalue)
    assert w["t"] == pytest.approx(ref.statistic)
    a, b = [0.91, 0.93, 0.95], [0.90, 0.925, 0.94]
    p = compare(a, b, paired=True)
    assert p["test"] == "paired" and p["p"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    # pairing removes the seeds' shared variance: far more power than Welch here
    assert p["p"] < 0.05 < compare(a, b)["p"]
    with pytest.raises(ValueError, match="equal sizes"):
        compare([0.9, 0.8], [0.7], paired=True)


def test_one_exact_value_against_draws_uses_a_prediction_interval() -> None:
    """A one-sample t on the draws' mean becomes 'significant' as draws are added though the
    exact value sits at the same place in their distribution; the prediction test does not."""
    rng = np.random.default_rng(0)
    few = rng.normal(0.90, 0.01, size=3)
    many = rng.normal(0.90, 0.01, size=300)
    many = (many - many.mean()) / many.std(ddof=1) * few.std(ddof=1) + few.mean()
    x = float(few.mean() + 1.2 * few.std(ddof=1))  # 1.2 standard deviations above the draws
    p_few, p_many = compare([x], few)["p"], compare([x], many)["p"]
    assert compare([x], many)["test"] == "prediction"
    assert p_many > 0.2 and p_few > 0.2  # an ordinary draw is as far out as this
    assert sps.ttest_1samp(many, x).pvalue < 1e-30  # what the old test reported
    t = (x - many.mean()) / (many.std(ddof=1) * math.sqrt(1 + 1 / 300))
    assert p_many == pytest.approx(2 * sps.t.sf(abs(t), df=299))
    assert compare(few, [x])["t"] == pytest.approx(-compare([x], few)["t"])


def test_no_spread_has_no_p_value_unless_nothing_moved() -> None:
    assert compare([0.9, 0.9], [0.8, 0.8])["p"] is None  # was p = 0 for any difference
    assert compare([0.9, 0.9], [0.8, 0.8])["test"] == "constant"
    assert compare([0.9, 0.9], [0.9, 0.9])["p"] == 1.0
    assert compare([0.9], [0.8])["test"] == "exact" and compare([0.9], [0.8])["p"] is None
    assert compare([], [0.8])["test"] == "empty"


def test_holm_adjusts_a_family_of_p_values() -> None:
    assert holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None], nan_ok=True)
    assert holm([]) == []


def test_fmt_p() -> None:
    assert fmt_p(0.0004) == "p < 0.001" and fmt_p(0.004) == "p = 0.004" and fmt_p(0.2) == "p = 0.20"
    assert fmt_p(0.053) == "p = 0.053"  # not "0.05", which would read as at the threshold
    assert fmt_p(None) == ""


def test_improved_needs_to_beat_before_not_only_a_weak_control() -> None:
    before = [0.90, 0.91, 0.92, 0.90, 0.91]
    after = [b + 0.001 * s for b, s in zip(before, (1, -1, 2, 1, 0), strict=True)]
    weak = [0.80, 0.81, 0.79, 0.80, 0.82]  # far below before
    kw = dict(after=after, before=before, control=weak, paired=True)
    assert compare(after, weak, paired=True)["p"] < 0.001
    assert compare(after, before, paired=True)["p"] > 0.05
    assert metric_kind(**kw) == "inconclusive"  # was "improved"
    strong = [b + 0.02 + 0.002 * s for b, s in zip(before, (1, -1, 2, 1, 0), strict=True)]
    assert metric_kind(after=strong, before=before, control=weak, paired=True) == "improved"


def test_worse_needs_significance() -> None:
    before = [0.90, 0.91, 0.92, 0.90, 0.91]
    noisy = [0.905, 0.90, 0.925, 0.885, 0.90]  # lower on average, but chance could do that
    assert compare(noisy, before, paired=True)["p"] > 0.05
    assert metric_kind(after=noisy, before=before, control=None, paired=True) == "inconclusive"
    bad = [b - 0.03 for b in before]
    bad[0] -= 0.002
    assert metric_kind(after=bad, before=before, control=None, paired=True) == "worse"
    # an exact retrain lower than before but inside what random removal does: not worse
    assert metric_kind(after=[0.945], before=[0.95], control=[0.94, 0.95, 0.945]) == "inconclusive"
    assert metric_kind(after=[0.90], before=[0.95], control=[0.949, 0.951, 0.95]) == "worse"


def test_empty_groups_are_inconclusive() -> None:
    assert metric_kind(after=[], before=[0.9], control=None) == "inconclusive"  # was "improved"
    text, kind = verdict({"after": None, "before": None, "control": None}, n_drop=3)
    assert kind == "inconclusive" and "No retraining results" in text


def test_lower_loss_is_better() -> None:
    kw = dict(before=[0.40, 0.42, 0.41], control=[0.41, 0.43, 0.40], paired=True)
    assert metric_kind(after=[0.20, 0.23, 0.21], higher_is_better=False, **kw) == "improved"
    assert metric_kind(after=[0.60, 0.63, 0.61], higher_is_better=False, **kw) == "worse"


def test_overall_kind() -> None:
    assert overall_kind({"a": "improved", "l": "inconclusive"}) == "improved"
    assert overall_kind({"a": "improved", "l": "worse"}) == "mixed"
    assert overall_kind({"a": "worse", "l": "unchanged"}) == "worse"
    assert overall_kind({"a": "unchanged", "l": "unchanged"}) == "unchanged"
    assert overall_kind({"a": "inconclusive", "l": "unchanged"}) == "inconclusive"


def _groups(after_acc, after_loss, before_acc, before_loss, ctrl_acc=None, ctrl_loss=None):  # type: ignore[no-untyped-def]
    ctrl = None if ctrl_acc is None else {"test_acc": ctrl_acc, "test_loss": ctrl_loss}
    return {
        "after": {"test_acc": after_acc, "test_loss": after_loss},
        "before": {"test_acc": before_acc, "test_loss": before_loss},
        "control": ctrl,
    }


def test_verdict_cites_both_metrics_their_p_values_and_the_test_size() -> None:
    g = _groups(
        [0.962, 0.965, 0.960], [0.20, 0.21, 0.19],
        [0.950, 0.948, 0.951], [0.40, 0.41, 0.42],
        [0.949, 0.950, 0.948], [0.41, 0.40, 0.43],
    )  # fmt: skip
    text, kind = verdict(g, n_drop=30, n_test=500, paired=True)
    assert kind == "improved"
    assert text.startswith(
        "Removing these 30 images raised test accuracy by 1.3 points and lowered loss by 0.210"
    )
    assert (
        "removing 30 random images changed accuracy by -0.1 points and loss by +0.003 on average"
        in text
    )
    assert "proven on test accuracy and test loss" in text
    assert "not a matter of removing any 30 images" in text
    assert "accuracy p = 0.004, loss p = 0.005; paired by seed" in text
    assert "500 test images: one image is 0.20 points" in text


def test_verdict_loss_proven_accuracy_not() -> None:
    """The oracle on the old demo: test loss halves, accuracy moves within chance. Proven, on loss."""
    g = _groups(
        [0.93, 0.92, 0.935, 0.925], [0.21, 0.22, 0.20, 0.215],
        [0.915, 0.93, 0.92, 0.91], [0.40, 0.41, 0.39, 0.42],
        [0.925, 0.91, 0.94, 0.915], [0.41, 0.40, 0.42, 0.41],
    )  # fmt: skip
    text, kind = verdict(g, n_drop=144, n_test=300, paired=True)
    assert kind == "improved" and "proven on test loss —" in text


def test_verdict_kinds_match_the_sentences() -> None:
    cases = [
        (_groups([0.96], [0.39], [0.95], [0.4], [0.955, 0.965, 0.96], [0.38, 0.41, 0.40]),
         "inconclusive", "no proof these images were the problem"),
        (_groups([0.90], [0.6], [0.95], [0.4], [0.949, 0.951, 0.95], [0.40, 0.41, 0.405]),
         "worse", "got worse: these images were helping the model"),
        (_groups([0.95], [0.4], [0.95], [0.4]), "unchanged", "were not hurting"),
        (_groups([0.97], [0.3], [0.95], [0.4]), "improved", "proven"),
        (_groups([0.96, 0.95, 0.97], [0.4, 0.41, 0.39], [0.95, 0.96, 0.95], [0.4, 0.39, 0.41]),
         "inconclusive", "could be chance"),
        (_groups([0.97, 0.975, 0.972], [0.6, 0.62, 0.61], [0.95, 0.951, 0.949], [0.4, 0.41, 0.42],
                 [0.94, 0.945, 0.95], [0.4, 0.41, 0.4]), "mixed", "disagree"),
    ]  # fmt: skip
    for g, kind, words in cases:
        text, k = verdict(g, n_drop=5, paired=len(g["after"]["test_acc"]) > 1)
        assert k == kind, (g, text)
        assert words in text, (kind, text)


def test_resolution() -> None:
    r = resolution(500, 0.9)
    assert r["one_image"] == pytest.approx(0.002)
    assert r["margin"] == pytest.approx(1.96 * math.sqrt(0.09 / 500))
