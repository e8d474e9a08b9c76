"""engine.executor on a Ray cluster joined by address: a head started with `ray start --head` on
127.0.0.1 (as a user with a real cluster would), and `retracer retrain --executor ray
--ray-address ...` giving the same JSON as the local executor."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`ray start --head` on a free port of 127.0.0.1 with 2 CPUs; yields its address. The
    cluster's token (Ray >= 2.59 authenticates by default) is shared through RAY_AUTH_TOKEN, as
    on a real cluster's nodes."""
    ray_bin = Path(sys.executable).with_name("ray")
    port = _free_port()
    os.environ["RAY_AUTH_MODE"] = "token"  # the CLI children inherit both
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    tmp = tmp_path_factory.mktemp("ray")
    start = [str(ray_bin), "start", "--head", "--block", f"--port={port}",
             "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=false",
             f"--temp-dir={tmp}", "--disable-usage-stats"]  # fmt: skip
    # its own process group, so that the teardown stops this cluster and nothing else
    head = subprocess.Popen(start, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_for_port(port, head)
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE"):
            os.environ.pop(key, None)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"ray start --head exited with {proc.returncode}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"the Ray head did not listen on port {port} within {timeout:.0f} s")


def _cli(*args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", *args, "--json"], capture_output=True, text=True,
        timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_cli_on_a_ray_cluster_by_address_equals_local(
    head: str, run32: Path, tmp_path: Path
) -> None:
    from tests.engine.test_executor import same

    run = Path(shutil.copytree(run32, tmp_path / "run"))
    ids = run / "drop.txt"
    from engine.loading import load_run

    ids.write_text("\n".join(load_run(run).bundle.train.ids[:6]) + "\n")
    common = ["retrain", "--run-dir", str(run), "--drop", str(ids), "--mode", "fresh",
              "--seeds", "2"]  # fmt: skip
    local = _cli(*common, "--workers", "2")
    on_ray = _cli(*common, "--executor", "ray", "--ray-address", head)
    assert same(local, on_ray)
    assert local["paired"] and len(on_ray["control_runs"]["runs"]) == 2  # type: ignore[index]
