"""Class heatmap page: offers the class-query job, then draws the matrix as a clickable scatter;
a click (or the select boxes) lists the training images of that class with tick boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from app.components.heatmap import cell_from_event, heatmap_figure, top_cells
from engine.jobs import list_jobs, wait_job
from engine.selections import load_selections
from tests.app.conftest import page


def _compute_class_query(run_dir: Path) -> AppTest:
    at = AppTest.from_file(page("heatmap.py"), default_timeout=60).run()
    assert not at.exception
    assert any("not computed for this run yet" in i.value for i in at.info)
    assert len(at.get("plotly_chart")) == 0
    at.button(key="heatmap-compute").click().run()
    assert not at.exception
    (job,) = list_jobs(run_dir, kind="influence")
    assert job["params"] == {"method": "hydra", "query": "class"}
    assert wait_job(run_dir, job["id"], timeout=180)["state"] == "done"
    return AppTest.from_file(page("heatmap.py"), default_timeout=60).run()


def test_empty_workspace_says_what_to_do(workspace: Path) -> None:
    at = AppTest.from_file(page("heatmap.py"), default_timeout=60).run()
    assert not at.exception
    assert any("train one" in i.value for i in at.info)


def test_matrix_click_and_gallery(run_dir: Path) -> None:
    at = _compute_class_query(run_dir)
    assert not at.exception
    assert len(at.get("plotly_chart")) == 1
    names = ["1", "7", "3"]
    # a click on the cell (training class "3", test class "1") moves both select boxes there
    at.session_state["heatmap-chart"] = {
        "selection": {
            "points": [{"customdata": [2, 0, -0.1, "3", "1"]}],
            "point_indices": [6],
            "box": [],
            "lasso": [],
        }
    }
    at.run()
    assert not at.exception
    assert at.selectbox(key="heatmap-train-class").value == 2
    assert at.selectbox(key="heatmap-test-class").value == 0
    assert any("labelled **3**" in s.value and "test class **1**" in s.value for s in at.subheader)
    # the gallery holds training images of class "3" only, each with a drop tick box
    boxes = [c for c in at.checkbox if c.key and c.key.startswith("heatmap-harm-drop-")]
    boxes += [c for c in at.checkbox if c.key and c.key.startswith("heatmap-help-drop-")]
    assert boxes
    from engine.data import DataBundle

    b = DataBundle.load(run_dir)
    label = dict(zip(b.train.ids, b.train.labels.tolist(), strict=True))
    ids = [c.key.split("-drop-", 1)[1] for c in boxes]
    assert {label[i] for i in ids} == {names.index("3")}
    boxes[0].check().run()
    assert not at.exception
    assert ids[0] in load_selections(run_dir).drop
    # the normalised view renders too
    at.toggle(key="heatmap-normalised").set_value(True).run()
    assert not at.exception and len(at.get("plotly_chart")) == 1


def test_figure_cells_carry_their_classes() -> None:
    m = np.array([[0.5, -2.0], [-0.1, 0.3]])
    fig = heatmap_figure(m, ["cat", "dog"], selected=(0, 1))
    cd = np.asarray(fig.data[0].customdata, dtype=object)
    assert cd.shape == (4, 5)
    for row in cd:
        a, b, v = int(row[0]), int(row[1]), float(row[2])
        assert v == m[a, b]
    event = {"selection": {"points": [{"customdata": list(cd[1])}]}}
    assert cell_from_event(event) == (0, 1)
    assert cell_from_event(None) is None
    assert top_cells(m, k=2) == [(0, 1, -2.0), (1, 0, -0.1)]
