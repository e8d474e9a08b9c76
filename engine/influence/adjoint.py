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

Adam / AdamW runs use the same pass with Adam's per-step preconditioner frozen: see
engine.influence.adam (parallel_pass and exact_pass hand such runs to adam_pass).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.func import functional_call, grad, jvp, vmap

from engine.config import ConfigError
from engine.influence.pergrad import resolve_dots, step_with_dots, unflatten
from engine.influence.queries import Query, flat_query_gradients
from engine.influence.registry import Progress, register_method
from engine.models import per_sample_loss
from engine.sgd import Problem, clone_params, sgd_step
from engine.trajectory import Params, Trajectory

if TYPE_CHECKING:
    from engine.train import LoadedRun

CURVATURES = ("exact", "decay", "none")


def window_start(traj: Trajectory, last_epochs: int | None) -> int:
    """t0, the first step retraced: 0 for all steps, else the first step of the last K epochs."""
    if last_epochs is None:
        return 0
    if not isinstance(last_epochs, int) or isinstance(last_epochs, bool) or last_epochs <= 0:
        raise ConfigError(f"--last-epochs must be a positive integer, got {last_epochs!r}")
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


def _segments_from(traj: Trajectory, start: int) -> list[tuple[int, int]]:
    """Checkpoint segments [s, e) that overlap the window [start, T)."""
    return [(s, e) for s, e in traj.segments() if e > start]


def _coef_for(loaded: LoadedRun, curvature: str, start: int) -> np.ndarray:
    p = loaded.problem
    if p.is_adam:
        raise ConfigError(
            f"this run was trained with {p.optimizer}: self-influence and the projected store need "
            "scalar step coefficients, which exist for SGD runs only (Adam's preconditioner is per "
            "parameter); use a query (val, class, test) with hydra, tracin or sgd-influence"
        )
    lam = p.weight_decay if curvature == "decay" else 0.0
    return step_coefficients(loaded.traj, momentum=p.momentum, weight_decay=lam, start=start)


def _adam_pass(loaded: LoadedRun, u: torch.Tensor, **options: Any) -> torch.Tensor:
    from engine.influence.adam import adam_pass  # imports this module

    return adam_pass(loaded, u, **options)


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
        return _adam_pass(loaded, u, curvature=curvature, progress=progress, **opts)
    problem, traj = loaded.problem, loaded.traj
    method = resolve_dots(problem.model, dots)
    start = window_start(traj, last_epochs)
    coef = _coef_for(loaded, curvature, start)
    theta_ref = loaded.final_theta
    ud = unflatten(theta_ref, u.to(problem.x.dtype))
    scores = torch.zeros(
        problem.x.shape[0], u.shape[1], dtype=torch.float64, device=problem.x.device
    )
    total, done = traj.n_steps - start, 0
    for s, e in _segments_from(traj, start):
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


# -- exact curvature: segments replayed forward, walked backward -------------------------------------
def hvp_and_dots(
    problem: Problem, theta: Params, xb: torch.Tensor, yb: torch.Tensor, c: Params
) -> tuple[Params, torch.Tensor]:
    """(H c {name: (Q, *shape)}, D (Q, B) = <c_q, grad l(z_k; theta)>) for directions c {name: (Q, *shape)}.

    H is the Hessian of the batch loss (1/B) sum_k l(z_k; theta). One forward-over-reverse pass,
    vmapped over the Q directions.
    """
    model = problem.model
    bsz = xb.shape[0]
    th = {k: t.detach() for k, t in theta.items()}

    def inner(p: Params) -> tuple[torch.Tensor, torch.Tensor]:
        losses = per_sample_loss(functional_call(model, p, (xb,)), yb)
        return losses.sum() / bsz, losses

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


def _states_backward(
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

    def advance(t: int, th: Params, v: Params, last: bool) -> Any:
        if step_fn is not None:
            return step_fn(t, th, v)
        if not last:
            sgd_step(problem, th, v, traj.batch(t), lr=traj.lr(t), aug_seed=traj.aug_seed(t))
        return None

    theta, v = traj.load_checkpoint(s, device=dev)
    lo = max(s, start)
    for t in range(s, lo):
        sgd_step(problem, theta, v, traj.batch(t), lr=traj.lr(t), aug_seed=traj.aug_seed(t))
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
            sgd_step(problem, theta, v, traj.batch(t), lr=traj.lr(t), aug_seed=traj.aug_seed(t))
    for a_t, a_theta, a_v in reversed(anchors):
        stop = min(a_t + block, e)
        states = []
        th_run, vv = a_theta, a_v
        for t in range(a_t, stop):
            th = clone_params(th_run)
            states.append((th, advance(t, th_run, vv, t + 1 == stop)))
        for t in range(stop - 1, a_t - 1, -1):
            yield (t, *states.pop())


def exact_pass(
    loaded: LoadedRun,
    u: torch.Tensor,
    *,
    last_epochs: int | None = None,
    progress: Progress | None = None,
    max_states: int = 4096,
    q_chunk: int = 32,
    preconditioner: str = "full",
) -> torch.Tensor:
    """Scores (N, Q) with exact batch-Hessian curvature, for queries U (P, Q) (Adam: see adam_pass)."""
    if loaded.problem.is_adam:
        opts: dict[str, Any] = {"max_states": max_states, "q_chunk": q_chunk, "progress": progress}
        opts.update(preconditioner=preconditioner, last_epochs=last_epochs)
        return _adam_pass(loaded, u, curvature="exact", **opts)
    problem, traj = loaded.problem, loaded.traj
    start = window_start(traj, last_epochs)
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
        for s, e in reversed(_segments_from(traj, start)):
            for t, theta_t, _ in _states_backward(
                problem, traj, s, e, start, max_states=max_states
            ):
                eta = traj.lr(t)
                idx = traj.batch(t)
                xb, yb = problem.batch_inputs(idx, traj.aug_seed(t))
                c = {k: b[k] - eta * a[k] for k in a}
                hc, d = hvp_and_dots(problem, theta_t, xb, yb, c)
                scores[idx.to(scores.device), q0 : q0 + q_chunk] -= d.T.to(torch.float64) / len(idx)
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


# -- the registered methods ---------------------------------------------------------------------------
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
    **unknown: Any,
) -> np.ndarray:
    """Scores (N_train, Q) of the adjoint pass for `query` (see the module docstring).

    u: optional precomputed query gradients (P, Q) (skips flat_query_gradients).
    preconditioner: Adam / AdamW runs only: frozen (P_t a constant) | full (engine.influence.adam).
    """
    if unknown:
        raise ConfigError(f"unknown option(s) for the adjoint pass: {', '.join(sorted(unknown))}")
    if curvature not in CURVATURES:
        raise ConfigError(f"curvature must be one of {', '.join(CURVATURES)}, got {curvature!r}")
    if query.kind == "self":
        if curvature == "exact":
            raise ConfigError(
                "the self query needs one adjoint pass per training sample with exact curvature; "
                "use hydra or tracin for self-influence"
            )
        from engine.influence.selfinfluence import self_parallel_pass

        out = self_parallel_pass(
            loaded, curvature=curvature, last_epochs=last_epochs, progress=progress
        )
        return out.cpu().numpy()
    if u is None:
        u = flat_query_gradients(loaded, query, loaded.final_theta).detach()
    opts: dict[str, Any] = {"last_epochs": last_epochs, "progress": progress}
    opts["preconditioner"] = preconditioner
    if curvature == "exact":
        out = exact_pass(loaded, u, **opts)
    else:
        out = parallel_pass(loaded, u, curvature=curvature, dots=dots, **opts)
    return out.cpu().numpy()


register_method(
    "sgd-influence",
    description="SGD-Influence (Hara et al. 2019): exact batch Hessians, all steps",
    curvature="exact",
)(adjoint_scores)
register_method(
    "sgd-influence-last",
    description="SGD-Influence over the last epoch only (Hara's approximate version)",
    curvature="exact",
    last_epochs=1,
)(adjoint_scores)
register_method(
    "hydra",
    description="HYDRA fast approximation (Chen et al. 2021): Hessian := 0, weight decay kept, all steps",
    curvature="decay",
)(adjoint_scores)
register_method(
    "tracin",
    description="TracIn-style: Hessian := 0 and weight decay := 0, momentum kept, all steps",
    curvature="none",
)(adjoint_scores)
