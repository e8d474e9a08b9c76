"""A backdoored run in a real browser: the Test-sample page opened on a watermarked test image
shows a poisoned training image as its top (most harmful) influencer.

The run is prepared with the engine (a small mlp on digits 1/7/3 with 20% of the 1s stamped with
an X and labelled 7, and the hydra index built), then made the app's current run.
Run it with: .venv/bin/pytest -q -m e2e tests/e2e/test_backdoor_browser.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import AppServer, screenshot, settle

pytestmark = pytest.mark.e2e


@pytest.fixture()
def backdoor_run(app_server: AppServer) -> Path:
    from engine.config import TrainConfig
    from engine.data import DataSpec
    from engine.influence.api import build_projected_store
    from engine.train import train
    from engine.workspace import set_current_run

    run = app_server.workspace / "backdoor-digits"
    spec = DataSpec(
        dataset="digits",
        classes=[1, 7, 3],
        n_train=240,
        n_val=60,
        n_test=75,
        backdoor="1:7",
        backdoor_rate=0.2,
    )
    train(run, spec, TrainConfig(model="mlp", widths=[16], epochs=6, batch_size=16, lr=0.1))
    build_projected_store(run, "hydra")
    set_current_run(run, app_server.workspace)
    return run


def test_watermarked_image_is_explained_by_poisoned_images(
    page: Any, app_server: AppServer, backdoor_run: Path
) -> None:
    from engine.data import DataBundle

    bundle = DataBundle.load(backdoor_run)
    poisoned = set(bundle.poisoned_ids())
    train_ids = set(bundle.train.ids)
    assert poisoned
    try:
        page.goto(f"{app_server.url}/test_sample")
        page.get_by_text("Test sample", exact=False).first.wait_for(timeout=60_000)
        settle(page)
        page.get_by_text("watermarked (test-2)").first.click()
        settle(page)
        # the default pick is the first watermarked image the model gets wrong (sent to 7)
        page.get_by_text("+wm", exact=False).first.wait_for(timeout=60_000)
        page.get_by_text("Raise its loss").first.wait_for(timeout=90_000)
        settle(page)
        captions = page.locator('[data-testid="stCaptionContainer"]').all_inner_texts()
        shown = [c.strip() for c in captions if c.strip() in train_ids]
        assert shown, f"no training image tiles on the page; captions: {captions[:10]}"
        top = shown[0]  # the harmful tab comes first, most harmful first
        assert top in poisoned, (
            f"top influencer {top} is not one of the poisoned {sorted(poisoned)}"
        )
        screenshot(page, "backdoor-test-sample")
    except BaseException:
        screenshot(page, "99-backdoor-failure")
        raise
