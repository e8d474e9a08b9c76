from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.loading import load_run
from engine.runs import RunDir, read_json
from engine.train import resume

ARGS = [
    "--dataset",
    "digits",
    "--model",
    "mlp",
    "--epochs",
    "6",
    "--n-train",
    "400",
    "--batch-size",
    "8",
    "--checkpoint-every",
    "10",
    "--augment-shift",
    "1",
]


@pytest.mark.slow
def test_sigkill_during_training_then_resume_gives_the_same_final_weights(tmp_path: Path) -> None:
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    p = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "train", *ARGS, "--run-dir", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    meta = killed / "trajectory" / "meta.json"
    deadline = time.time() + 120
    while not (meta.exists() and read_json(meta)["logged_steps"] >= 60):
        if time.time() > deadline:
            p.kill()
            pytest.fail("the training process logged fewer than 60 steps in 120 s")
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert (
        read_json(killed / "status.json")["state"] == "running"
    )  # nobody had the chance to say otherwise
    status = RunDir(killed).status
    assert status["state"] == "interrupted" and "retracer resume" in status["message"]
    logged = read_json(meta)["logged_steps"]
    assert 60 <= logged < read_json(meta)["n_steps"]

    resume(killed)
    subprocess.run(
        [sys.executable, "-m", "engine.cli", "train", *ARGS, "--run-dir", str(clean)],
        check=True,
        capture_output=True,
    )
    a, b = load_run(killed), load_run(clean)
    assert all(torch.equal(a.final_theta[k], b.final_theta[k]) for k in a.final_theta)
    assert read_json(killed / "status.json")["state"] == "done"
    assert [m["epoch"] for m in read_json(killed / "metrics.json")] == list(range(1, 7))
