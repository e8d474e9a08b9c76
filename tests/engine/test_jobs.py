"""Background jobs in real subprocesses: tiny training, a failing job, cancel, interruption."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.jobs import active_job, cancel_job, job_status, list_jobs, start_job, wait_job
from engine.workspace import current_run, list_runs, new_run_name, set_current_run

TINY_DATA = {"dataset": "digits", "classes": [1, 7], "n_train": 60, "n_val": 30, "n_test": 30}
TINY_TRAIN = {"model": "logreg", "epochs": 2, "batch_size": 10, "lr": 0.1}


@pytest.mark.slow
def test_train_job_creates_the_run_and_reports_done(tmp_path: Path) -> None:
    run = tmp_path / "ws" / "r1"
    jid = start_job("train", run_dir=run, params={"data": TINY_DATA, "train": TINY_TRAIN})
    # the run folder must not exist before training, so the job file sits in the workspace
    assert (tmp_path / "ws" / ".jobs" / f"{jid}.json").is_file()
    j = wait_job(run, jid, timeout=120)
    assert j["state"] == "done", j
    assert j["done"] == j["total"] == 12  # 2 epochs x ceil(60 / 10) steps
    assert 0.0 <= j["result"]["final"]["val_acc"] <= 1.0
    assert (run / "config.json").is_file()
    assert [x["id"] for x in list_jobs(run)] == [jid]
    assert active_job(run) is None
    runs = list_runs(tmp_path / "ws")
    assert list(runs["name"]) == ["r1"] and runs["state"][0] == "done"


@pytest.mark.slow
def test_train_job_with_bad_input_fails_with_the_message(tmp_path: Path) -> None:
    run = tmp_path / "ws" / "bad"
    bad = {**TINY_TRAIN, "lr": -1.0}
    jid = start_job("train", run_dir=run, params={"data": TINY_DATA, "train": bad})
    j = wait_job(run, jid, timeout=60)
    assert j["state"] == "failed"
    # the app's job names the form field, not the CLI flag
    assert j["user_error"] is True and j["error"].startswith("Learning rate must be a positive")
    assert j.get("traceback") is None


# a train job long enough to be caught running (about a minute of logistic-regression steps)
LONG_DATA = {"dataset": "digits", "n_train": 600, "n_val": 60, "n_test": 60}
LONG_TRAIN = {"model": "logreg", "epochs": 200, "batch_size": 1, "lr": 0.01}


def wait_for(what: str, pred: Callable[[], bool], *, timeout: float = 60.0) -> None:
    """Poll `pred` until it holds; fail the test, naming `what`, when it does not in time."""
    deadline = time.time() + timeout
    while not pred():
        if time.time() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def start_long_job(ws: Path) -> tuple[Path, str]:
    run = ws / "long"
    jid = start_job("train", run_dir=run, params={"data": LONG_DATA, "train": LONG_TRAIN})
    wait_for("the job to run", lambda: job_status(run, jid)["state"] == "running")
    return run, jid


def test_every_job_kind_has_its_work_and_no_other_kind_exists() -> None:
    from engine.job_worker import KINDS
    from engine.jobfile import JOB_KINDS

    assert list(KINDS) == list(JOB_KINDS)
    assert "call" not in JOB_KINDS  # jobs name their work, not a function path


@pytest.mark.slow
def test_cancel_stops_the_process_group(tmp_path: Path) -> None:
    run, jid = start_long_job(tmp_path)
    assert active_job(run)["id"] == jid
    pid = int(job_status(run, jid)["pid"])
    j = cancel_job(run, jid)
    assert j["state"] == "cancelled"
    assert active_job(run) is None
    wait_for("the worker to exit", lambda: _exited(pid), timeout=10)


def _exited(pid: int) -> bool:
    """The process is gone or a zombie (exited, not yet reaped by this test process)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


@pytest.mark.slow
def test_a_killed_job_is_reported_interrupted(tmp_path: Path) -> None:
    run, jid = start_long_job(tmp_path)
    os.killpg(job_status(run, jid)["pid"], signal.SIGKILL)
    wait_for("the job to read interrupted", lambda: job_status(run, jid)["state"] == "interrupted")


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    from engine.config import ConfigError

    with pytest.raises(ConfigError, match="unknown job kind"):
        start_job("nope", run_dir=tmp_path, params={})


def test_current_run_pointer_survives_and_falls_back(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert current_run(ws) is None
    for name in ("a", "b"):
        (ws / name).mkdir(parents=True)
        (ws / name / "config.json").write_text("{}")
        time.sleep(0.02)
    assert current_run(ws) == ws / "b"  # newest when no pointer
    set_current_run(ws / "a", ws)
    assert (ws / ".current").read_text().strip() == "a"
    assert current_run(ws) == ws / "a"
    (ws / "a" / "config.json").unlink()
    assert current_run(ws) == ws / "b"
    assert new_run_name("imagefolder:/data/my pets/", "mlp", ws).startswith("my-pets-mlp-")


@pytest.mark.slow
def test_a_killed_train_job_restarts_once_from_its_checkpoint(tmp_path: Path) -> None:
    from engine.jobs import restart_job

    run, jid = start_long_job(tmp_path)
    wait_for("a checkpoint", lambda: (run / "trajectory" / "meta.json").is_file(), timeout=120)
    os.killpg(int(job_status(run, jid)["pid"]), signal.SIGKILL)
    wait_for("the job to read interrupted", lambda: job_status(run, jid)["state"] == "interrupted")
    new = restart_job(run, jid)
    assert job_status(run, jid)["restarted_as"] == new  # the app stops offering a restart
    assert job_status(run, new)["kind"] == "resume"  # continues, does not train again
    cancel_job(run, new)


def test_the_workspace_executor_is_saved_recorded_in_each_job_and_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run32: Path
) -> None:
    import shutil

    from engine.config import ConfigError
    from engine.executor import ExecutorSettings
    from engine.loading import load_run
    from engine.workspace import executor_settings, save_executor_settings

    ws = tmp_path / "ws"
    monkeypatch.setenv("RETRACER_WORKSPACE", str(ws))
    assert executor_settings() == ExecutorSettings()  # nothing saved: local, one per core
    save_executor_settings(ExecutorSettings("local", workers=1))
    assert executor_settings(ws) == ExecutorSettings("local", workers=1)
    run = Path(shutil.copytree(run32, ws / "r"))
    ids = load_run(run).bundle.train.ids
    params = {"drop": ids[:3], "mode": "all", "control_draws": 1, "save": False}
    jid = start_job("retrain", run_dir=run, params=params)
    j = wait_job(run, jid, timeout=120)
    assert j["state"] == "done", j
    assert j["executor"] == {"kind": "local", "workers": 1, "address": None}
    # a job asked to use Ray where Ray is missing fails with the one line that says so
    fake = tmp_path / "no-ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    jid = start_job("retrain", run_dir=run, params=params,
                    executor=ExecutorSettings("ray", address="127.0.0.1:1"))  # fmt: skip
    j = wait_job(run, jid, timeout=120)
    assert j["state"] == "failed" and "pip install 'retracer[ray]'" in j["error"], j
    (ws / ".executor.json").write_text("{not json")
    with pytest.raises(ConfigError, match="is not a valid executor setting"):
        executor_settings(ws)
