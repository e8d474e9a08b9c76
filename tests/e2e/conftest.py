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
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
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
    reason = _missing()
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(here):
            item.add_marker(pytest.mark.e2e)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


def _missing() -> str:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (install Debian's chromium package: make chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install -e '.[dev]')"
    return ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AppServer:
    url: str
    workspace: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.read().decode().strip() == "ok"
    except OSError:
        return False


@pytest.fixture(scope="session")
def app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """`streamlit run app/main.py` on a free port, with its own workspace; stopped at the end."""
    workspace = tmp_path_factory.mktemp("e2e-workspace")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = ARTIFACTS / "streamlit.log"
    env = dict(os.environ)
    env["RETRACER_WORKSPACE"] = str(workspace)
    env.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".cache" / "numba"))
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    streamlit = Path(sys.executable).with_name("streamlit")
    cmd = [str(streamlit)] if streamlit.exists() else [sys.executable, "-m", "streamlit"]
    cmd += [
        "run", "app/main.py",
        "--server.headless", "true",
        "--server.address", "127.0.0.1",
        "--server.port", str(port),
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = AppServer(url, workspace, log, proc)
    try:
        deadline = time.time() + 90
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with {proc.returncode}:\n{server.log_tail()}")
            if time.time() > deadline:
                pytest.fail(
                    f"streamlit did not answer /_stcore/health within 90 s:\n{server.log_tail()}"
                )
            time.sleep(0.5)
        yield server
    finally:
        _stop(proc)
        _stop_jobs(workspace)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


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
