"""The backward walk's building blocks (engine.influence.walk)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.config import ConfigError
from engine.influence.walk import segments_from, states_backward, step_coefficients, window_start
from engine.loading import LoadedRun
from engine.sgd import sgd_step


def test_step_coefficients_follow_the_scalar_recursion(tiny_run: LoadedRun) -> None:
    """With H := 0: a <- a + lam c, b <- p c, c = b - eta a, coef = -c / B (a = 1, b = 0 at T)."""
    traj, p = tiny_run.traj, tiny_run.problem
    got = step_coefficients(traj, momentum=p.momentum, weight_decay=p.weight_decay)
    a, b, want = 1.0, 0.0, np.zeros(traj.n_steps)
    for t in reversed(range(traj.n_steps)):
        c = b - traj.lr(t) * a
        want[t] = -c / len(traj.batch(t))
        a, b = a + p.weight_decay * c, p.momentum * c
    assert np.allclose(got, want, rtol=1e-14, atol=0)
    start = window_start(traj, 1)
    partial = step_coefficients(traj, momentum=p.momentum, weight_decay=0.0, start=start)
    assert not partial[:start].any() and partial[start:].all()


def test_window_start_and_segments(tiny_run: LoadedRun) -> None:
    traj = tiny_run.traj
    assert window_start(traj, None) == 0
    assert window_start(traj, 1) == traj.epoch_start(traj.n_steps // traj.steps_per_epoch - 1)
    with pytest.raises(ConfigError, match="^last_epochs must be a positive integer"):
        window_start(traj, 0)
    segs = segments_from(traj, window_start(traj, 1))
    assert segs and all(e > window_start(traj, 1) for _, e in segs)
    assert segs[-1][1] == traj.n_steps


@pytest.mark.parametrize("max_states", [2, 4096])
def test_states_backward_yields_every_state_in_reverse(
    tiny_run: LoadedRun, max_states: int
) -> None:
    """The states equal a plain forward replay, newest first, whether a segment fits in memory
    (max_states large) or is cut into re-replayed blocks (max_states = 2)."""
    p, traj = tiny_run.problem, tiny_run.traj
    (s, e) = traj.segments()[0]
    theta, v = traj.load_checkpoint(s)
    forward = []
    for t in range(s, e):
        forward.append({k: x.clone() for k, x in theta.items()})
        sgd_step(p, theta, v, traj.batch(t), lr=traj.lr(t), aug_seed=traj.aug_seed(t))
    got = list(states_backward(p, traj, s, e, s, max_states=max_states))
    assert [t for t, _, _ in got] == list(reversed(range(s, e)))
    for t, th, _ in got:
        for k in th:
            assert torch.equal(th[k], forward[t - s][k])
