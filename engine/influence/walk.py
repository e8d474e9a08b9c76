"""The building blocks of a backward walk over the logged trajectory (DESIGN.md section 1).

Shared by the SGD adjoint pass (engine.influence.adjoint), the Adam pass (engine.influence.adam),
self-influence (engine.influence.selfinfluence) and the projected store
(engine.influence.featurestore): the window of retraced steps, the scalar step coefficients of
the H := 0 curvatures, the checkpoint segments, the batch Hessian-vector products, and the
replay that yields theta_t in reverse order within a segment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.func import functional_call, grad, jvp, vmap

from engine.config import ConfigError
from engine.models import per_sample_loss
from engine.sgd import Problem, clone_params, run_steps, sgd_step
from engine.trajectory import Params, Trajectory

if TYPE_CHECKING:
    from engine.loading import LoadedRun

CURVATURES = ("exact", "decay", "none")


def window_start(traj: Trajectory, last_epochs: int | None) -> int:
    """t0, the first step retraced: 0 for all steps, else the first step of the last K epochs."""
    if last_epochs is None:
        return 0
    if not isinstance(last_epochs, int) or isinstance(last_epochs, bool) or last_epochs <= 0:
        raise ConfigError(
            f"last_epochs must be a positive integer, got {last_epochs!r}", param="last_epochs"
        )
    n_epochs = math.ceil(traj.n_steps / traj.steps_per_epoch)
    return traj.epoch_start(max(0, n_epochs - last_epochs))


def step_coefficients(
    traj: Trajectory, *, momentum: float, weight_decay: float, start: int = 0
) -> np.ndarray:
    """coef (T,) for the H := 0 pass: score_k = sum_{t: k in S_t} coef_t <u, g_k(theta_t)>.

    Pass weight_decay=0 for the "none" curvature. coef_t = 0 for t < start.
    """
    coef = np.zeros(traj.n_steps, dtype=np.float64)
    alpha, beta = 1.0, 0.0
    for t in range(traj.n_steps - 1, start - 1, -1):
        gamma = beta - traj.lr(t) * alpha
        coef[t] = -gamma / len(traj.batch(t))
        alpha += weight_decay * gamma
        beta = momentum * gamma
    return coef


def segments_from(traj: Trajectory, start: int) -> list[tuple[int, int]]:
    """Checkpoint segments [s, e) that overlap the window [start, T)."""
    return [(s, e) for s, e in traj.segments() if e > start]


def scalar_coefficients(loaded: LoadedRun, curvature: str, start: int) -> np.ndarray:
    """coef (T,) of `curvature` ("decay" keeps weight decay, "none" drops it) from step `start`;
    ConfigError for Adam runs, whose preconditioner is per parameter."""
    p = loaded.problem
    if p.is_adam:
        raise ConfigError(
            f"this run was trained with {p.optimizer}: self-influence and the projected store need "
            "scalar step coefficients, which exist for SGD runs only (Adam's preconditioner is per "
            "parameter); use a query (val, class, test) with hydra, tracin or sgd-influence"
        )
    lam = p.weight_decay if curvature == "decay" else 0.0
    return step_coefficients(loaded.traj, momentum=p.momentum, weight_decay=lam, start=start)


def reweighted_trajectory(problem: Problem, traj: Trajectory, weights: torch.Tensor) -> Trajectory:
    """The run's logged steps replayed from theta_0 with per-sample weights (N,) (the batches, 1/B_t,
    learning rates and augmentation of the run; sample k's loss term weighted w_k): a view of
    `traj` whose checkpoints (at the same steps) are held in memory (Trajectory.reweighted)."""
    dev = problem.x.device
    w = weights.to(device=dev, dtype=problem.x.dtype)
    theta, v = traj.load_checkpoint(0, device=dev)
    states = {0: (clone_params(theta), clone_params(v))}
    for s, e in traj.segments():
        run_steps(problem, traj, theta, v, start=s, stop=e, weights=w)
        states[e] = (clone_params(theta), clone_params(v))
    return traj.reweighted(w, states)


def hvp_and_dots(
    problem: Problem,
    theta: Params,
    xb: torch.Tensor,
    yb: torch.Tensor,
    c: Params,
    w: torch.Tensor | None = None,
) -> tuple[Params, torch.Tensor]:
    """(H c {name: (Q, *shape)}, D (Q, B) = <c_q, grad l(z_k; theta)>) for directions c {name: (Q, *shape)}.

    H is the Hessian of the batch loss (1/B) sum_k w_k l(z_k; theta) (w: the batch's (B,) sample
    weights, 1 for None); D holds the unweighted per-sample gradients (d/dw_k of the batch loss).
    One forward-over-reverse pass, vmapped over the Q directions.
    """
    model = problem.model
    bsz = xb.shape[0]
    th = {k: t.detach() for k, t in theta.items()}

    def inner(p: Params) -> tuple[torch.Tensor, torch.Tensor]:
        losses = per_sample_loss(functional_call(model, p, (xb,)), yb)
        return (losses if w is None else losses * w).sum() / bsz, losses

    def gradient(p: Params) -> tuple[Params, torch.Tensor]:
        return grad(inner, has_aux=True)(p)  # type: ignore[no-any-return]

    def along(ci: Params) -> tuple[Params, torch.Tensor]:
        return jvp(gradient, (th,), (ci,))[1]  # type: ignore[no-any-return]

    if next(iter(c.values())).shape[0] == 1:  # one query: a plain jvp is ~25% faster than vmap
        hc1, d1 = along({k: t[0] for k, t in c.items()})
        return {k: t[None] for k, t in hc1.items()}, d1[None]
    hc, d = vmap(along)(c)
    return hc, d


StepHook = Callable[[int, Params, Params], Any]
"""step_fn(t, theta, state): take step t in place on (theta, state) and return what the walk needs."""


def states_backward(
    problem: Problem,
    traj: Trajectory,
    s: int,
    e: int,
    start: int,
    *,
    max_states: int,
    step_fn: StepHook | None = None,
) -> Iterator[tuple[int, Params, Any]]:
    """Yield (t, theta_t, extra_t) for t = e-1 down to max(s, start), replaying from the checkpoint at s.

    extra_t is what step_fn returned for step t (None without a step_fn; then the last step of a
    block, whose result is not needed, is skipped). Keeps at most ~max_states parameter copies:
    longer segments are cut into blocks whose starting states are stored on the way forward, and
    each block is replayed again when the walk reaches it.
    """
    dev = problem.x.device
    w = traj.weights  # a reweighted trajectory replays with its weights

    def step(t: int, th: Params, state: Params) -> None:
        sgd_step(
            problem, th, state, traj.batch(t), lr=traj.lr(t), aug_seed=traj.aug_seed(t), weights=w
        )

    def advance(t: int, th: Params, v: Params, last: bool) -> Any:
        if step_fn is not None:
            return step_fn(t, th, v)
        if not last:
            step(t, th, v)
        return None

    theta, v = traj.load_checkpoint(s, device=dev)
    lo = max(s, start)
    for t in range(s, lo):
        step(t, theta, v)
    n = e - lo
    if n <= max_states:  # the whole segment fits: one forward replay into memory
        states: list[tuple[Params, Any]] = []
        for t in range(lo, e):
            th = clone_params(theta)
            states.append((th, advance(t, theta, v, t + 1 == e)))
        for t in range(e - 1, lo - 1, -1):
            yield (t, *states.pop())
        return
    block = math.isqrt(n - 1) + 1  # ~3 sqrt(n) parameter copies, each block replayed twice
    anchors: list[tuple[int, Params, Params]] = []
    for t in range(lo, e):
        if (t - lo) % block == 0:
            anchors.append((t, clone_params(theta), clone_params(v)))
        if t + 1 < e:
            step(t, theta, v)
    for a_t, a_theta, a_v in reversed(anchors):
        stop = min(a_t + block, e)
        states = []
        th_run, vv = a_theta, a_v
        for t in range(a_t, stop):
            th = clone_params(th_run)
            states.append((th, advance(t, th_run, vv, t + 1 == stop)))
        for t in range(stop - 1, a_t - 1, -1):
            yield (t, *states.pop())
