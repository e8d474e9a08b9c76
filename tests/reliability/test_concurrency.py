"""Two jobs never write the same run: while a run trains, a second `train --overwrite` or a
`resume` of it is refused as busy and the first finishes unharmed; overwriting an idle run still
works. (Two processes ticking images on one run merge: tests/engine/test_selections.py; influence
holding the run against a re-train: tests/reliability/test_killed_influence.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.runs import RunDir, read_json
from tests.reliability.conftest import error_line, leftovers

Cli = Callable[..., tuple[int, str, str]]
LONG = ["--dataset", "digits", "--model", "mlp", "--widths", "32", "--n-train", "400",
        "--epochs", "6", "--batch-size", "8", "--checkpoint-every", "10"]  # fmt: skip


@pytest.mark.slow
def test_a_running_training_cannot_be_overwritten_or_resumed_by_another_job(
    cli: Cli, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    p = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "train", *LONG, "--run-dir", str(run)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    meta = run / "trajectory" / "meta.json"
    deadline = time.time() + 180
    while not (meta.exists() and read_json(meta)["logged_steps"] >= 10) and time.time() < deadline:
        assert p.poll() is None, "training ended early"
        time.sleep(0.05)
    assert p.poll() is None, "training ended before the second job could try"
    # Frozen (it keeps its lock), so a fast machine cannot finish it between the attempts below.
    os.kill(p.pid, signal.SIGSTOP)
    try:
        config = (run / "config.json").read_bytes()
        rc, _, err = cli(
            "train", "--dataset", "digits", "--model", "logreg", "--run-dir", run, "--overwrite"
        )
        assert rc == 2 and f"run {run} is busy" in error_line(err)
        rc, _, err = cli("resume", "--run-dir", run)
        assert rc == 2 and f"run {run} is busy" in error_line(err)
        rc, _, err = cli("influence", "--run-dir", run, "--method", "loss")
        assert rc == 2 and "finish training first" in error_line(err)
        assert (run / "config.json").read_bytes() == config
        assert RunDir(run).status["state"] == "running"
    finally:
        os.kill(p.pid, signal.SIGCONT)

    assert p.wait(timeout=300) == 0
    from engine.loading import load_run

    assert load_run(run).traj.complete and RunDir(run).status["state"] == "done"
    assert read_json(run / "config.json")["train"]["model"] == "mlp" and leftovers(run) == []


def test_overwriting_an_idle_run_still_works(cli: Cli, victim: Path) -> None:
    with RunDir(victim).lock(blocking=False):
        rc, _, err = cli("train", "--dataset", "digits", "--run-dir", victim, "--overwrite")
    assert rc == 2 and "is busy" in error_line(err) and (victim / "influence").is_dir()
    rc, _, err = cli(
        "train", "--dataset", "digits", "--classes", "3,8", "--n-train", "40", "--model", "logreg",
        "--epochs", "1", "--run-dir", victim, "--overwrite",
    )  # fmt: skip
    assert rc == 0, err
    assert read_json(victim / "config.json")["data"]["classes"] == [3, 8]
    assert not (victim / "influence").exists(), "the old run's scores must go with it"


def test_overwrite_refuses_a_folder_that_is_not_a_run(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"precious")
    rc, _, err = cli(
        "train", "--dataset", "digits", "--run-dir", tmp_path / "photos", "--overwrite"
    )
    assert rc == 2 and "not a Retracer run directory" in error_line(err)
    assert (tmp_path / "photos" / "holiday.jpg").read_bytes() == b"precious"
