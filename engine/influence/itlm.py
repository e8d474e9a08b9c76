"""Iterative trimmed loss minimisation (Shen & Sanghavi, ICML 2019).

Start from the run's final weights; each round keeps the ceil(tau * N) training samples with
the lowest loss (losses on ALL training samples) and refits the run's own model configuration
from the run's initial weights on the kept samples only, with the run's SGD hyperparameters
(engine.sgd.sgd_step: batch size, learning-rate schedule, momentum, weight decay, augmentation).
The flagged set is what the last round drops: the N - ceil(tau * N) highest-loss samples under
the final refit.

Score (N_train, 1) = -(loss of each training sample under the final refit): high loss = most
negative = most suspicious / harmful, comparable with the influence scores' "negative = harmful".
The score ignores the query.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from engine.config import ConfigError, learning_rate
from engine.influence.queries import Query
from engine.influence.registry import register_method
from engine.models import per_sample_loss
from engine.options import option
from engine.progress import Progress
from engine.sgd import sgd_step
from engine.trajectory import Params

if TYPE_CHECKING:
    from engine.loading import LoadedRun


def fit_subset(
    loaded: LoadedRun,
    indices: np.ndarray | torch.Tensor,
    *,
    epochs: int | None = None,
    seed: int | None = None,
    theta0: Params | None = None,
) -> Params:
    """Train the run's model config with its SGD hyperparameters on training `indices` only.

    Starts from `theta0` (default: the run's initial weights), shuffles the subset per epoch
    with `seed` (default: the run's seed), uses the run's learning-rate schedule over the
    subset's own steps. Returns the final weights (a new dict).
    """
    from engine.problem import aug_seed_for, epoch_batches, steps_per_epoch

    cfg = loaded.cfg
    idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
    if len(idx) == 0:
        raise ConfigError("cannot fit on an empty subset of the training samples")
    epochs = cfg.epochs if epochs is None else int(epochs)
    seed = cfg.seed if seed is None else int(seed)
    bs = min(cfg.batch_size, len(idx))
    spe = steps_per_epoch(len(idx), bs)
    theta = {k: t.detach().clone() for k, t in (theta0 or loaded.initial_theta()).items()}
    v = {k: torch.zeros_like(t) for k, t in theta.items()}
    step = 0
    for epoch in range(epochs):
        for b in epoch_batches(len(idx), bs, seed=seed, epoch=epoch):
            lr = learning_rate(cfg, step, spe)
            sgd_step(loaded.problem, theta, v, idx[b], lr=lr, aug_seed=aug_seed_for(cfg, step))
            step += 1
    return theta


@torch.no_grad()
def training_losses(loaded: LoadedRun, theta: Params, *, batch_size: int = 4096) -> np.ndarray:
    """Per-sample loss (N_train,) of every training sample at `theta` (no augmentation)."""
    from torch.func import functional_call

    p = loaded.problem
    out = []
    for i in range(0, p.x.shape[0], batch_size):
        logits = functional_call(p.model, theta, (p.x[i : i + batch_size],))
        out.append(per_sample_loss(logits, p.y[i : i + batch_size]))
    return torch.cat(out).double().cpu().numpy()


def _check(rounds: int, keep: float) -> None:
    if not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"itlm rounds must be a positive integer, got {rounds}")
    if not (0 < keep <= 1):
        raise ConfigError(f"itlm keep ratio must be in (0, 1], got {keep}")


def itlm_run(
    loaded: LoadedRun,
    *,
    rounds: int = 5,
    keep: float = 0.9,
    epochs: int | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(final-round losses (N,), flagged training indices (sorted)) of ITLM."""
    _check(rounds, keep)
    n = loaded.problem.x.shape[0]
    n_keep = max(1, math.ceil(keep * n))
    losses = training_losses(loaded, loaded.final_theta)
    for r in range(rounds):
        kept = np.sort(np.argsort(losses, kind="stable")[:n_keep])
        theta = fit_subset(loaded, kept, epochs=epochs)
        losses = training_losses(loaded, theta)
        if progress is not None:
            progress(r + 1, rounds, float(losses[kept].mean()))
    flagged = np.sort(np.argsort(losses, kind="stable")[n_keep:])
    return losses, flagged


def itlm_flagged(
    loaded: LoadedRun, *, rounds: int = 5, keep: float = 0.9, epochs: int | None = None
) -> list[str]:
    """Sample ids of the training samples the last ITLM round drops."""
    _, flagged = itlm_run(loaded, rounds=rounds, keep=keep, epochs=epochs)
    ids = loaded.bundle.train.ids
    return [ids[i] for i in flagged]


@dataclass(frozen=True)
class ItlmOptions:
    """Options of ITLM (Shen & Sanghavi 2019)."""

    rounds: int = option(5, help="refits on the lowest-loss samples")
    keep: float = option(0.9, help="fraction of the training set kept in each refit, in (0, 1]")
    epochs: int | None = option(None, help="epochs per refit (default: the run's)")


@register_method(
    "itlm",
    description="Iterative trimmed loss minimisation: minus the loss after refitting on the lowest-loss samples",
    options=ItlmOptions(),
    uses_query=False,
)
def itlm_scores(
    loaded: LoadedRun,
    query: Query,
    *,
    progress: Progress | None = None,
    rounds: int = 5,
    keep: float = 0.9,
    epochs: int | None = None,
) -> np.ndarray:
    """(N_train, 1) = -(final-round loss): high loss = most negative = most harmful."""
    losses, _ = itlm_run(loaded, rounds=rounds, keep=keep, epochs=epochs, progress=progress)
    return -losses[:, None]
