"""Influence page: shows the scores and their timing; Compute starts a chained job."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.jobs import list_jobs, wait_job
from tests.app.conftest import TINY_METHOD, page


def test_no_run_says_what_to_do(workspace: Path) -> None:
    at = AppTest.from_file(page("influence.py"), default_timeout=30).run()
    assert not at.exception
    assert any("No run yet" in i.value for i in at.info)


def test_shows_scores_sign_and_histogram(run_dir: Path) -> None:
    at = AppTest.from_file(page("influence.py"), default_timeout=30).run()
    assert not at.exception
    assert any(
        "negative = removing it would lower the validation loss" in m.value for m in at.markdown
    )
    rows = at.dataframe[0].value
    assert list(rows["method"]) == [TINY_METHOD]
    from engine.export import method_scores

    assert rows["harmful (score < 0)"].iloc[0] == int(
        (method_scores(run_dir, TINY_METHOD) < 0).sum()
    )
    assert len(at.get("plotly_chart")) == 1


@pytest.mark.slow
def test_compute_runs_two_methods_one_after_the_other(run_dir: Path) -> None:
    at = AppTest.from_file(page("influence.py"), default_timeout=30).run()
    at.multiselect(key="influence-methods").set_value(["hydra", "sgd-influence-last"]).run()
    at.button(key="influence-compute").click().run()
    assert not at.exception
    (first,) = list_jobs(run_dir, kind="influence")
    assert first["params"]["method"] == "hydra"
    done = wait_job(run_dir, first["id"], timeout=120)
    assert done["state"] == "done", done
    (second,) = done["next_jobs"]
    assert wait_job(run_dir, second, timeout=120)["state"] == "done"
    at.run()
    assert set(at.dataframe[0].value["method"]) == {TINY_METHOD, "hydra", "sgd-influence-last"}
