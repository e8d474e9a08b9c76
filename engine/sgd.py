"""The SGD step shared by training, replay and retraining, so all three do the same arithmetic.

PyTorch SGD semantics (dampening 0, no Nesterov), per DESIGN.md section 1::

    d_t         = (1/B_t) * sum_{i in S_t} w_i * grad l(z_i; theta_t) + lam * theta_t
    v_{t+1}     = p * v_t + d_t            (v_0 = 0)
    theta_{t+1} = theta_t - eta_t * v_{t+1}

w_i = 1 in training; retraining sets w_k = 0 to leave sample k out while keeping the 1/B_t
normalisation and the batch composition (hence the augmentation) of everyone else unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from engine.models import per_sample_loss
from engine.trajectory import Params, Trajectory


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class Problem:
    """Everything one SGD step needs besides the state.

    model: the architecture (its own parameters are ignored; steps use `theta`).
    x: float (N, C, H, W) training inputs in [0, 1]; y: int64 (N,) labels as trained on.
    """

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    momentum: float
    weight_decay: float
    augment_shift: int = 0
    augment_flip: bool = False

    def batch_inputs(self, idx: torch.Tensor, aug_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The (augmented) inputs (B, C, H, W) and labels (B,) of the batch `idx`."""
        dev = self.x.device
        idx = idx.to(dev)
        xb = self.x[idx]
        if self.augment_shift or self.augment_flip:
            xb = augment(xb, seed=aug_seed, shift=self.augment_shift, flip=self.augment_flip)
        return xb, self.y[idx]


def augment(x: torch.Tensor, *, seed: int, shift: int, flip: bool) -> torch.Tensor:
    """Random shifts by up to `shift` pixels (zero fill) and horizontal flips, per sample.

    x: (B, C, H, W). Deterministic for a given seed and batch; sample i's transform depends only
    on (seed, i), so zeroing one sample's weight leaves every other sample's input unchanged.
    """
    g = torch.Generator().manual_seed(int(seed))
    b, _, h, w = x.shape
    out = x
    if shift > 0:
        dy = torch.randint(-shift, shift + 1, (b,), generator=g).to(x.device)
        dx = torch.randint(-shift, shift + 1, (b,), generator=g).to(x.device)
        padded = torch.nn.functional.pad(x, (shift, shift, shift, shift))
        rows = torch.arange(h, device=x.device)[None, :] + shift - dy[:, None]  # (B, H)
        cols = torch.arange(w, device=x.device)[None, :] + shift - dx[:, None]  # (B, W)
        bi = torch.arange(b, device=x.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        f = (torch.rand(b, generator=g) < 0.5).to(x.device)
        out = torch.where(f[:, None, None, None], out.flip(-1), out)
    return out.contiguous()


def batch_loss(
    problem: Problem, theta: Params, xb: torch.Tensor, yb: torch.Tensor, w: torch.Tensor | None
) -> torch.Tensor:
    """(1/B) * sum_i w_i l(z_i; theta), the data term of the step's objective (scalar)."""
    losses = per_sample_loss(functional_call(problem.model, theta, (xb,)), yb)
    if w is not None:
        losses = losses * w
    return losses.sum() / xb.shape[0]


def sgd_step(
    problem: Problem,
    theta: Params,
    v: Params,
    idx: torch.Tensor,
    *,
    lr: float,
    aug_seed: int,
    weights: torch.Tensor | None = None,
) -> float:
    """One SGD step in place on `theta` and `v`; returns the batch loss (before the step).

    weights: optional float (N,) per-sample weights over the whole training set (1 = keep).
    """
    xb, yb = problem.batch_inputs(idx, aug_seed)
    w = None if weights is None else weights[idx.to(weights.device)]
    names = list(theta)
    leaves = {k: theta[k].detach().requires_grad_(True) for k in names}
    loss = batch_loss(problem, leaves, xb, yb, w)
    grads = torch.autograd.grad(loss, [leaves[k] for k in names])
    with torch.no_grad():
        for k, g in zip(names, grads, strict=True):
            p, buf = theta[k], v[k]
            d = g + problem.weight_decay * p if problem.weight_decay else g
            buf.mul_(problem.momentum).add_(d)
            p.sub_(lr * buf)
    return float(loss.detach())


StepCallback = Callable[[int, float], None]


def run_steps(
    problem: Problem,
    traj: Trajectory,
    theta: Params,
    v: Params,
    *,
    start: int,
    stop: int,
    weights: torch.Tensor | None = None,
    on_step: StepCallback | None = None,
    check_finite: bool = True,
) -> None:
    """Apply the logged steps start..stop-1 to (theta, v) in place."""
    for t in range(start, stop):
        loss = sgd_step(
            problem,
            theta,
            v,
            traj.batch(t),
            lr=traj.lr(t),
            aug_seed=traj.aug_seed(t),
            weights=weights,
        )
        if check_finite and not torch.isfinite(torch.tensor(loss)):
            raise TrainingDiverged(f"loss became {loss} at step {t}")
        if on_step is not None:
            on_step(t, loss)


def replay_to(
    problem: Problem, traj: Trajectory, step: int, *, device: str | torch.device = "cpu"
) -> tuple[Params, Params]:
    """Regenerate (theta_step, v_step) from the nearest checkpoint at or before `step`."""
    c = traj.nearest_checkpoint(step)
    theta, v = traj.load_checkpoint(c, device=device)
    run_steps(problem, traj, theta, v, start=c, stop=step, check_finite=False)
    return theta, v


def clone_params(p: Params) -> Params:
    return {k: t.detach().clone() for k, t in p.items()}
