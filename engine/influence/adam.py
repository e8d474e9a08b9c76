"""The adjoint pass for Adam / AdamW runs: exact through the second moment by default
(preconditioner="full"), or with Adam's per-step preconditioner frozen (preconditioner="frozen").

Training (engine.sgd): m_{t+1} = b1 m_t + (1 - b1) g_t, s_{t+1} = b2 s_t + (1 - b2) g_t^2,
g_t = (1/B_t) sum_{i in S_t} w_i grad l(z_i; theta_t) + lamA theta_t. The preconditioner
P_t = (eta_t / (1 - b1^k)) / (sqrt(s_{t+1} / (1 - b2^k)) + eps) (elementwise, k = t + 1) is
treated as a constant, so the step theta_{t+1} = theta_t (1 - eta_t lamW) - P_t m_{t+1},
m_{t+1} = b1 m_t + (1 - b1) g_t is linear in the gradient, and with a = dF/dtheta_{t+1},
b = dF/dm_{t+1}::

    c = b - P_t * a                                      (elementwise)
    score_k -= (1 - b1)/B_t <c, grad l(z_k; theta_t)>    for k in S_t
    a = (1 - eta_t lamW) a + (1 - b1) (H_t + lamA I) c
    b = b1 c

(lamA = lam for adam, lamW = lam for adamw, the other 0; "none" drops both.) With b1 -> p,
(1 - b1) -> 1, P_t -> eta_t and lamW = 0 it is the SGD pass of engine.influence.adjoint
(DESIGN.md section 1). What the frozen P_t leaves
out is the dependence of s_{t+1} (hence P_t) on the removed sample's gradient. Scores are
-d f(theta_T) / d w_k with P_t held fixed; NEGATIVE = HARMFUL. The exact pass
takes s_{t+1} from the forward replay of each segment (adam_pass). For H := 0 a and b are no
longer parallel to u (P_t is a vector), so each query carries its own vectors a, b through the
same segment-wise backward walk, and <c_t, g_k> comes from pergrad.batch_dots (no HVPs); the
scalar step coefficients (self-influence, the projected store) do not exist for Adam runs.

preconditioner="full" drops the approximation: the second moment's dependence on the gradient
is differentiated too. With e = dF/ds_{t+1}, D_t = sqrt(s_{t+1}) / sqrt(1 - b2^k) + eps and
R_t = P_t m_{t+1} / (2 D_t sqrt(s_{t+1}) sqrt(1 - b2^k)) (= d theta_{t+1} / d s_{t+1}, 0 where
s_{t+1} = 0), and g_t the batch gradient of step t (lamA theta_t included)::

    cm = b - P_t * a;   cs = e + R_t * a
    c  = (1 - b1) cm + 2 (1 - b2) g_t * cs
    score_k -= (1/B_t) <c, grad l(z_k; theta_t)>
    a = (1 - eta_t lamW) a + (H_t + lamA I) c;   b = b1 cm;   e = b2 cs

which is the exact -d f(theta_T) / d w_k through Adam (with cs := 0 it is the frozen pass). The
forward replay keeps g_t and R_t per step beside theta_t and P_t.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from engine.config import ConfigError
from engine.influence.pergrad import batch_dots, grads_and_dots, resolve_dots, unflatten
from engine.influence.walk import (
    CURVATURES,
    StepHook,
    hvp_and_dots,
    segments_from,
    states_backward,
    window_start,
)
from engine.progress import Progress
from engine.sgd import SQ, STEP, Problem, adam_preconditioner, apply_update, sgd_step
from engine.trajectory import Params, Trajectory

PRECONDITIONERS = ("frozen", "full")


def _step_hook(problem: Problem, traj: Trajectory, *, full: bool) -> StepHook:
    """Step t in place; return {"P": P_t} (frozen) or {"P", "g": g_t, "R": R_t} (full)."""
    lam_a, b2, eps = problem.l2_in_gradient, problem.beta2, problem.eps

    def step(t: int, th: Params, v: Params) -> dict[str, Params]:
        lr = traj.lr(t)
        if not full:
            sgd_step(problem, th, v, traj.batch(t), lr=lr, aug_seed=traj.aug_seed(t))
            return {"P": adam_preconditioner(problem, v, lr)}
        xb, yb = problem.batch_inputs(traj.batch(t), traj.aug_seed(t))
        grads, _ = grads_and_dots(problem, th, xb, yb, u=None)  # the arithmetic of sgd_step
        assert grads is not None
        g = {k: gr + lam_a * th[k] if lam_a else gr for k, gr in zip(th, grads, strict=True)}
        apply_update(problem, th, v, grads, lr=lr)
        pre = adam_preconditioner(problem, v, lr)
        bc2_sqrt = math.sqrt(1 - b2 ** int(v[STEP]))
        r: Params = {}
        for k, p_k in pre.items():
            root = v[k + SQ].sqrt()
            dd = 2 * (root / bc2_sqrt + eps) * root * bc2_sqrt
            r[k] = torch.where(root > 0, p_k * v[k] / torch.where(root > 0, dd, 1.0), 0.0)
        return {"P": pre, "g": g, "R": r}

    return step


if TYPE_CHECKING:
    from engine.loading import LoadedRun


def adam_pass(
    loaded: LoadedRun,
    u: torch.Tensor,
    *,
    curvature: str,
    last_epochs: int | None = None,
    dots: str = "auto",
    progress: Progress | None = None,
    max_states: int = 4096,
    q_chunk: int | None = None,
    preconditioner: str = "full",
) -> torch.Tensor:
    """Scores (N, Q) for an Adam / AdamW run and queries U (P, Q) (module docstring).

    curvature: exact (batch-Hessian HVPs) | decay (H := 0, lamA kept) | none (H := 0, lamA := 0,
    lamW := 0). preconditioner: frozen (P_t a constant) | full (differentiated through s).
    Every query carries its own adjoint vectors; q_chunk queries at a time (default 32 with
    exact curvature, 256 without), each chunk one backward walk.
    """
    problem, traj = loaded.problem, loaded.traj
    if not problem.is_adam:
        raise ConfigError(
            f"adam_pass needs an Adam or AdamW run, this one used {problem.optimizer}"
        )
    if curvature not in CURVATURES:
        raise ConfigError(f"curvature must be one of {', '.join(CURVATURES)}, got {curvature!r}")
    if preconditioner not in PRECONDITIONERS:
        raise ConfigError(
            f"preconditioner must be one of {', '.join(PRECONDITIONERS)}, got {preconditioner!r}"
        )
    exact, full = curvature == "exact", preconditioner == "full"
    method = "fold" if exact else resolve_dots(problem.model, dots)
    chunk = q_chunk or (32 if exact else 256)
    start = window_start(traj, last_epochs)
    lam_a = 0.0 if curvature == "none" else problem.l2_in_gradient
    lam_w = 0.0 if curvature == "none" else problem.decoupled_decay
    b1, b2 = problem.beta1, problem.beta2
    hook = _step_hook(problem, traj, full=full)
    theta_ref = loaded.final_theta
    dtype = problem.x.dtype
    scores = torch.zeros(
        problem.x.shape[0], u.shape[1], dtype=torch.float64, device=problem.x.device
    )
    total = (traj.n_steps - start) * math.ceil(u.shape[1] / chunk)
    done = 0
    for q0 in range(0, u.shape[1], chunk):
        a = unflatten(theta_ref, u[:, q0 : q0 + chunk].to(dtype))
        b = {k: torch.zeros_like(t) for k, t in a.items()}
        e_s = {k: torch.zeros_like(t) for k, t in a.items()} if full else {}
        for s, e in reversed(segments_from(traj, start)):
            walk = states_backward(problem, traj, s, e, start, max_states=max_states, step_fn=hook)
            for t, theta_t, st in walk:
                idx = traj.batch(t)
                xb, yb = problem.batch_inputs(idx, traj.aug_seed(t))
                pre = st["P"]
                cm = {k: b[k] - pre[k] * a[k] for k in a}
                if full:
                    cs = {k: e_s[k] + st["R"][k] * a[k] for k in a}
                    g = st["g"]
                    c = {k: (1 - b1) * cm[k] + 2 * (1 - b2) * g[k] * cs[k] for k in a}
                    e_s = {k: b2 * cs[k] for k in cs}
                else:
                    c = {k: (1 - b1) * cm[k] for k in cm}
                curv: Params | None  # (H_t + lamA I) c, or None where it is 0
                if exact:
                    hc, d = hvp_and_dots(problem, theta_t, xb, yb, c)  # d (Q, B)
                    curv = {k: hc[k] + lam_a * c[k] for k in c} if lam_a else hc
                else:
                    d = batch_dots(problem, theta_t, xb, yb, c, method=method).T
                    curv = {k: lam_a * c[k] for k in c} if lam_a else None
                scores[idx.to(scores.device), q0 : q0 + chunk] -= d.T.to(torch.float64) / len(idx)
                keep = 1.0 - traj.lr(t) * lam_w
                a = {k: keep * a[k] for k in a} if lam_w else a
                if curv is not None:
                    a = {k: a[k] + curv[k] for k in a}
                b = {k: b1 * cm[k] for k in cm}
                done += 1
                if progress is not None:
                    progress(done, total, None)
    return scores
