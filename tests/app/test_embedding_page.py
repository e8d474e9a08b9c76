"""Embedding map page: PCA map at once, a box/lasso selection ticks images after the confirm button."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from engine.embedding import has_embedding
from engine.jobs import list_jobs
from engine.selections import load_selections
from tests.app.conftest import page


def _chart_selection(rows: list[int]) -> dict[str, object]:
    """What st.plotly_chart(on_select="rerun") reports after a lasso around the map's `rows`
    (customdata = the row)."""
    points = [
        {"curve_number": 0, "point_index": i, "customdata": float(r)} for i, r in enumerate(rows)
    ]
    return {
        "selection": {
            "points": points,
            "point_indices": list(range(len(rows))),
            "box": [],
            "lasso": [{}],
        }
    }


def test_empty_workspace_says_what_to_do(workspace: Path) -> None:
    at = AppTest.from_file(page("embedding.py"), default_timeout=60).run()
    assert not at.exception
    assert any("train one" in i.value for i in at.info)


def test_pca_map_then_lasso_ticks_the_selection(run_dir: Path) -> None:
    at = AppTest.from_file(page("embedding.py"), default_timeout=60).run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 1
    assert has_embedding(run_dir, "pca") and not has_embedding(run_dir, "umap")
    assert any("PCA of 90 training images" in c.value for c in at.caption)
    # no selection yet: nothing is ticked and the page says how to select
    assert load_selections(run_dir).drop == set()
    from engine.embedding import load_embedding

    rows = [5, 0, 17, 3]
    ids = load_embedding(run_dir)["sample_id"].iloc[rows].tolist()  # the map's row order
    at.session_state["embedding-chart"] = _chart_selection(rows)
    at.run()
    assert not at.exception
    assert any("4 images selected" in m.value for m in at.markdown)
    at.button(key="embedding-confirm").click().run()
    assert not at.exception
    assert load_selections(run_dir).drop == set(ids)


def test_colour_by_score_and_noise(run_dir: Path) -> None:
    at = AppTest.from_file(page("embedding.py"), default_timeout=60).run()
    options = at.radio(key="embedding-color").options
    assert "influence score (red = harmful)" in options and "known label error" in options
    at.radio(key="embedding-color").set_value("score").run()
    assert not at.exception and len(at.get("plotly_chart")) == 1
    at.radio(key="embedding-color").set_value("flipped").run()
    assert not at.exception and len(at.get("plotly_chart")) == 1


def test_umap_button_starts_a_background_job(run_dir: Path) -> None:
    at = AppTest.from_file(page("embedding.py"), default_timeout=60).run()
    at.button(key="embedding-umap").click().run()
    assert not at.exception
    (job,) = list_jobs(run_dir, kind="embedding")
    assert job["params"] == {"method": "umap"}
    from engine.jobs import cancel_job

    cancel_job(run_dir, job["id"])  # a real UMAP fit takes a minute; tests/engine covers it
