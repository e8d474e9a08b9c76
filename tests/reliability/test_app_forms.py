"""Bad input in the app's training form: one error line in the page, no traceback, no job
started and nothing written to the workspace. (A path that does not exist:
tests/app/test_runs_page.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.reliability.conftest import snapshot

PAGE = str(Path(__file__).resolve().parents[2] / "app" / "views" / "runs.py")


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.setenv("RETRACER_WORKSPACE", str(ws))
    return ws


def test_bad_training_form_input_starts_nothing(workspace: Path, tmp_path: Path) -> None:
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    before = snapshot(workspace)
    cases = [
        ("csv", {"runs-csv-path": str(tmp_path / "folder.csv")}, "is not a file"),
        ("csv", {"runs-csv-path": ""}, "enter the path of the CSV file"),
        ("imagefolder", {"runs-imagefolder-path": str(tmp_path / "notes.txt")}, "is a file"),
        # a setting is named by its form label (engine.options), not by a CLI flag
        (
            "sample",
            {"runs-sample-classes": "1,x"},
            "Classes to keep must be comma-separated integers",
        ),
        ("sample", {"runs-sample-size": "big"}, "Image size must look like 28x28, got 'big'"),
        ("sample", {"runs-sample-backdoor": "3"}, "Backdoor must look like a:b (class numbers)"),
        ("zip", {}, "choose a zip file of an ImageFolder first"),
    ]
    labels = {
        "csv": "CSV file (path,label[,split])",
        "imagefolder": "ImageFolder path",
        "sample": "Bundled sample (digits with mislabeled images)",
        "zip": "Upload a zip of an ImageFolder",
    }
    for src, fields, expect in cases:
        at.selectbox(key="runs-source").set_value(labels[src]).run()
        for key, value in fields.items():
            at.text_input(key=key).set_value(value).run()
        at.button(key="runs-train").click().run()
        assert not at.exception, (src, fields)
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and expect in errors[0], (src, fields, errors)
        for key in fields:  # back to a good value for the next case
            at.text_input(key=key).set_value("").run()
    assert snapshot(workspace) == before and not (workspace / ".jobs").exists()
