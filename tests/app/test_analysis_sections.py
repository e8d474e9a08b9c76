"""The analysis sections: suspicious clusters on Harmful images, fast vs exact on Influence."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.selections import load_selections
from tests.app.conftest import page


def test_cluster_section_asks_to_run_first(run_dir: Path) -> None:
    at = AppTest.from_file(page("harmful.py"), default_timeout=30).run()
    assert not at.exception
    assert any("No clustering yet" in i.value for i in at.info)
    assert at.button(key="harmful-cluster-run") is not None


def test_flagged_cluster_is_ticked_in_one_click(run_dir: Path) -> None:
    from engine.analysis.clustering import cluster_label_errors

    res = cluster_label_errors(run_dir, method="hydra", m=20, exact=True)
    assert res["flagged_ids"]
    at = AppTest.from_file(page("harmful.py"), default_timeout=30).run()
    assert not at.exception
    assert any("Jaccard" in m.value for m in at.markdown)  # the tiny run has injected noise
    tick = at.button(key="harmful-cluster-tick")
    assert str(len(res["flagged_ids"])) in tick.label
    tick.click().run()
    assert not at.exception
    assert load_selections(run_dir).drop == set(res["flagged_ids"])
    assert at.button(key="harmful-cluster-tick").disabled


@pytest.mark.slow
def test_agreement_section_shows_metrics_and_figure(run_dir: Path) -> None:
    from engine.analysis.agreement import agreement

    res = agreement(run_dir, fast="hydra", exact="sgd-influence", n_samples=2, points=5)
    at = AppTest.from_file(page("influence.py"), default_timeout=30).run()
    assert not at.exception
    labels = {m.label: m.value for m in at.metric}
    assert labels["Sign errors"] == f"{res['sign_error_rate']:.1%}"
    assert labels["Spearman"] == f"{res['spearman']:.3f}"
    assert at.get("plotly_chart")
