"""The whole app in a real browser: the demo button (training, scores, the measured
recommendation), ticking the recommended images (which survive a reload), a fresh-seed retrain
against a random control that ends in a proven verdict, and the heatmap, test-sample and
embedding pages.

One test walks the story in order (each step needs the one before); each step saves a screenshot
under tests/e2e/artifacts/. Run it with: .venv/bin/pytest -q -m e2e tests/e2e
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.e2e.conftest import AppServer, publish, screenshot, settle

STEP_TIMEOUT_S = 480


def _run_dir(server: AppServer) -> Path:
    from engine.workspace import current_run

    deadline = time.time() + 30
    while time.time() < deadline:
        run = current_run(server.workspace)
        if run is not None:
            return run
        time.sleep(0.3)
    raise AssertionError("the demo button created no run in the workspace")


def _wait_jobs(
    run: Path, kind: str, *, n: int = 1, timeout: float = STEP_TIMEOUT_S
) -> list[dict[str, Any]]:
    """Wait until `n` jobs of `kind` exist for the run and all of them finished successfully."""
    from engine.jobs import list_jobs, wait_job

    deadline = time.time() + timeout
    while len(found := list_jobs(run, kind=kind)) < n:
        assert time.time() < deadline, f"no {kind} job started within {timeout}s"
        time.sleep(0.5)
    out = []
    for j in found:
        done = wait_job(run, j["id"], timeout=max(1.0, deadline - time.time()))
        assert done["state"] == "done", (
            f"{kind} job failed: {done.get('error') or done.get('message')}"
        )
        out.append(done)
    return out


def _wait_idle(run: Path, timeout: float = STEP_TIMEOUT_S) -> None:
    """Wait until no job of the run is queued or running (chained jobs start one after another)."""
    from engine.jobs import active_job

    deadline = time.time() + timeout
    while active_job(run) is not None:
        assert time.time() < deadline, f"jobs still running after {timeout}s"
        time.sleep(0.5)


def _open(page: Any, server: AppServer, path: str, text: str) -> None:
    page.goto(f"{server.url}/{path}")
    page.get_by_text(text, exact=False).first.wait_for(timeout=60_000)
    settle(page)


def _plotly_charts(page: Any, *, at_least: int = 1, timeout_ms: int = 90_000) -> int:
    loc = page.locator('[data-testid="stPlotlyChart"] .main-svg')
    loc.nth(at_least - 1).wait_for(timeout=timeout_ms)
    return int(page.locator('[data-testid="stPlotlyChart"]').count())


def _drop_boxes(page: Any) -> Any:
    """The gallery's "drop" tick boxes (Streamlit checkbox containers), in page order."""
    return page.locator('[data-testid="stCheckbox"]').filter(
        has=page.get_by_role("checkbox", name="drop", exact=True)
    )


def test_demo_story_in_a_real_browser(page: Any, app_server: AppServer) -> None:
    from engine.selections import load_selections

    server = app_server
    passed: list[str] = []
    try:
        # 1. the first screen: one button trains the demo model, scores every image and
        #    measures which method's suggestions help; the screen says what was found
        _open(page, server, "", "Train the demo model")
        # the toolbar has no "Deploy" button (.streamlit/config.toml: client.toolbarMode viewer)
        assert page.get_by_role("button", name="Deploy").count() == 0
        assert page.get_by_text("Deploy", exact=True).count() == 0
        screenshot(page, "01-runs-empty")
        page.get_by_role("button", name="Train the demo model and find harmful images").click()
        run = _run_dir(server)
        _wait_jobs(run, "train")
        _wait_jobs(run, "score-and-recommend")
        _wait_idle(run)  # the whole chain: a job finishing mid-test reruns the page
        passed.append("train")
        passed.append("score and recommend")
        from engine.recommend import latest_recommendation

        rec = latest_recommendation(run)
        assert rec is not None and rec["method"], rec
        _open(page, server, "", "suggested images")
        page.get_by_text("Tick the recommended").first.wait_for(timeout=60_000)
        passed.append("first screen says what was found")
        screenshot(page, "02-runs-trained")
        _open(page, server, "influence", "Influence")
        page.get_by_text("Recommend: which method").first.scroll_into_view_if_needed()
        screenshot(page, "03-influence")

        # 2. harmful images open on the recommended method: tick its top k in one click,
        #    reload, they are still ticked
        _open(page, server, "harmful", "Harmful images")
        page.get_by_text("Recommended by measurement").first.wait_for(timeout=60_000)
        page.get_by_role("button", name=f"Tick the recommended {len(rec['drop'])}").click()
        deadline = time.time() + 30
        while load_selections(run).drop != set(rec["drop"]):
            assert time.time() < deadline, "the recommended ticks were not saved in the run"
            page.wait_for_timeout(200)
        settle(page)
        passed.append("tick the recommended")
        page.reload()
        page.get_by_text("Harmful images").first.wait_for()
        boxes = _drop_boxes(page)
        boxes.nth(2).wait_for(timeout=60_000)
        settle(page)
        states = [boxes.nth(i).locator("input").is_checked() for i in range(3)]
        assert states == [True, True, True], states
        passed.append("ticks survive reload")
        page.get_by_text("Most harmful").first.scroll_into_view_if_needed()
        publish(screenshot(page, "04-harmful"), "harmful")

        # 3. predict, then prove: fresh paired seeds against a random control
        _open(page, server, "retrain", "Retrain & compare")
        page.get_by_text("images ticked to drop").first.wait_for()
        page.get_by_text("Predicted:").first.wait_for(timeout=60_000)
        page.get_by_text("Fresh seeds: new initial weights").first.click()
        settle(page)
        page.get_by_role("button", name="Retrain and compare").click()
        _wait_jobs(run, "retrain")
        _open(page, server, "retrain", "Retrain & compare")
        for label in (
            "before test accuracy",
            "after test accuracy",
            "random control test accuracy",
        ):
            page.get_by_text(label).first.wait_for(timeout=60_000)
        _plotly_charts(page)
        verdict = page.get_by_text("proven on test accuracy and test loss")
        verdict.first.wait_for(timeout=60_000)
        passed.append("retrain proves it (fresh seeds, random control)")
        verdict.first.scroll_into_view_if_needed()
        publish(screenshot(page, "05-retrain"), "retrain")

        # 4. class heatmap: the demo chain computed it (no button to press), click a cell
        _wait_jobs(run, "influence")
        _open(page, server, "heatmap", "Class heatmap")
        assert page.get_by_role("button", name="Compute the class heatmap with hydra").count() == 0
        _plotly_charts(page)
        page.get_by_text("Training images labelled").first.wait_for()
        passed.append("heatmap figure")
        publish(
            screenshot(page, "06-heatmap"), "heatmap"
        )  # the most harmful pair, chosen by default
        _click_heatmap_cell(page, passed)

        # 5. test sample: build the per-image index, see the influencers of a test image
        _open(page, server, "test_sample", "Test sample")
        page.get_by_role("button", name="Build the hydra index").click()
        _wait_jobs(run, "projected-store")
        _open(page, server, "test_sample", "Test sample")
        _plotly_charts(page)
        page.get_by_text("Raise its loss").first.wait_for()
        passed.append("test-sample figure")
        page.locator('[data-testid="stPlotlyChart"]').first.scroll_into_view_if_needed()
        screenshot(page, "07-test-sample")

        # 6. embedding map: PCA at once; a lasso around part of it offers to tick the selection
        _open(page, server, "embedding", "Embedding map")
        _plotly_charts(page)
        passed.append("embedding figure")
        _lasso(page, passed)
        screenshot(page, "08-embedding")
    except BaseException:
        screenshot(page, "99-failure")
        raise
    finally:
        (Path(__file__).parent / "artifacts" / "steps-passed.txt").write_text(
            "\n".join(passed) + "\n"
        )


def _click_heatmap_cell(page: Any, passed: list[str]) -> None:
    """Click one square of the matrix and check the chosen cell follows (a real plotly click).

    Plotly takes a click's point from the hover state, so the mouse hovers before it clicks.
    """
    before = page.get_by_text("Training images labelled").first.inner_text()
    points = page.locator('[data-testid="stPlotlyChart"] .scatterlayer .trace').first.locator(
        "path.point"
    )
    for i in range(min(points.count(), 4)):
        bb = points.nth(i).bounding_box()
        if bb is None:
            continue
        x, y = bb["x"] + bb["width"] / 2, bb["y"] + bb["height"] / 2
        page.mouse.move(x - 3, y - 3)
        page.mouse.move(x, y, steps=4)
        page.wait_for_timeout(300)
        page.mouse.click(x, y)
        settle(page)
        page.wait_for_timeout(1000)
        now = page.get_by_text("Training images labelled").first.inner_text()
        if now != before:
            passed.append("heatmap click selects a cell")
            return
    raise AssertionError("clicking the heatmap cells never changed the chosen cell")


def _lasso(page: Any, passed: list[str]) -> None:
    """Drag a lasso around the middle of the map; the page then offers to tick the selection."""
    box = page.locator('[data-testid="stPlotlyChart"] .nsewdrag').first.bounding_box()
    assert box is not None
    cx, cy, rx, ry = (
        box["x"] + box["width"] / 2,
        box["y"] + box["height"] / 2,
        box["width"] / 3,
        box["height"] / 3,
    )
    page.mouse.move(cx - rx, cy - ry)
    page.mouse.down()
    for x, y in (
        (cx + rx, cy - ry),
        (cx + rx, cy + ry),
        (cx - rx, cy + ry),
        (cx - rx, cy - ry + 2),
    ):
        page.mouse.move(x, y, steps=8)
    page.mouse.up()
    button = page.get_by_role("button", name="Tick these")
    button.first.wait_for(timeout=30_000)
    passed.append("embedding lasso selects points")
