"""Fresh retraining: new seeds (initial weights and batch order) on changed training data.

Budget: "steps" (the default) keeps the run's number of SGD steps T = epochs * ceil(N / B) and its
learning rate at each step t, so after a removal the remaining n samples get more epochs (the last
one partial); "epochs" keeps the epoch count, i.e. epochs * ceil(n / B) < T steps. With a fixed
epoch count every removal also removes updates, which biases the cleaned model towards a worse
one (20% removed = 20% fewer steps): the noise benchmark's oracle lost to no filtering that way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from engine.config import ConfigError, TrainConfig, learning_rate
from engine.loading import LoadedRun
from engine.problem import aug_seed_for, build_problem, epoch_batches
from engine.sgd import Problem, sgd_step
from engine.threads import pinned_threads
from engine.trajectory import Params

if TYPE_CHECKING:
    from engine.changes import Changes

__all__ = ["BUDGETS", "fresh_steps", "train_fresh"]


BUDGETS = ("steps", "epochs")


def fresh_steps(n: int, loaded: LoadedRun, *, budget: str = "steps") -> int:
    """SGD steps of a fresh retrain on n samples: the run's own count (steps) or epochs * ceil(n / B)."""
    if budget == "steps":
        n = len(loaded.bundle.train)
    return loaded.cfg.epochs * -(-n // loaded.cfg.batch_size)


def train_fresh(
    loaded: LoadedRun,
    *,
    seed: int,
    changes: Changes | None = None,
    budget: str = "steps",
    on_step: Callable[[int, float], None] | None = None,
) -> Params:
    """Train from scratch with `seed` (initial weights and batch order) on the changed data.

    The trainer's own arithmetic (engine.train): seeded init, epoch_batches, learning_rate,
    aug_seed_for, sgd_step, without logging. Dropped samples are really removed (batches re-cut).
    budget "steps": as many steps as the run (T = epochs * ceil(N / B) for the run's N) with the
    run's learning rate at each step t, epochs over the n remaining samples repeating until T
    steps are done; "epochs": `epochs` full epochs over the n samples (epochs * ceil(n / B) steps).
    With seed = the run's seed and no changes both reproduce the run's final weights exactly.
    """
    if budget not in BUDGETS:
        raise ConfigError(f"budget must be steps or epochs, got {budget!r}", param="budget")
    cfg = replace(loaded.cfg, seed=int(seed))
    base, theta = build_problem(loaded.bundle, cfg)
    y = base.y
    x = base.x
    if changes is not None:
        y = changes.labels(y)
        if changes.n_drop:
            keep = changes.keep(x.shape[0]).to(x.device)
            x, y = x.subset(keep), y[keep]
    prob: Problem = replace(base, x=x, y=y)
    n = x.shape[0]
    if n == 0:
        raise ConfigError("cannot train on zero samples; keep at least one")
    # the learning-rate schedule follows the steps of the budget's reference: the run (steps) or n
    spe = -(-(base.x.shape[0] if budget == "steps" else n) // cfg.batch_size)
    total = cfg.epochs * spe
    v = {k: torch.zeros_like(t) for k, t in theta.items()}
    with pinned_threads(cfg.threads):
        _steps(prob, theta, v, cfg=cfg, n=n, spe=spe, total=total, on_step=on_step)
    return theta


def _steps(
    prob: Problem,
    theta: Params,
    v: Params,
    *,
    cfg: TrainConfig,
    n: int,
    spe: int,
    total: int,
    on_step: Callable[[int, float], None] | None,
) -> None:
    """`total` SGD steps over the n samples, epoch after epoch, the schedule's steps per epoch spe."""
    step, epoch = 0, 0
    while step < total:
        for idx in epoch_batches(n, cfg.batch_size, seed=cfg.seed, epoch=epoch):
            if step == total:
                break
            loss = sgd_step(
                prob,
                theta,
                v,
                idx,
                lr=learning_rate(cfg, step, spe),
                aug_seed=aug_seed_for(cfg, step),
            )
            if on_step is not None:
                on_step(step, loss)
            step += 1
        epoch += 1
