"""The pre-binned score histogram: counts per method on shared bins, nothing per sample."""

from __future__ import annotations

import numpy as np
import pytest

from app.components.histogram import histogram_figure


def test_bars_count_every_finite_score_on_shared_bins() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=51_000), rng.normal(2, 1, size=300)
    b[:3] = np.nan
    fig = histogram_figure({"a": a, "b": b}, bins=60)
    bars = [t for t in fig.data if t.type == "bar"]
    assert [t.name for t in bars] == ["a", "b"]
    assert all(len(t.x) == 60 for t in bars)
    assert np.array_equal(bars[0].x, bars[1].x)  # shared bins: overlaid methods compare
    assert sum(bars[0].y) == 51_000 and sum(bars[1].y) == 297
    lo, hi = min(a.min(), np.nanmin(b)), max(a.max(), np.nanmax(b))
    assert bars[0].x[0] - bars[0].width[0] / 2 == pytest.approx(lo)
    assert bars[0].x[-1] + bars[0].width[-1] / 2 == pytest.approx(hi)
    assert len(fig.to_json()) < 20_000  # a few kB, not every score


def test_no_method_picked_draws_only_the_zero_line() -> None:
    fig = histogram_figure({})
    assert not [t for t in fig.data if t.type == "bar"]
