"""Fresh-seed retraining (engine.fresh): the run's own seed reproduces it; the step budget and schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.changes import resolve_changes
from engine.config import ConfigError
from engine.loading import load_run
from engine.retrain import retrain, train_fresh
from tests.engine.conftest import same_weights


def test_fresh_with_run_seed_reproduces_final_weights(run32: Path) -> None:
    loaded = load_run(run32)
    assert same_weights(train_fresh(loaded, seed=loaded.cfg.seed), loaded.final_theta)
    other = train_fresh(loaded, seed=loaded.cfg.seed + 1)
    assert not same_weights(other, loaded.final_theta)


def test_fresh_budget_steps_keeps_the_runs_step_count_and_schedule(run64: Path) -> None:
    """budget "steps": T steps of the run at the run's lr per step; "epochs": epochs * ceil(n / B)."""
    loaded = load_run(run64)
    ids = loaded.bundle.train.ids
    ch = resolve_changes(loaded, ids[:40])  # 110 of 150 left: 7 batches per epoch instead of 10
    for budget in ("steps", "epochs"):  # with nothing changed both are the run itself
        theta = train_fresh(loaded, seed=loaded.cfg.seed, budget=budget)
        assert same_weights(theta, loaded.final_theta)
    steps: list[int] = []
    train_fresh(loaded, seed=5, changes=ch, on_step=lambda t, _l: steps.append(t))
    assert steps == list(range(loaded.traj.n_steps)) == list(range(3 * 10))
    steps.clear()
    train_fresh(loaded, seed=5, changes=ch, budget="epochs", on_step=lambda t, _l: steps.append(t))
    assert len(steps) == 3 * 7
    with pytest.raises(ConfigError, match="budget"):
        train_fresh(loaded, seed=5, budget="minutes")
    with pytest.raises(ConfigError, match="budget"):
        retrain(loaded, drop=ids[:1], mode="fresh", budget="minutes", save=False)


def test_fresh_budget_steps_uses_the_runs_learning_rates(run64: Path) -> None:
    """The step schedule (x0.1 after 2 epochs of the run) follows the run's steps, not the new epochs.

    One step at a time: a run whose lr were the new set's would differ from plain replay of
    learning_rate(cfg, t, run's steps per epoch); checked against an independent loop.
    """
    from dataclasses import replace as dc_replace

    from engine.config import learning_rate
    from engine.problem import aug_seed_for, build_problem, epoch_batches
    from engine.sgd import sgd_step

    loaded = load_run(run64)
    ch = resolve_changes(loaded, loaded.bundle.train.ids[:40])
    got = train_fresh(loaded, seed=9, changes=ch)
    cfg = dc_replace(loaded.cfg, seed=9)
    prob, theta = build_problem(loaded.bundle, cfg)
    keep = ch.keep(150)
    prob = dc_replace(prob, x=prob.x[keep], y=prob.y[keep])
    v = {k: torch.zeros_like(t) for k, t in theta.items()}
    order = [b for e in range(5) for b in epoch_batches(110, 16, seed=9, epoch=e)][:30]
    for t, idx in enumerate(order):
        sgd_step(prob, theta, v, idx, lr=learning_rate(cfg, t, 10), aug_seed=aug_seed_for(cfg, t))
    assert same_weights(got, theta)
