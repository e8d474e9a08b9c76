"""Start and stop the app as a child process: `python -m app.launch` (`streamlit run app/main.py`
with the pages' imports done first) on a free local port.

Used by the browser tests (tests/e2e) and the page-speed bench (bench/app_pages.py); it does not
import Streamlit itself. The server gets its own workspace (RETRACER_WORKSPACE) and runs in its
own process group, so stopping it also stops what it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthy(url: str) -> bool:
    """True when the server at `url` answers its health check."""
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return bool(r.read().decode().strip() == "ok")
    except OSError:
        return False


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


class AppDidNotStart(RuntimeError):
    """The server exited or did not answer its health check in time (the message has its log)."""


def start_app(workspace: Path, *, log: Path, timeout_s: float = 90.0) -> AppServer:
    """Run the app with `workspace` as its RETRACER_WORKSPACE, its output going to `log`; return
    once it answers /_stcore/health. Raises AppDidNotStart (with the log's tail) otherwise."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env["RETRACER_WORKSPACE"] = str(workspace)
    env.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".cache" / "numba"))
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    cmd = [
        sys.executable, "-m", "app.launch",
        "--server.headless", "true",
        "--server.address", "127.0.0.1",
        "--server.port", str(port),
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = AppServer(url, workspace, log, proc)
    deadline = time.time() + timeout_s
    while not healthy(url):
        if proc.poll() is not None:
            raise AppDidNotStart(f"streamlit exited with {proc.returncode}:\n{server.log_tail()}")
        if time.time() > deadline:
            stop_app(server)
            raise AppDidNotStart(
                f"streamlit did not answer /_stcore/health within {timeout_s:.0f} s:\n"
                f"{server.log_tail()}"
            )
        time.sleep(0.5)
    return server


def stop_app(server: AppServer) -> None:
    """Stop the server's process group: SIGTERM, then SIGKILL after 10 s."""
    proc = server.proc
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
