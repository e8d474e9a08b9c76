"""Real-browser fixtures: a `streamlit run` of the app on a free local port, and Chromium via Playwright.

Playwright's Python package drives Debian's Chromium (/usr/bin/chromium); we never run
`playwright install`. Every test here is skipped, with the reason, when either is missing.
The server gets its own workspace (RETRACER_WORKSPACE) in a temporary folder. Screenshots go to
tests/e2e/artifacts/ (ignored by git).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.serve import AppDidNotStart, AppServer, start_app, stop_app

ROOT = Path(__file__).resolve().parents[2]
__all__ = ["AppServer", "publish", "screenshot", "settle"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = os.environ.get("RETRACER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    reason = browser_missing()
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(here):
            item.add_marker(pytest.mark.e2e)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


def browser_missing() -> str:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (install Debian's chromium package: make chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install -e '.[dev]')"
    return ""


@pytest.fixture(scope="session")
def app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """`streamlit run app/main.py` on a free port, with its own workspace; stopped at the end."""
    workspace = tmp_path_factory.mktemp("e2e-workspace")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        server = start_app(workspace, log=ARTIFACTS / "streamlit.log")
    except AppDidNotStart as e:
        pytest.fail(str(e))
    try:
        yield server
    finally:
        stop_app(server)
        _stop_jobs(workspace)


def _stop_jobs(workspace: Path) -> None:
    """Background jobs run in their own sessions: stop the ones this server started."""
    try:
        from engine.jobs import cancel_job, list_jobs
    except ImportError:
        return
    runs = [p for p in workspace.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for run in runs:
        with contextlib.suppress(Exception):
            for j in list_jobs(run):
                if j.get("state") in ("queued", "running"):
                    cancel_job(run, j["id"])


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser: Any, app_server: AppServer) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1600})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    try:
        yield pg
    finally:
        context.close()


def settle(page: Any, timeout: float = 60.0) -> None:
    """Wait until the app has finished its script run (no 'running' indicator); fail the test,
    saying so, when it is still running after `timeout` seconds."""
    deadline = time.time() + timeout
    page.wait_for_timeout(400)
    while page.locator('[data-testid="stStatusWidget"]').count() > 0:
        if time.time() > deadline:
            raise AssertionError(f"the app was still running its script after {timeout:.0f}s")
        page.wait_for_timeout(300)


def screenshot(page: Any, name: str, *, full_page: bool = True) -> Path:
    """Save a PNG of the page under tests/e2e/artifacts/<name>.png and return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def publish(path: Path, name: str) -> None:
    """Copy a screenshot to docs/screenshots/<name>.png (the README's pictures), only when asked
    (RETRACER_PUBLISH_SCREENSHOTS=1): a test run never rewrites tracked files."""
    if os.environ.get("RETRACER_PUBLISH_SCREENSHOTS") != "1":
        return
    dest = ROOT / "docs" / "screenshots" / f"{name}.png"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, dest)
