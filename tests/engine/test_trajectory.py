"""The logged trajectory (engine.trajectory): checkpoints reach any step, learning rates as logged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.loading import load_run


def test_replay_from_checkpoint_reaches_any_step(tiny_run: Path) -> None:
    from engine.sgd import replay_to, run_steps

    lr = load_run(tiny_run)
    theta, v = lr.traj.load_checkpoint(0)
    run_steps(lr.problem, lr.traj, theta, v, start=0, stop=17)
    again, _ = replay_to(lr.problem, lr.traj, 17)
    assert all(torch.equal(theta[k], again[k]) for k in theta)


def test_logged_learning_rates_follow_the_schedule(tiny_run: Path) -> None:
    lr = load_run(tiny_run)
    spe = lr.traj.steps_per_epoch
    assert lr.traj.lr(0) == pytest.approx(0.05)
    assert lr.traj.lr(spe) == pytest.approx(0.005)  # step schedule, gamma 0.1 each epoch
    assert sorted(torch.cat([lr.traj.batch(t) for t in range(spe)]).tolist()) == list(range(200))
