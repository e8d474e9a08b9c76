"""Checks and summaries of a run: bit-exact replay of the whole trajectory, and `info`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from engine.runs import RunDir
from engine.sgd import run_steps
from engine.trajectory import Trajectory


def verify_replay(run_dir: str | Path) -> dict[str, Any]:
    """Replay every segment from its starting checkpoint and compare with the next checkpoint.

    Each segment [c_i, c_{i+1}) is replayed from checkpoint c_i; the result must equal checkpoint
    c_{i+1} bit for bit (theta and the whole optimiser state). The last segment ends at the saved
    final weights.
    Returns steps, checkpoints, max_abs_diff (over all compared tensors), exact, seconds.
    """
    from engine.loading import load_run

    t0 = time.perf_counter()
    lr = load_run(run_dir)
    dev = lr.problem.x.device
    worst = 0.0
    exact = True
    for a, b in lr.traj.segments():
        theta, v = lr.traj.load_checkpoint(a, device=dev)
        run_steps(lr.problem, lr.traj, theta, v, start=a, stop=b, check_finite=False)
        theta_b, v_b = lr.traj.load_checkpoint(b, device=dev)
        # v_b: the momentum buffer (SGD), or Adam's moments "<name>", "<name>#sq" and "#step"
        pairs = [(theta[k], theta_b[k]) for k in theta] + [(v.get(k), v_b[k]) for k in v_b]
        for got, want in pairs:
            if got is None:
                exact, worst = False, float("inf")
                continue
            diff = float((got - want).abs().max()) if got.numel() else 0.0
            worst = max(worst, diff)
            exact = exact and torch.equal(got, want)
    return {
        "steps": lr.traj.n_steps,
        "checkpoints": len(lr.traj.checkpoints),
        "max_abs_diff": worst,
        "exact": exact,
        "seconds": time.perf_counter() - t0,
    }


def skipped_files(run_dir: str | Path) -> list[str]:
    """What data preparation skipped ("path: reason": unreadable images, empty classes), [] if none."""
    return list(RunDir(run_dir).read_json("skipped.json", default=[]) or [])


def run_info(run_dir: str | Path) -> dict[str, Any]:
    """Config, sizes, accuracies, status and storage of a run, as plain JSON-able data."""
    import pandas as pd

    run = RunDir.open(run_dir)
    manifest = pd.read_csv(run.file("manifest.csv"), usecols=["split", "flipped"])
    sizes = {s: int((manifest["split"] == s).sum()) for s in ("train", "val", "test")}
    metrics = run.read_json("metrics.json", default=[])
    info: dict[str, Any] = {
        "run_dir": str(run.path),
        "config": run.config,
        "status": run.status,
        "sizes": sizes,
        "n_classes": len(run.file("classes.txt").read_text().splitlines()),
        "n_flipped": int(manifest["flipped"].sum()),
        "metrics": metrics,
        "final": metrics[-1] if metrics else None,
        "checkpoints": [],
        "trajectory_bytes": 0,
        "n_params": None,
        "skipped": skipped_files(run.path),
        # head mode (engine.backbone): the frozen backbone that made the features
        "backbone": run.read_json("backbone.json") if run.file("backbone.json").exists() else None,
    }
    tdir = run.file("trajectory")
    if (tdir / "meta.json").exists():
        traj = Trajectory(tdir)
        info["checkpoints"] = traj.checkpoints
        info["trajectory_bytes"] = traj.storage_bytes()
        info["n_params"] = sum(int(torch.tensor(s).prod()) for s in traj.meta["params"].values())
    return info
