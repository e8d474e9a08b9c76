"""Retrain & compare page: says what to do with nothing ticked; retrains the ticked set against a
random control in a background job and shows before / after / control accuracy and the verdict."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from engine.data import DataBundle
from engine.jobs import list_jobs, wait_job
from engine.selections import load_selections, set_drop
from tests.app.conftest import page


def test_nothing_ticked_explains_and_disables_retrain(run_dir: Path) -> None:
    at = AppTest.from_file(page("retrain.py"), default_timeout=60).run()
    assert not at.exception
    assert any("Nothing is ticked yet" in i.value for i in at.info)
    assert at.button(key="retrain-start").disabled
    assert any("No retraining yet" in i.value for i in at.info)


def test_retrain_with_random_control_shows_the_comparison(run_dir: Path) -> None:
    ids = DataBundle.load(run_dir).train.ids[:3]
    set_drop(run_dir, ids, True)
    at = AppTest.from_file(page("retrain.py"), default_timeout=60).run()
    assert not at.exception
    assert any("**3** images ticked to drop" in m.value for m in at.markdown)
    assert not at.button(key="retrain-start").disabled
    at.number_input(key="retrain-draws").set_value(2)
    at.button(key="retrain-start").click().run()
    assert not at.exception
    (job,) = list_jobs(run_dir, kind="retrain")
    assert job["params"]["control"] == "random" and job["params"]["mode"] == "all"
    done = wait_job(run_dir, job["id"], timeout=180)
    assert done["state"] == "done", done
    at = AppTest.from_file(page("retrain.py"), default_timeout=60).run()
    assert not at.exception
    labels = [m.label for m in at.metric]
    assert labels == ["before test accuracy", "after test accuracy", "random control test accuracy"]
    assert all(v.value.endswith("%") or "±" in v.value for v in at.metric)
    boxes = {
        kind: [b.value for b in getattr(at, kind) if "Removing these 3 images" in b.value]
        for kind in ("success", "warning", "info")
    }
    ((kind, (text,)),) = [(k, v) for k, v in boxes.items() if v]
    # the box's colour follows the stored verdict kind: improved green, inconclusive / mixed
    # amber, the rest (worse, unchanged) neutral
    verdict_kind = done["result"]["verdict_kind"]
    expected = {"improved": "success", "inconclusive": "warning", "mixed": "warning"}.get(
        verdict_kind, "info"
    )
    assert kind == expected, (kind, verdict_kind, text)
    hist = at.dataframe[-1].value
    assert len(hist) == 1 and int(hist["dropped"].iloc[0]) == 3


def test_unticking_a_tile_removes_it_from_the_set(run_dir: Path) -> None:
    ids = DataBundle.load(run_dir).train.ids[:2]
    set_drop(run_dir, ids, True)
    at = AppTest.from_file(page("retrain.py"), default_timeout=60).run()
    box = at.checkbox(key=f"retrain-set-drop-{ids[0]}")
    assert box.value is True
    box.uncheck().run()
    assert not at.exception
    assert load_selections(run_dir).drop == {ids[1]}
