"""Runs & training page: renders empty and with a run; the demo button starts a real job."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from engine.jobs import list_jobs, wait_job
from tests.app.conftest import page


def test_empty_workspace_explains_and_offers_the_demo_button(workspace: Path) -> None:
    at = AppTest.from_file(page("runs.py"), default_timeout=30).run()
    assert not at.exception
    assert any("Train the demo model" in b.label for b in at.button)
    assert any("No runs yet" in i.value for i in at.info)


def test_lists_the_run_with_accuracies(run_dir: Path) -> None:
    at = AppTest.from_file(page("runs.py"), default_timeout=30).run()
    assert not at.exception
    df = at.dataframe[0].value
    assert list(df["name"]) == ["tiny"]
    assert 0.0 <= float(df["test_acc"].iloc[0]) <= 1.0


def test_skipped_source_files_are_listed_for_the_current_run(run_dir: Path) -> None:
    from engine.runs import RunDir

    RunDir(run_dir).write_json("skipped.json", ["/data/cat/broken.png: not an image"])
    at = AppTest.from_file(page("runs.py"), default_timeout=30).run()
    assert not at.exception
    assert any("1 file(s)" in w.value for w in at.warning)
    assert list(at.dataframe[-1].value["file: reason"]) == ["/data/cat/broken.png: not an image"]


def test_bad_form_input_is_one_error_line_not_a_traceback(workspace: Path) -> None:
    at = AppTest.from_file(page("runs.py"), default_timeout=30).run()
    at.selectbox(key="runs-source").set_value("ImageFolder path").run()
    at.text_input(key="runs-imagefolder-path").set_value(str(workspace / "nope")).run()
    at.button(key="runs-train").click().run()
    assert not at.exception
    assert any("does not exist" in e.value for e in at.error)


@pytest.mark.slow
def test_demo_button_trains_in_a_background_job(workspace: Path) -> None:
    at = AppTest.from_file(page("runs.py"), default_timeout=30).run()
    at.button(key="runs-demo").click().run()
    assert not at.exception
    from engine.workspace import current_run

    run = current_run(workspace)
    assert run is not None and run.parent == workspace
    (job,) = list_jobs(run, kind="train")
    done = wait_job(run, job["id"], timeout=180)
    assert done["state"] == "done", done
    # scoring and the recommendation are chained from the training job, so closing the tab
    # would not lose them
    (chain,) = done["next_jobs"]
    c = wait_job(run, chain, timeout=300)
    assert c["state"] == "done", c
    assert c["kind"] == "score-and-recommend"
    (heat,) = c["next_jobs"]  # then the class heatmap's scores: no page is empty after the button
    h = wait_job(run, heat, timeout=300)
    assert h["state"] == "done" and h["kind"] == "influence", h
    from engine.influence.scorestore import ScoreStore

    assert ScoreStore(run).params("hydra", "class") is not None
    from engine.export import score_methods
    from engine.recommend import CANDIDATES, latest_recommendation

    assert score_methods(run) == sorted(CANDIDATES)
    rec = latest_recommendation(run)
    assert rec is not None and rec["method"] in CANDIDATES and len(rec["drop"]) == rec["k"]
    # the first screen says in one sentence what was found and what to do next
    at = AppTest.from_file(page("runs.py"), default_timeout=30).run()
    assert not at.exception
    (found,) = [s.value for s in at.success if "suggested images" in s.value]
    assert f"{rec['k']} suggested images" in found and "known label errors" in found
    assert any("Tick the recommended" in m.value for m in at.markdown)


def test_main_navigates_and_the_sidebar_switches_the_current_run(run_dir: Path) -> None:
    import shutil

    from engine.workspace import current_run

    shutil.copytree(run_dir, run_dir.parent / "second")
    at = AppTest.from_file(
        str(page("runs.py")).replace("views/runs.py", "main.py"), default_timeout=30
    )
    at.run()
    assert not at.exception
    assert at.sidebar.selectbox(key="sidebar-run").value == "tiny"
    at.sidebar.selectbox(key="sidebar-run").set_value("second").run()
    assert not at.exception
    assert current_run(run_dir.parent) == run_dir.parent / "second"
    at.switch_page("views/harmful.py").run()
    assert not at.exception
    assert any(c.key and c.key.startswith("harmful-top-drop-") for c in at.checkbox)


def _train_and_wait(at: AppTest, workspace: Path) -> tuple[Path, dict[str, Any]]:
    """Press Train without the chained scoring; (the new run, its finished training job)."""
    from engine.workspace import current_run

    at.checkbox(key="runs-then").uncheck().run()
    at.button(key="runs-train").click().run()
    assert not at.exception
    run = current_run(workspace)
    assert run is not None
    (job,) = list_jobs(run, kind="train")
    done = wait_job(run, job["id"], timeout=180)
    assert done["state"] == "done", done
    return run, job


@pytest.mark.slow
def test_standardise_checkbox_reaches_the_training_job(workspace: Path) -> None:
    at = AppTest.from_file(page("runs.py"), default_timeout=30).run()
    at.selectbox(key="runs-source").set_value("scikit-learn digits (8x8)").run()
    at.number_input(key="runs-digits-ntrain").set_value(60).run()
    at.number_input(key="runs-digits-epochs").set_value(1).run()
    at.checkbox(key="runs-digits-standardize").check().run()
    run, job = _train_and_wait(at, workspace)
    assert job["params"]["train"]["standardize"] is True
    from engine.loading import load_run

    assert load_run(run).cfg.standardize


def test_head_mode_from_the_form_refuses_a_missing_file_then_trains_on_features(
    workspace: Path, tmp_path: Path
) -> None:
    import torch
    from torchvision.models import resnet18

    at = AppTest.from_file(page("runs.py"), default_timeout=30).run()
    at.selectbox(key="runs-source").set_value("scikit-learn digits (8x8)").run()
    at.number_input(key="runs-digits-ntrain").set_value(60).run()
    at.number_input(key="runs-digits-epochs").set_value(1).run()
    at.selectbox(key="runs-digits-model").set_value("logreg").run()
    at.text_input(key="runs-digits-backbone").set_value("resnet18").run()
    at.text_input(key="runs-digits-bbweights").set_value(str(tmp_path / "none.pth")).run()
    at.checkbox(key="runs-then").uncheck().run()
    at.button(key="runs-train").click().run()
    assert not at.exception
    assert any("backbone weights not found" in e.value for e in at.error)
    from engine.workspace import current_run

    assert current_run(workspace) is None  # nothing was started
    torch.save(resnet18().state_dict(), tmp_path / "r18.pth")
    at.text_input(key="runs-digits-bbweights").set_value(str(tmp_path / "r18.pth")).run()
    at.button(key="runs-train").click().run()
    assert not at.exception
    run = current_run(workspace)
    assert run is not None
    (job,) = list_jobs(run, kind="train")
    assert wait_job(run, job["id"], timeout=180)["state"] == "done"
    from engine.loading import load_run

    assert load_run(run).problem.x.shape[1:] == (512, 1, 1)
    at = AppTest.from_file(page("runs.py"), default_timeout=30).run()
    assert not at.exception
    assert "logreg on resnet18" in at.dataframe[0].value["model"].tolist()


def test_the_resnet_width_reaches_the_training_job(workspace: Path) -> None:
    at = AppTest.from_file(page("runs.py"), default_timeout=30).run()
    at.selectbox(key="runs-source").set_value("scikit-learn digits (8x8)").run()
    assert at.number_input(key="runs-digits-basewidth").disabled  # only the ResNets have one
    at.selectbox(key="runs-digits-model").set_value("resnet9-gn").run()
    at.number_input(key="runs-digits-basewidth").set_value(4).run()
    at.number_input(key="runs-digits-ntrain").set_value(40).run()
    at.number_input(key="runs-digits-epochs").set_value(1).run()
    _, job = _train_and_wait(at, workspace)
    assert job["params"]["train"]["base_width"] == 4
    assert job["params"]["train"]["model"] == "resnet9-gn"


def test_the_executor_setting_is_saved_in_the_workspace(workspace: Path) -> None:
    from engine.executor import ExecutorSettings
    from engine.workspace import executor_settings

    at = AppTest.from_file(page("runs.py"), default_timeout=30).run()
    assert not at.exception
    assert any(e.label.startswith("Where retrains run: on ") for e in at.expander)
    workers = next(n for n in at.number_input if n.label.startswith("Local worker processes"))
    workers.set_value(1)
    next(b for b in at.button if b.label == "Save").click()
    at.run()
    assert not at.exception
    assert executor_settings(workspace) == ExecutorSettings("local", workers=1)
    assert any("one after another" in s.value for s in at.success)
    at = AppTest.from_file(page("runs.py"), default_timeout=30).run()  # a later visit
    assert any(
        e.label == "Where retrains run: in one process, one after another" for e in at.expander
    )


def test_a_running_job_on_a_trained_run_shows_one_progress_and_one_cancel(run_dir: Path) -> None:
    """The first screen asked twice for the active jobs: two Cancel buttons with the same key
    broke the page while the demo chain was scoring."""
    from engine.jobs import cancel_job, job_status, start_job

    jid = start_job(
        "retrain", run_dir=run_dir, params={"mode": "fresh", "seeds": 40, "save": False}
    )
    try:
        deadline = time.time() + 60
        while job_status(run_dir, jid)["state"] != "running":
            assert time.time() < deadline, "the retrain job did not start within 60 s"
            time.sleep(0.2)
        at = AppTest.from_file(page("runs.py"), default_timeout=30).run()
        assert not at.exception, at.exception
        assert [b.label for b in at.button if b.label == "Cancel"] == ["Cancel"]
    finally:
        cancel_job(run_dir, jid)
