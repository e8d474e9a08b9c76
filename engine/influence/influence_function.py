"""Influence functions (Koh & Liang 2017) at the final weights theta_T.

With the training objective F(theta) = (1/N) sum_i l(z_i; theta) + (lam/2) ||theta||^2 (lam = the
run's weight decay), A = H + lam I + damping I, H = (1/N) sum_i hess l(z_i; theta_T) the full
training Hessian (never formed: Hessian-vector products), and u = grad f(theta_T) (P,) per query::

    score_k = (1/N) * <A^{-1} u, g_k(theta_T)>

Sign: removing sample k moves the optimum by about +(1/N) A^{-1} g_k, so the query changes by
(1/N) <u, A^{-1} g_k>: the estimated change of the query loss if k is removed; NEGATIVE = HARMFUL.

Solvers: "cg" (conjugate gradient, batched over the Q query columns; on a non-convex model a
column that meets non-positive curvature stops there, i.e. truncated CG as in Koh & Liang's
Newton-CG solver, with a warning: add damping; Hara et al.'s K&L baseline for their DNN used
damping 1.0) and "lissa" (Agarwal et al.'s stochastic series
h_j = b + h_{j-1} - A h_{j-1} / scale, which converges to scale * A^{-1} b when scale exceeds
A's largest eigenvalue; scale=None estimates it by power iteration).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.func import functional_call, grad, jvp, vmap

from engine.config import ConfigError
from engine.influence.pergrad import unflatten_one
from engine.influence.queries import Query, flat, flat_query_gradients
from engine.influence.registry import register_method
from engine.models import per_sample_loss
from engine.options import option
from engine.progress import Progress
from engine.trajectory import Params

if TYPE_CHECKING:
    from engine.loading import LoadedRun

MatVec = Callable[[torch.Tensor], torch.Tensor]


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def train_hvp(
    loaded: LoadedRun,
    theta: Params,
    vectors: torch.Tensor,
    *,
    indices: torch.Tensor | None = None,
    batch_size: int = 2048,
) -> torch.Tensor:
    """H V for the mean training-loss Hessian H at `theta` (no weight decay): (P, Q) -> (P, Q).

    indices: optional subset of training indices (a minibatch for stochastic LiSSA); H is the
    mean over that subset. Forward-over-reverse products, vmapped over the Q columns.
    """
    p = loaded.problem
    idx = torch.arange(p.x.shape[0]) if indices is None else indices
    n = len(idx)
    out = torch.zeros_like(vectors)

    for sl in _chunks(n, batch_size):
        ii = idx[sl].to(p.x.device)
        xb, yb = p.x[ii], p.y[ii]

        def total_loss(
            params: Params, xb: torch.Tensor = xb, yb: torch.Tensor = yb
        ) -> torch.Tensor:
            return per_sample_loss(functional_call(p.model, params, (xb,)), yb).sum()

        g_fn = grad(total_loss)

        def hvp_col(v: torch.Tensor, g_fn: Callable[[Params], Params] = g_fn) -> torch.Tensor:
            out = jvp(g_fn, (theta,), (unflatten_one(theta, v),))
            return flat(out[1])

        out += vmap(hvp_col, in_dims=1, out_dims=1)(vectors)
    return out / n


def sample_dots(
    loaded: LoadedRun, theta: Params, vectors: torch.Tensor, *, batch_size: int = 2048
) -> torch.Tensor:
    """<g_k(theta), v_q> for every training sample k and column q: (P, Q) -> (N, Q).

    One forward-mode JVP of the per-sample loss vector per column; no per-sample gradient is
    materialised.
    """
    p = loaded.problem
    n = p.x.shape[0]
    out = torch.zeros(n, vectors.shape[1], dtype=vectors.dtype, device=vectors.device)
    for sl in _chunks(n, batch_size):
        xb, yb = p.x[sl], p.y[sl]

        def losses(params: Params, xb: torch.Tensor = xb, yb: torch.Tensor = yb) -> torch.Tensor:
            return per_sample_loss(functional_call(p.model, params, (xb,)), yb)

        def col(v: torch.Tensor, losses: Callable[[Params], torch.Tensor] = losses) -> torch.Tensor:
            return jvp(losses, (theta,), (unflatten_one(theta, v),))[1]

        out[sl] = vmap(col, in_dims=1, out_dims=1)(vectors)
    return out


def per_sample_gradients(loaded: LoadedRun, theta: Params, indices: torch.Tensor) -> torch.Tensor:
    """Flat per-sample gradients (P, len(indices)) of the training samples `indices` at theta."""
    p = loaded.problem
    ii = indices.to(p.x.device)

    def one(params: Params, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return per_sample_loss(functional_call(p.model, params, (xi[None],)), yi[None])[0]

    g = vmap(grad(one), in_dims=(None, 0, 0))(theta, p.x[ii], p.y[ii])
    return torch.cat([g[k].reshape(len(ii), -1) for k in theta], dim=1).T.contiguous()


def cg_solve(
    matvec: MatVec, b: torch.Tensor, *, tol: float = 1e-10, max_iter: int = 1000
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Solve A X = B column by column with conjugate gradient, all columns at once.

    b: (P, Q). Stops a column when its residual norm <= tol * ||b_q||, or when it meets
    non-positive curvature (A not positive definite there; a warning says so).
    Returns (X (P, Q), info {"iterations", "max_rel_residual", "indefinite"}).
    """
    x = torch.zeros_like(b)
    r = b.clone()
    d = r.clone()
    rs = (r * r).sum(0)
    bnorm = b.norm(dim=0).clamp_min(torch.finfo(b.dtype).tiny)
    active = rs.sqrt() > tol * bnorm
    indefinite = torch.zeros_like(active)
    it = 0
    while it < max_iter and bool(active.any()):
        it += 1
        ad = matvec(d)
        dad = (d * ad).sum(0)
        bad = active & (dad <= 0)
        if bool(bad.any()):
            indefinite |= bad
            active &= ~bad
        alpha = torch.where(
            active, rs / torch.where(active, dad, torch.ones_like(dad)), torch.zeros_like(rs)
        )
        x += alpha * d
        r -= alpha * ad
        rs_new = (r * r).sum(0)
        beta = torch.where(
            active, rs_new / torch.where(rs > 0, rs, torch.ones_like(rs)), torch.zeros_like(rs)
        )
        d = r + beta * d
        rs = rs_new
        active &= rs.sqrt() > tol * bnorm
    if bool(indefinite.any()):
        warnings.warn(
            f"conjugate gradient met non-positive curvature in {int(indefinite.sum())} column(s): "
            "the damped Hessian is not positive definite; increase damping",
            RuntimeWarning,
            stacklevel=2,
        )
    rel = float((r.norm(dim=0) / bnorm).max()) if b.shape[1] else 0.0
    return x, {"iterations": it, "max_rel_residual": rel, "indefinite": int(indefinite.sum())}


def power_iteration(
    matvec: MatVec,
    p: int,
    *,
    dtype: torch.dtype,
    device: torch.device,
    iters: int = 30,
    seed: int = 0,
) -> float:
    """Largest-magnitude eigenvalue estimate of the symmetric operator `matvec` on R^p."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(p, 1, generator=g, dtype=dtype).to(device)
    v /= v.norm()
    lam = 0.0
    for _ in range(iters):
        w = matvec(v)
        lam = float((v * w).sum())
        nrm = w.norm()
        if float(nrm) == 0.0:
            return 0.0
        v = w / nrm
    return abs(lam)


def lissa_solve(
    matvec_fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    b: torch.Tensor,
    *,
    n: int,
    shift: float,
    scale: float | None = None,
    depth: int = 1000,
    repeats: int = 1,
    batch_size: int | None = None,
    seed: int = 0,
    tol: float = 0.0,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """LiSSA estimate of (H + shift I)^{-1} B for B (P, Q).

    matvec_fn(V, idx) = H_idx V, the mean Hessian over training indices idx (None = all n).
    batch_size None = full-batch products (deterministic); otherwise a fresh seeded minibatch
    per recursion step. Each repeat runs `depth` steps of h = b + h - (H + shift) h / scale and
    the estimates h / scale are averaged. tol > 0 stops a full-batch repeat early when the
    update's relative size falls below it.
    """
    if scale is None:
        lam_max = power_iteration(
            lambda v: matvec_fn(v, None), b.shape[0], dtype=b.dtype, device=b.device
        )
        scale = 1.5 * (lam_max + shift) + 1e-12
    if not (scale > 0 and depth >= 1 and repeats >= 1):
        raise ConfigError("lissa needs scale > 0, depth >= 1 and repeats >= 1")
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros_like(b)
    steps = 0
    for _ in range(repeats):
        h = b.clone()
        for _j in range(depth):
            idx = None if batch_size is None else torch.randint(0, n, (batch_size,), generator=gen)
            new = b + h - (matvec_fn(h, idx) + shift * h) / scale
            steps += 1
            if not bool(torch.isfinite(new).all()):
                raise ConfigError(
                    f"lissa diverged (scale {scale:.3g} is too small); pass a larger scale"
                )
            done = (
                tol > 0
                and batch_size is None
                and float((new - h).norm() / new.norm().clamp_min(1e-300)) < tol
            )
            h = new
            if done:
                break
        total += h / scale
    return total / repeats, {"scale": scale, "steps": steps}


def inverse_hvp(
    loaded: LoadedRun,
    theta: Params,
    vectors: torch.Tensor,
    *,
    solver: str = "cg",
    damping: float = 0.0,
    tol: float = 1e-10,
    max_iter: int = 1000,
    scale: float | None = None,
    depth: int = 1000,
    repeats: int = 1,
    lissa_batch_size: int | None = None,
    seed: int = 0,
    batch_size: int = 2048,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """(H + lam I + damping I)^{-1} V for V (P, Q); lam = the run's weight decay."""
    shift = float(loaded.cfg.weight_decay) + float(damping)
    n = loaded.problem.x.shape[0]
    if solver == "cg":
        return cg_solve(
            lambda v: train_hvp(loaded, theta, v, batch_size=batch_size) + shift * v,
            vectors,
            tol=tol,
            max_iter=max_iter,
        )
    if solver == "lissa":
        return lissa_solve(
            lambda v, idx: train_hvp(loaded, theta, v, indices=idx, batch_size=batch_size),
            vectors,
            n=n,
            shift=shift,
            scale=scale,
            depth=depth,
            repeats=repeats,
            batch_size=lissa_batch_size,
            seed=seed,
        )
    raise ConfigError(f"influence-function solver must be cg or lissa, got {solver!r}")


@dataclass(frozen=True)
class InfluenceFunctionOptions:
    """Options of the Koh & Liang influence function (the inverse-Hessian solve)."""

    solver: str = option("cg", choices=("cg", "lissa"), help="cg (exact) | lissa (stochastic)")
    damping: float = option(0.0, help="lambda added to the Hessian's diagonal (>= 0)")
    tol: float = option(1e-10, help="cg: relative residual to stop at")
    max_iter: int = option(1000, help="cg: most iterations")
    scale: float | None = option(None, help="lissa: the Hessian's scale (default: estimated)")
    depth: int = option(1000, help="lissa: recursion depth")
    repeats: int = option(1, help="lissa: independent estimates averaged")
    lissa_batch_size: int | None = option(None, help="lissa: samples per Hessian-vector product")
    seed: int = option(0, help="lissa: sampling seed")
    batch_size: int = option(2048, help="samples per batch of per-sample gradients")
    self_chunk: int = option(64, help="the self query: samples solved at once")


@register_method(
    "influence-function",
    description="Koh & Liang influence function at the final weights (CG or LiSSA inverse-Hessian solve)",
    options=InfluenceFunctionOptions(),
)
def influence_function(
    loaded: LoadedRun,
    query: Query,
    *,
    progress: Progress | None = None,
    solver: str = "cg",
    damping: float = 0.0,
    tol: float = 1e-10,
    max_iter: int = 1000,
    scale: float | None = None,
    depth: int = 1000,
    repeats: int = 1,
    lissa_batch_size: int | None = None,
    seed: int = 0,
    batch_size: int = 2048,
    self_chunk: int = 64,
) -> np.ndarray:
    """Scores (N_train, Q) = (1/N) <A^{-1} u_q, g_k(theta_T)>; negative = harmful.

    The 'self' query returns (N_train, 1): (1/N) <A^{-1} g_k, g_k>, the estimated change of
    sample k's own loss if k is removed (one batched solve per `self_chunk` samples).
    """
    if damping < 0 or not math.isfinite(damping):
        raise ConfigError(f"damping must be a finite number >= 0, got {damping}")
    theta = loaded.final_theta
    n = loaded.problem.x.shape[0]
    solve_opts: dict[str, Any] = dict(
        solver=solver,
        damping=damping,
        tol=tol,
        max_iter=max_iter,
        scale=scale,
        depth=depth,
        repeats=repeats,
        lissa_batch_size=lissa_batch_size,
        seed=seed,
        batch_size=batch_size,
    )
    if query.kind == "self":
        out = torch.zeros(n, dtype=loaded.problem.x.dtype)
        chunks = _chunks(n, self_chunk)
        for j, sl in enumerate(chunks):
            g = per_sample_gradients(loaded, theta, torch.arange(sl.start, sl.stop))
            x, _ = inverse_hvp(loaded, theta, g, **solve_opts)
            out[sl] = (x * g).sum(0).cpu() / n
            if progress is not None:
                progress(j + 1, len(chunks), None)
        return out.numpy()[:, None]
    u = flat_query_gradients(loaded, query, theta)
    if progress is not None:
        progress(0, 2, None)
    x, _ = inverse_hvp(loaded, theta, u, **solve_opts)
    if progress is not None:
        progress(1, 2, None)
    scores = sample_dots(loaded, theta, x, batch_size=batch_size) / n
    if progress is not None:
        progress(2, 2, None)
    return scores.detach().cpu().numpy()
