"""The optimiser step shared by training, replay and retraining, so all three do the same arithmetic.

SGD, PyTorch semantics (dampening 0, no Nesterov), per DESIGN.md section 1::

    d_t         = (1/B_t) * sum_{i in S_t} w_i * grad l(z_i; theta_t) + lam * theta_t
    v_{t+1}     = p * v_t + d_t            (v_0 = 0)
    theta_{t+1} = theta_t - eta_t * v_{t+1}

Adam / AdamW, PyTorch semantics (torch.optim.Adam / AdamW, no amsgrad), step count k = t + 1::

    g_t         = (1/B_t) * sum_{i in S_t} w_i * grad l(z_i; theta_t) + lamA * theta_t
    m_{t+1}     = b1 m_t + (1 - b1) g_t                    (m_0 = 0)
    s_{t+1}     = b2 s_t + (1 - b2) g_t^2                  (s_0 = 0)
    theta_{t+1} = theta_t (1 - eta_t lamW) - P_t * m_{t+1}
    P_t         = (eta_t / (1 - b1^k)) / (sqrt(s_{t+1}) / sqrt(1 - b2^k) + eps)   (elementwise)

lamA = lam, lamW = 0 for "adam" (L2 added to the gradient); lamA = 0, lamW = lam for "adamw"
(decoupled decay). The optimiser state is ONE dict per run, the same dict that holds SGD's
momentum buffer: ``state[name]`` is the momentum buffer v (SGD) or the first moment m (Adam),
``state[name + "#sq"]`` the second moment s, and ``state["#step"]`` (int64, 0-dim) the Adam step
count k of the last step taken. Missing Adam entries read as zeros, so a state made as
``{k: zeros_like(theta[k])}`` (what every training loop starts from) is a valid initial state,
and checkpoints save the whole dict as ``v.<key>`` unchanged.

w_i = 1 in training; retraining sets w_k = 0 to leave sample k out while keeping the 1/B_t
normalisation and the batch composition (hence the augmentation) of everyone else unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from engine.inputs import Inputs
from engine.models import per_sample_loss
from engine.threads import pinned_threads
from engine.trajectory import Params, Trajectory

SQ = "#sq"  # suffix of the second-moment entries in the optimiser state
STEP = "#step"  # the Adam step-count entry in the optimiser state


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class Problem:
    """Everything one optimiser step needs besides the state.

    model: the architecture (its own parameters are ignored; steps use `theta`).
    x: the training inputs (engine.inputs.Inputs: uint8 images converted to float in [0, 1] per
    batch, or a head-mode run's features), indexed as a float (N, C, H, W) tensor; y: int64 (N,)
    labels as trained on.
    optimizer: sgd | adam | adamw; momentum is SGD's, beta1 / beta2 / eps Adam's.
    """

    model: nn.Module
    x: Inputs
    y: torch.Tensor
    momentum: float
    weight_decay: float
    augment_shift: int = 0
    augment_flip: bool = False
    optimizer: str = "sgd"
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    threads: int = 1  # intra-op CPU threads of every replay (engine.threads)

    @property
    def is_adam(self) -> bool:
        return self.optimizer in ("adam", "adamw")

    @property
    def l2_in_gradient(self) -> float:
        """lamA: the weight decay added to the gradient (SGD and Adam; 0 for AdamW)."""
        return 0.0 if self.optimizer == "adamw" else self.weight_decay

    @property
    def decoupled_decay(self) -> float:
        """lamW: AdamW's decoupled weight decay (0 for SGD and Adam)."""
        return self.weight_decay if self.optimizer == "adamw" else 0.0

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
    renormalise: bool = False,
) -> float:
    """One optimiser step (SGD, Adam or AdamW per `problem`) in place on `theta` and the state `v`.

    Returns the batch loss (before the step). weights: optional float (N,) per-sample weights over
    the whole training set (1 = keep). renormalise: the batch mean is taken over the batch's
    weight sum instead of its size B (a removed sample really leaves the mean: the step keeps
    its size, as when the data were re-cut without it); a batch of zero weight stays zero.
    """
    xb, yb = problem.batch_inputs(idx, aug_seed)
    w = None if weights is None else weights[idx.to(weights.device)]
    if renormalise and w is not None and float(w.sum()) > 0:
        w = w * (w.numel() / w.sum())
    names = list(theta)
    leaves = {k: theta[k].detach().requires_grad_(True) for k in names}
    loss = batch_loss(problem, leaves, xb, yb, w)
    grads = torch.autograd.grad(loss, [leaves[k] for k in names])
    apply_update(problem, theta, v, grads, lr=lr)
    return float(loss.detach())


def apply_update(
    problem: Problem, theta: Params, state: Params, grads: Sequence[torch.Tensor], *, lr: float
) -> None:
    """The optimiser update in place on `theta` and `state`, given the data gradients.

    grads: (1/B) sum_i w_i grad l(z_i; theta) per parameter, in theta's key order (no weight
    decay in it). Elementwise, so it also serves parameters stacked along a leading model axis.
    """
    names = list(theta)
    with torch.no_grad():
        if not problem.is_adam:
            for k, g in zip(names, grads, strict=True):
                p, buf = theta[k], state[k]
                d = g + problem.weight_decay * p if problem.weight_decay else g
                buf.mul_(problem.momentum).add_(d)
                p.sub_(lr * buf)
            return
        step = int(state[STEP]) + 1 if STEP in state else 1
        b1, b2 = problem.beta1, problem.beta2
        step_size = lr / (1 - b1**step)
        bc2_sqrt = math.sqrt(1 - b2**step)
        lam_a, lam_w = problem.l2_in_gradient, problem.decoupled_decay
        for k, g in zip(names, grads, strict=True):
            p, m = theta[k], state[k]
            if k + SQ not in state:
                state[k + SQ] = torch.zeros_like(p)
            s = state[k + SQ]
            if lam_a:
                g = g.add(p, alpha=lam_a)
            if lam_w:
                p.mul_(1 - lr * lam_w)
            m.lerp_(g, 1 - b1)
            s.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (s.sqrt() / bc2_sqrt).add_(problem.eps)
            p.addcdiv_(m, denom, value=-step_size)
        state[STEP] = torch.tensor(step, dtype=torch.int64)


def adam_preconditioner(problem: Problem, state: Params, lr: float) -> Params:
    """P_t {name: tensor} of the Adam step just taken, from the state after it (s_{t+1}, k).

    P_t = (eta_t / (1 - b1^k)) / (sqrt(s_{t+1}) / sqrt(1 - b2^k) + eps), elementwise: the
    factor theta_{t+1} = theta_t (1 - eta_t lamW) - P_t * m_{t+1} applies to the first moment.
    """
    step = int(state[STEP])
    step_size = lr / (1 - problem.beta1**step)
    bc2_sqrt = math.sqrt(1 - problem.beta2**step)
    return {
        k[: -len(SQ)]: step_size / (s.sqrt() / bc2_sqrt).add_(problem.eps)
        for k, s in state.items()
        if k.endswith(SQ)
    }


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
    renormalise: bool = False,
    on_step: StepCallback | None = None,
    check_finite: bool = True,
) -> None:
    """Apply the logged steps start..stop-1 to (theta, v) in place (v: the whole optimiser state).

    weights / renormalise: as in sgd_step. Runs with the problem's pinned thread count."""
    with pinned_threads(problem.threads):
        for t in range(start, stop):
            loss = sgd_step(
                problem,
                theta,
                v,
                traj.batch(t),
                lr=traj.lr(t),
                aug_seed=traj.aug_seed(t),
                weights=weights,
                renormalise=renormalise,
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
