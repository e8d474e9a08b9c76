"""One adjoint pass over the logged SGD trajectory (DESIGN.md section 1).

Training (PyTorch SGD, dampening 0, no Nesterov), step t = 0..T-1 with batch S_t (B_t = |S_t|)::

    d_t = (1/B_t) sum_{i in S_t} w_i grad l(z_i; theta_t) + lam theta_t
    v_{t+1} = p v_t + d_t;   theta_{t+1} = theta_t - eta_t v_{t+1}

The score of training sample k for a query f is score_k = -d f(theta_T) / d w_k at w = 1: the
first-order change of f if k is removed. NEGATIVE = HARMFUL. With u = grad f(theta_T)::

    a = u, b = 0
    for t = T-1 .. t0:
        c = b - eta_t a
        score_k -= (1/B_t) <c, grad l(z_k; theta_t)>     for k in S_t
        a = a + (H_t + lam I) c                           H_t the batch Hessian at theta_t
        b = p c

curvature: "exact" (H_t by batched Hessian-vector products, forward-over-reverse, all Q queries
vmapped), "decay" (H_t := 0, keep lam: HYDRA's fast approximation), "none" (H_t := 0, lam := 0:
TracIn-style). window: ``last_epochs=None`` retraces every step; ``last_epochs=K`` only the
steps of the last K epochs (t0 = their first step; earlier steps contribute nothing).

With H_t := 0, a and b stay parallel to u (a = alpha_t u, b = beta_t u), so
score_k = sum_t coef_t <u, g_k(theta_t)> with scalars coef_t = -(beta_t - eta_t alpha_t) / B_t,
computed once; all Q queries then share one forward replay, and the dot products come from the
replay's own backward pass (see engine.influence.pergrad).

Exact curvature walks the trajectory backwards segment by segment: replay one checkpoint segment
forward into memory (theta_t only), then walk it backward. No per-step weight file is written.
Augmented runs use the same augmented inputs as training: Problem.batch_inputs(idx, aug_seed(t)).

Groups (``group_fraction`` f): the pass above linearises f around the run itself (w = 1), which
is exact for one sample but drifts for the groups people remove. With f > 0 it linearises around
the centre of the random groups of that size instead: the logged steps are replayed with every
sample weighted 1 - f (the expected weights when a random fraction f is removed, the 1/B_t kept),
and the same walk runs on that trajectory (weighted batch Hessians, unweighted per-sample
gradients), so score_k = -d f / d w_k at w = (1 - f) 1. For a quadratic response this is the best
linear predictor of a random group's removal up to the samples' own second-order terms.

Adam / AdamW runs use the same pass with Adam's per-step preconditioner frozen: see
engine.influence.adam (parallel_pass and exact_pass hand such runs to adam_pass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from engine.config import ConfigError
from engine.influence.adam import adam_pass
from engine.influence.pergrad import DOTS, resolve_dots, step_with_dots, unflatten
from engine.influence.queries import Query, flat_query_gradients
from engine.influence.registry import register_method
from engine.influence.selfinfluence import self_parallel_pass
from engine.influence.walk import (
    CURVATURES,
    hvp_and_dots,
    reweighted_trajectory,
    scalar_coefficients,
    segments_from,
    states_backward,
    window_start,
)
from engine.options import option
from engine.progress import Progress

if TYPE_CHECKING:
    from engine.loading import LoadedRun


# -- H := 0: one forward replay ---------------------------------------------------------------------
def parallel_pass(
    loaded: LoadedRun,
    u: torch.Tensor,
    *,
    curvature: str,
    last_epochs: int | None = None,
    dots: str = "auto",
    progress: Progress | None = None,
    preconditioner: str = "full",
) -> torch.Tensor:
    """Scores (N, Q) for the H := 0 curvatures ("decay", "none") and queries U (P, Q).

    preconditioner: Adam runs only (engine.influence.adam): frozen | full.
    """
    if loaded.problem.is_adam:
        opts: dict[str, Any] = {"last_epochs": last_epochs, "dots": dots}
        opts["preconditioner"] = preconditioner
        return adam_pass(loaded, u, curvature=curvature, progress=progress, **opts)
    problem, traj = loaded.problem, loaded.traj
    method = resolve_dots(problem.model, dots)
    start = window_start(traj, last_epochs)
    coef = scalar_coefficients(loaded, curvature, start)
    theta_ref = loaded.final_theta
    ud = unflatten(theta_ref, u.to(problem.x.dtype))
    scores = torch.zeros(
        problem.x.shape[0], u.shape[1], dtype=torch.float64, device=problem.x.device
    )
    total, done = traj.n_steps - start, 0
    for s, e in segments_from(traj, start):
        theta, v = traj.load_checkpoint(s, device=problem.x.device)
        for t in range(s, e):
            idx = traj.batch(t)
            xb, yb = problem.batch_inputs(idx, traj.aug_seed(t))
            if t < start:
                step_with_dots(problem, theta, v, xb, yb, lr=traj.lr(t), u=None)
                continue
            d = step_with_dots(problem, theta, v, xb, yb, lr=traj.lr(t), u=ud, method=method)
            assert d is not None
            scores.index_add_(0, idx.to(scores.device), d.to(torch.float64) * coef[t])
            done += 1
            if progress is not None:
                progress(done, total, None)
    return scores


def exact_pass(
    loaded: LoadedRun,
    u: torch.Tensor,
    *,
    last_epochs: int | None = None,
    progress: Progress | None = None,
    max_states: int = 4096,
    q_chunk: int = 32,
    preconditioner: str = "full",
    hessian_scale: float = 1.0,
    exact_epochs: int | None = None,
) -> torch.Tensor:
    """Scores (N, Q) with exact batch-Hessian curvature, for queries U (P, Q) (Adam: see adam_pass).

    hessian_scale rho and exact_epochs K bend the curvature for group removals: the walk uses
    rho * H_t over the last K epochs (all steps for None) and H_t := 0 before them (weight decay
    kept throughout). rho = 1, K = None is SGD-Influence; rho = 0 is HYDRA.
    """
    if not (0.0 <= hessian_scale <= 1.0):
        raise ConfigError(
            f"hessian_scale must be in [0, 1], got {hessian_scale}", param="hessian_scale"
        )
    if loaded.problem.is_adam and (hessian_scale != 1.0 or exact_epochs is not None):
        raise ConfigError(
            "hessian_scale and exact_epochs apply to SGD runs only", param="hessian_scale"
        )
    if loaded.problem.is_adam:
        opts: dict[str, Any] = {"max_states": max_states, "q_chunk": q_chunk, "progress": progress}
        opts.update(preconditioner=preconditioner, last_epochs=last_epochs)
        return adam_pass(loaded, u, curvature="exact", **opts)
    problem, traj = loaded.problem, loaded.traj
    start = window_start(traj, last_epochs)
    curved_from = window_start(traj, exact_epochs)  # steps before it walk with H := 0
    theta_ref = loaded.final_theta
    dtype = problem.x.dtype
    n = problem.x.shape[0]
    lam, mom = problem.weight_decay, problem.momentum
    scores = torch.zeros(n, u.shape[1], dtype=torch.float64, device=problem.x.device)
    total = (traj.n_steps - start) * math.ceil(u.shape[1] / q_chunk)
    done = 0
    for q0 in range(0, u.shape[1], q_chunk):
        a = unflatten(theta_ref, u[:, q0 : q0 + q_chunk].to(dtype))
        b = {k: torch.zeros_like(t) for k, t in a.items()}
        for s, e in reversed(segments_from(traj, start)):
            for t, theta_t, _ in states_backward(problem, traj, s, e, start, max_states=max_states):
                eta = traj.lr(t)
                idx = traj.batch(t)
                xb, yb = problem.batch_inputs(idx, traj.aug_seed(t))
                c = {k: b[k] - eta * a[k] for k in a}
                wb = None if traj.weights is None else traj.weights[idx.to(traj.weights.device)]
                hc, d = hvp_and_dots(problem, theta_t, xb, yb, c, wb)
                scores[idx.to(scores.device), q0 : q0 + q_chunk] -= d.T.to(torch.float64) / len(idx)
                rho = hessian_scale if t >= curved_from else 0.0
                if rho != 1.0:
                    hc = {k: rho * h for k, h in hc.items()}
                a = (
                    {k: a[k] + hc[k] + lam * c[k] for k in a}
                    if lam
                    else {k: a[k] + hc[k] for k in a}
                )
                b = {k: mom * c[k] for k in c}
                done += 1
                if progress is not None:
                    progress(done, total, None)
    return scores


def centred_run(loaded: LoadedRun, fraction: float, *, curvature: str = "exact") -> LoadedRun:
    """The run as if every training sample weighed 1 - fraction: the same LoadedRun with its
    trajectory replayed with those weights (walk.reweighted_trajectory; held in memory)."""
    if not (isinstance(fraction, int | float) and 0.0 <= fraction < 1.0):
        raise ConfigError(
            f"group_fraction must be in [0, 1), got {fraction!r}", param="group_fraction"
        )
    if curvature != "exact":
        raise ConfigError(
            f"group_fraction needs the exact curvature (sgd-influence); curvature is {curvature}",
            param="group_fraction",
        )
    if loaded.problem.is_adam:
        raise ConfigError("group_fraction applies to SGD runs only", param="group_fraction")
    w = torch.full((loaded.problem.x.shape[0],), 1.0 - float(fraction), dtype=torch.float64)
    return replace(loaded, traj=reweighted_trajectory(loaded.problem, loaded.traj, w))


# -- the registered methods ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AdjointOptions:
    """Options of the adjoint pass (sgd-influence, sgd-influence-last, hydra, tracin)."""

    curvature: str = option(
        "exact",
        choices=CURVATURES,
        help="exact: batch Hessians (SGD-Influence); decay: H := 0, weight decay kept (HYDRA); "
        "none: H := 0 and weight decay := 0 (TracIn-style)",
    )
    last_epochs: int | None = option(
        None, help="retrace only the steps of the last K epochs (None: every step)"
    )
    dots: str = option(
        "auto",
        choices=DOTS,
        help="how the H := 0 passes form per-sample dot products (auto picks the fastest)",
    )
    hessian_scale: float = option(
        1.0,
        help="exact curvature only: walk with rho * H_t, rho in [0, 1] (1: SGD-Influence, "
        "0: HYDRA); damps the curvature's amplification of large groups",
    )
    exact_epochs: int | None = option(
        None, help="exact curvature only: H_t over the last K epochs, H := 0 before (None: all)"
    )
    group_fraction: float = option(
        0.0,
        help="exact curvature, SGD runs: linearise around removing a random fraction f of the "
        "training set (the steps replayed with every sample weighted 1 - f) instead of around "
        "the run (0); the estimate for groups of that size",
    )
    preconditioner: str = option(
        "full",
        choices=("full", "frozen"),
        help="Adam / AdamW runs: differentiate through the second moment (full) or freeze it",
    )


def adjoint_scores(
    loaded: LoadedRun,
    query: Query,
    *,
    progress: Progress | None = None,
    curvature: str = "exact",
    last_epochs: int | None = None,
    dots: str = "auto",
    u: torch.Tensor | None = None,
    preconditioner: str = "full",
    hessian_scale: float = 1.0,
    exact_epochs: int | None = None,
    group_fraction: float = 0.0,
) -> np.ndarray:
    """Scores (N_train, Q) of the adjoint pass for `query` (see the module docstring).

    u: optional precomputed query gradients (P, Q) (skips flat_query_gradients).
    preconditioner: Adam / AdamW runs only: frozen (P_t a constant) | full (engine.influence.adam).
    hessian_scale, exact_epochs: exact curvature only (exact_pass).
    group_fraction f: exact curvature, SGD: the scores at sample weights w = (1 - f) 1 (module
    docstring), u then taken at that trajectory's final weights.
    """
    if curvature not in CURVATURES:
        raise ConfigError(f"curvature must be one of {', '.join(CURVATURES)}, got {curvature!r}")
    if curvature != "exact" and (hessian_scale != 1.0 or exact_epochs is not None):
        raise ConfigError(
            f"hessian_scale and exact_epochs bend the exact curvature; curvature is {curvature}",
            param="hessian_scale",
        )
    if group_fraction:
        loaded = centred_run(loaded, group_fraction, curvature=curvature)
        u = None  # the query's gradient at the centred run's final weights
    if query.kind == "self":
        if curvature == "exact":
            raise ConfigError(
                "the self query needs one adjoint pass per training sample with exact curvature; "
                "use hydra or tracin for self-influence"
            )
        out = self_parallel_pass(
            loaded, curvature=curvature, last_epochs=last_epochs, progress=progress
        )
        return out.cpu().numpy()
    if u is None:
        u = flat_query_gradients(loaded, query, loaded.final_theta).detach()
    opts: dict[str, Any] = {"last_epochs": last_epochs, "progress": progress}
    opts["preconditioner"] = preconditioner
    if curvature == "exact":
        out = exact_pass(loaded, u, hessian_scale=hessian_scale, exact_epochs=exact_epochs, **opts)
    else:
        out = parallel_pass(loaded, u, curvature=curvature, dots=dots, **opts)
    return out.cpu().numpy()


register_method(
    "sgd-influence",
    description="SGD-Influence (Hara et al. 2019): exact batch Hessians, all steps",
    options=AdjointOptions(curvature="exact"),
    inputs=("u",),
)(adjoint_scores)
register_method(
    "sgd-influence-last",
    description="SGD-Influence over the last epoch only (Hara's approximate version)",
    options=AdjointOptions(curvature="exact", last_epochs=1),
    inputs=("u",),
)(adjoint_scores)
register_method(
    "sgd-influence-group",
    description="SGD-Influence for groups: exact, linearised around removing a random 10% "
    "(group_fraction) instead of around the run",
    options=AdjointOptions(curvature="exact", group_fraction=0.1),
    inputs=("u",),
)(adjoint_scores)
register_method(
    "hydra",
    description="HYDRA fast approximation (Chen et al. 2021): Hessian := 0, weight decay kept, all steps",
    options=AdjointOptions(curvature="decay"),
    inputs=("u",),
)(adjoint_scores)
register_method(
    "tracin",
    description="TracIn-style: Hessian := 0 and weight decay := 0, momentum kept, all steps",
    options=AdjointOptions(curvature="none"),
    inputs=("u",),
)(adjoint_scores)
