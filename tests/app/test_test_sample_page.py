"""Test sample page: misclassified images first; builds the per-image index as a job, then shows
the prediction and the training images that raise / lower the chosen image's loss."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from engine.data import DataBundle
from engine.jobs import list_jobs, wait_job
from engine.selections import load_selections
from tests.app.conftest import page


def test_empty_workspace_says_what_to_do(workspace: Path) -> None:
    at = AppTest.from_file(page("test_sample.py"), default_timeout=60).run()
    assert not at.exception
    assert any("train one" in i.value for i in at.info)


def test_index_job_then_influencers_of_a_picked_image(run_dir: Path) -> None:
    at = AppTest.from_file(page("test_sample.py"), default_timeout=60).run()
    assert not at.exception
    test_ids = DataBundle.load(run_dir).test.ids
    assert at.selectbox(key="test-id").value in test_ids
    assert [m.label for m in at.metric] == ["True label", "Predicted", "Confidence"]
    at.button(key="test-store-start").click().run()
    assert not at.exception
    (job,) = list_jobs(run_dir, kind="projected-store")
    assert job["params"] == {"method": "hydra"}
    assert wait_job(run_dir, job["id"], timeout=180)["state"] == "done"

    at = AppTest.from_file(page("test_sample.py"), default_timeout=60).run()
    pick = test_ids[-1]
    at.selectbox(key="test-id").set_value(pick).run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 1
    harm = [c for c in at.checkbox if c.key and c.key.startswith("test-harm-drop-")]
    assert len(harm) == 12  # k = 12 most harmful, each with a drop tick box
    side = at.radio(key="test-side")
    assert side.value == 0 and side.options[0].startswith("Raise its loss")
    harm[0].check().run()
    assert not at.exception
    assert harm[0].key.split("-drop-", 1)[1] in load_selections(run_dir).drop


def test_exact_scores_run_as_a_job(run_dir: Path) -> None:
    at = AppTest.from_file(page("test_sample.py"), default_timeout=60).run()
    sid = at.selectbox(key="test-id").value
    at.toggle(key="test-exact").set_value(True).run()
    assert not at.exception
    at.button(key="test-exact-start").click().run()
    (job,) = list_jobs(run_dir, kind="influence")
    assert job["params"] == {"method": "hydra", "query": f"test:{sid}"}
    assert wait_job(run_dir, job["id"], timeout=180)["state"] == "done"
    at = AppTest.from_file(page("test_sample.py"), default_timeout=60).run()
    at.toggle(key="test-exact").set_value(True).run()
    assert not at.exception
    assert any("Exact adjoint pass" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 1


def test_misclassified_grid_picks_the_image(run_dir: Path) -> None:
    at = AppTest.from_file(page("test_sample.py"), default_timeout=60).run()
    why = [b for b in at.button if b.key and b.key.startswith("test-pick-")]
    from engine.export import run_predictions

    p = run_predictions(run_dir)
    p = p[p["split"] == "test"]
    b = DataBundle.load(run_dir)
    wrong = [
        i
        for i, y, q in zip(b.test.ids, b.test.labels.tolist(), p["predicted"], strict=True)
        if y != q
    ]
    assert wrong and why, "the tiny run mispredicts some test images: the grid must show them"
    assert [w.key.removeprefix("test-pick-") for w in why] == wrong[: len(why)]
    target = why[-1].key.removeprefix("test-pick-")
    why[-1].click().run()
    assert not at.exception
    assert at.selectbox(key="test-id").value == target
