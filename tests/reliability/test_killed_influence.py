"""SIGKILL during influence: the run stays readable, the other methods' scores are untouched, no
partial score file is left, re-running computes the scores, and a restarted chain of methods does
not redo the methods that had finished. (SIGKILL during training, then resume to bit-identical
weights: tests/engine/test_resume.py; a killed job reads "interrupted": tests/engine/test_jobs.py.)"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.config import TrainConfig
from engine.data import DataSpec
from tests.reliability.conftest import error_line, leftovers, snapshot

Cli = Callable[..., tuple[int, str, str]]
SLOW_METHOD = "sgd-influence"  # exact Hessian-vector products at every step: the slowest to retrace


@pytest.fixture(scope="module")
def _master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.influence.api import compute_influence
    from engine.train import train

    run = tmp_path_factory.mktemp("slow") / "run"
    train(
        run,
        DataSpec(dataset="digits", n_train=200, n_val=60, n_test=60, seed=0),
        # 400 steps: long enough that the exact pass is still running when the test kills it,
        # even on an idle machine (50 steps finished before the first progress line there)
        TrainConfig(model="mlp", widths=[32], epochs=8, batch_size=4, lr=0.05),
    )
    compute_influence(run, "loss")
    return run


@pytest.fixture
def run(_master: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(_master, dst, ignore=shutil.ignore_patterns(".*.lock"))
    return dst


def _scores_of(run: Path) -> list[str]:
    from engine.influence.api import list_scores

    return sorted(s["method"] for s in list_scores(run))


@pytest.mark.slow
def test_sigkill_during_influence_keeps_the_run_and_recomputes(cli: Cli, run: Path) -> None:
    before = snapshot(run)
    p = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "influence", "--run-dir", str(run), "--method", SLOW_METHOD],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert p.stderr is not None
    progress = None
    for line in p.stderr:  # the CLI's progress bar: "sgd-influence (val) [###  ] 15/150 ..."
        m = re.search(r"\] (\d+)/(\d+) ", line)
        if m and 0 < int(m[1]) < int(m[2]):
            progress = (int(m[1]), int(m[2]))
            break
    assert progress is not None and p.poll() is None, "influence ended before it could be killed"
    os.kill(p.pid, signal.SIGSTOP)  # frozen with its lock held, so it cannot finish first
    # While it runs, the run cannot be re-trained under it (it holds the run lock shared).
    rc, _, err = cli("train", "--dataset", "digits", "--run-dir", run, "--overwrite")
    assert rc == 2 and "is busy" in error_line(err)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL

    assert snapshot(run) == before, "a killed influence job changed files that were saved"
    assert leftovers(run) == []
    assert not (run / "influence" / SLOW_METHOD / "val" / "scores.csv").exists()
    assert _scores_of(run) == ["loss"]
    from engine.influence.api import compute_influence, load_scores
    from engine.loading import load_run
    from engine.runs import RunDir

    assert RunDir(run).status["state"] == "done" and load_run(run).traj.complete
    with pytest.raises(Exception, match="no sgd-influence scores"):
        load_scores(run, SLOW_METHOD)

    frame = compute_influence(run, SLOW_METHOD)  # re-running computes it
    assert len(frame) == 200 and frame["score"].notna().all()
    assert _scores_of(run) == ["loss", SLOW_METHOD]
    params = run / "influence" / SLOW_METHOD / "val" / "params.json"
    stamp = (params.read_bytes(), params.stat().st_mtime_ns)
    rc, out, err = cli("influence", "--run-dir", run, "--method", SLOW_METHOD, "--skip-existing")
    assert rc == 0, err
    assert (params.read_bytes(), params.stat().st_mtime_ns) == stamp, "--skip-existing recomputed"


def _wait(run: Path, job_id: str, ok: Callable[[dict[str, object]], bool], timeout: float = 180):
    from engine.jobs import job_status

    deadline = time.time() + timeout
    while time.time() < deadline:
        j = job_status(run, job_id)
        if ok(j):
            return j
        if j["state"] in ("failed", "cancelled", "interrupted"):
            raise AssertionError(
                f"job {job_id} ended {j['state']}: {j.get('error') or j['message']}"
            )
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {j['state']} after {timeout}s")


@pytest.mark.slow
def test_restarted_chain_does_not_redo_finished_methods(run: Path) -> None:
    from engine.influence.api import load_scores
    from engine.jobs import job_status, restart_job, start_job

    chain = {"method": "tracin", "then": [{"kind": "influence", "params": {"method": SLOW_METHOD}}]}
    first = start_job("influence", run_dir=run, params=chain)
    done = _wait(run, first, lambda j: j["state"] == "done")
    second = done["next_jobs"][0]  # type: ignore[index]
    j = _wait(
        run, second, lambda j: j["state"] == "running" and 0 < int(j["done"]) < int(j["total"])
    )  # type: ignore[call-overload]
    tracin = snapshot(run / "influence" / "tracin")
    os.killpg(int(j["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
    deadline = time.time() + 30
    while job_status(run, second)["state"] != "interrupted" and time.time() < deadline:
        time.sleep(0.05)
    assert job_status(run, second)["state"] == "interrupted"
    assert _scores_of(run) == ["loss", "tracin"] and leftovers(run) == []

    again = restart_job(run, first)  # the whole chain again, from its first method
    redone = _wait(run, again, lambda j: j["state"] == "done")
    _wait(run, redone["next_jobs"][0], lambda j: j["state"] == "done")  # type: ignore[index]
    assert snapshot(run / "influence" / "tracin") == tracin, "a finished method was computed again"
    assert _scores_of(run) == ["loss", SLOW_METHOD, "tracin"]
    assert len(load_scores(run, SLOW_METHOD)) == 200
