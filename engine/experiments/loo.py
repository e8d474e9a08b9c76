"""True leave-one-out by counterfactual SGD: the ground truth the estimators are judged against.

For training sample k, theta^{-k} reruns the logged trajectory from the run's initial weights
with k's loss term weighted 0 (same batches, same 1/B_t normalisation, same learning rates,
momentum, weight decay and augmentation), exactly the counterfactual of DESIGN.md section 1,
for SGD, Adam and AdamW runs alike (Adam's whole state, second moment included, is rerun).
The change f(theta^{-k}_T) - f(theta_T) is what every score estimates (negative = harmful).

Many counterfactual runs advance together: their parameters are stacked along a leading model
dimension and each step's gradients come from one vmapped call. Everything runs in float64 (the
changes are small differences of nearly equal numbers); the reference theta_T is recomputed by
the same code path with no sample left out, so both sides share the arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from torch.func import functional_call, vmap

from engine.executor import Task, current_executor
from engine.influence.queries import Query, query_losses
from engine.loading import LoadedRun, open_run
from engine.models import per_sample_loss
from engine.progress import Progress
from engine.sgd import apply_update
from engine.threads import pinned_threads
from engine.trajectory import Params


def _stacked_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """engine.models.per_sample_loss for M stacked models: logits (M, B, K), y (B,) -> (M, B).

    The binary case is written out (softplus(z) - y z, equal to the fused kernel to rounding),
    which is several times faster here for the many tiny calls this loop makes.
    """
    m, b, k = logits.shape
    if k == 1:
        z = logits[..., 0]
        return torch.nn.functional.softplus(z) - y.to(z.dtype) * z
    return per_sample_loss(logits.reshape(m * b, k), y.repeat(m)).reshape(m, b)


def counterfactual_finals(
    loaded: LoadedRun,
    left_out: Sequence[int | None],
    *,
    dtype: torch.dtype = torch.float64,
) -> Params:
    """Final weights of one counterfactual run per entry of `left_out`, stacked: {name: (M, ...)}.

    left_out[m] is the training index whose weight is 0 in run m (None = the unchanged run).
    """
    p = loaded.problem
    n = p.x.shape[0]
    m = len(left_out)
    dev = p.x.device
    theta0 = loaded.initial_theta()
    theta = {
        k: t.to(dtype).unsqueeze(0).repeat(m, *([1] * t.dim())).contiguous()
        for k, t in theta0.items()
    }
    vel = {k: torch.zeros_like(t) for k, t in theta.items()}
    w = torch.ones(m, n, dtype=dtype, device=dev)
    for j, k in enumerate(left_out):
        if k is not None:
            w[j, k] = 0.0
    with pinned_threads(p.threads):
        return _advance(loaded, theta, vel, w, dtype=dtype)


def _advance(
    loaded: LoadedRun, theta: Params, vel: Params, w: torch.Tensor, *, dtype: torch.dtype
) -> Params:
    """Run the logged steps on the stacked runs (theta, vel: (M, ...); w: (M, N) sample weights)."""
    p, traj = loaded.problem, loaded.traj
    lam, mom = float(p.weight_decay), float(p.momentum)
    dev = p.x.device
    forward = vmap(lambda params, xb: functional_call(p.model, params, (xb,)), in_dims=(0, None))
    for t in range(traj.n_steps):
        idx = traj.batch(t)
        xb, yb = p.batch_inputs(idx, traj.aug_seed(t))
        # The runs are independent: the gradient of the summed objectives with respect to the
        # stacked parameters is every run's own gradient (vmapped forward, plain backward).
        leaves = {name: par.detach().requires_grad_(True) for name, par in theta.items()}
        with torch.enable_grad():
            logits = forward(leaves, xb.to(dtype))  # (M, B, K)
            losses = _stacked_loss(logits, yb)  # (M, B)
            total = (losses * w[:, idx.to(dev)]).sum() / xb.shape[0]
            gl = torch.autograd.grad(total, list(leaves.values()))
        g = dict(zip(leaves, gl, strict=True))
        lr = traj.lr(t)
        if p.is_adam:  # Adam / AdamW: the shared elementwise update, on the stacked runs
            apply_update(p, theta, vel, [g[name] for name in theta], lr=lr)
            continue
        for name in theta:
            d = g[name] + lam * theta[name] if lam else g[name]
            vel[name] = mom * vel[name] + d if mom else d
            theta[name] = theta[name] - lr * vel[name]
    return theta


def _float64(loaded: LoadedRun) -> LoadedRun:
    """A shallow copy whose problem holds float64 inputs (everything here runs in float64)."""
    return replace(loaded, problem=replace(loaded.problem, x=loaded.problem.x.to(torch.float64)))


def chunk_losses(run_dir: str, *, left_out: Sequence[int | None], query: Query) -> np.ndarray:
    """(M, Q) float64 query losses at the final weights of the counterfactual runs that leave
    out each entry of `left_out` (None = none): one engine.executor task of loo_changes."""
    run64 = _float64(open_run(run_dir))
    with torch.no_grad(), pinned_threads(run64.problem.threads):
        finals = counterfactual_finals(run64, list(left_out))
        return np.stack(
            [
                query_losses(run64, query, {k: t[j] for k, t in finals.items()}).cpu().numpy()
                for j in range(len(left_out))
            ]
        )


def loo_changes(
    loaded: LoadedRun,
    query: Query | None = None,
    *,
    samples: Sequence[int] | None = None,
    chunk: int = 100,
    progress: Progress | None = None,
) -> np.ndarray:
    """True leave-one-out changes f(theta^{-k}_T) - f(theta_T): (len(samples), Q), float64.

    samples: training indices (default: all N). query: default the mean validation loss.
    chunk: counterfactual runs advanced together (memory ~ chunk x parameters); each chunk is a
    task of the current executor (engine.executor), which opens the run from its directory.
    """
    query = query or Query("val")
    n = loaded.problem.x.shape[0]
    ks = list(range(n)) if samples is None else [int(k) for k in samples]
    parts = [ks[i : i + chunk] for i in range(0, len(ks), chunk)]
    jobs = [Task(chunk_losses, {"left_out": [None], "query": query}, "leave-one-out reference")]
    jobs += [
        Task(chunk_losses, {"left_out": part, "query": query},
             f"leave-one-out of training samples {part[0]}..{part[-1]}")
        for part in parts
    ]  # fmt: skip
    got = current_executor().map(
        loaded.run.path,
        jobs,
        progress=None if progress is None else lambda d, _t, v: progress(d, len(jobs), v),
    )
    base = got[0][0]
    return np.concatenate([g - base for g in got[1:]]) if parts else np.zeros((0, len(base)))
