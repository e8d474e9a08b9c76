"""The adjoint pass on Adam / AdamW runs (preconditioner frozen, and full = the default) against
autograd and naive loops."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.func import functional_call

from engine.config import ConfigError
from engine.experiments.loo import loo_changes
from engine.influence.adam import adam_pass
from engine.influence.adjoint import exact_pass, parallel_pass
from engine.influence.featurestore import build_store
from engine.influence.methods import run_method
from engine.influence.queries import Query, flat_query_gradients, query_losses
from engine.influence.walk import window_start
from engine.loading import LoadedRun
from engine.models import per_sample_loss
from engine.sgd import SQ, STEP, adam_preconditioner, batch_loss, clone_params, replay_to, sgd_step
from engine.trajectory import Params
from tests.engine.influence.conftest import make_run

ADAM: dict[str, Any] = dict(beta1=0.8, beta2=0.95, eps=1e-6, lr=0.02, weight_decay=0.05)


@pytest.fixture(scope="module", params=["adam", "adamw"])
def adam_run(request: pytest.FixtureRequest, runs_root: Path) -> LoadedRun:
    """mlp [4], 2 classes, 3 epochs of 6 steps, a step schedule, checkpoints every 4 steps."""
    opt = request.param
    return make_run(runs_root, f"tiny-{opt}", optimizer=opt, checkpoint_every=4, **ADAM)


def decays(loaded: LoadedRun, curvature: str) -> tuple[float, float]:
    """(lamA, lamW) of the pass: L2 in the gradient (adam), decoupled (adamw); none drops both."""
    p = loaded.problem
    if curvature == "none":
        return 0.0, 0.0
    return p.l2_in_gradient, p.decoupled_decay


def unrolled_frozen(
    loaded: LoadedRun, query: Query, *, start: int = 0, frozen: bool = True
) -> np.ndarray:
    """-d f(theta_T) / d w (N, Q) by autograd through Adam steps start..T-1, P_t detached.

    frozen=False differentiates through the second moment too (nothing detached).
    """
    problem, traj = loaded.problem, loaded.traj
    theta, state = replay_to(problem, traj, start)
    assert int(state.get(STEP, torch.tensor(0))) == start
    th = {k: t.clone().requires_grad_(True) for k, t in theta.items()}
    m = {k: state[k].clone() for k in th}
    s = {k: state.get(k + SQ, torch.zeros_like(t)).clone() for k, t in th.items()}
    w = torch.ones(problem.x.shape[0], dtype=problem.x.dtype, requires_grad=True)
    b1, b2, eps = problem.beta1, problem.beta2, problem.eps
    lam_a, lam_w = decays(loaded, "exact")
    for t in range(start, traj.n_steps):
        idx, lr, k = traj.batch(t), traj.lr(t), t + 1
        xb, yb = problem.batch_inputs(idx, traj.aug_seed(t))
        loss = batch_loss(problem, th, xb, yb, w[idx])
        grads = torch.autograd.grad(loss, list(th.values()), create_graph=True)
        for name, g in zip(list(th), grads, strict=True):
            g = g + lam_a * th[name]
            m[name] = b1 * m[name] + (1 - b1) * g
            s[name] = b2 * s[name] + (1 - b2) * (g.detach() if frozen else g) ** 2
            pos = s[name] > 0  # sqrt'(0) is infinite: weights whose gradient is always 0
            root = torch.where(pos, torch.where(pos, s[name], 1.0).sqrt(), 0.0)
            denom = root / math.sqrt(1 - b2**k) + eps  # frozen: no graph
            th[name] = th[name] * (1 - lr * lam_w) - lr / (1 - b1**k) * m[name] / denom
    for name, final in loaded.final_theta.items():  # the same trajectory as training
        torch.testing.assert_close(th[name].detach(), final, rtol=1e-12, atol=1e-13)
    f = query_losses(loaded, query, th)
    cols = [-torch.autograd.grad(f[q], w, retain_graph=True)[0] for q in range(f.shape[0])]
    return torch.stack(cols, 1).detach().numpy()


def flat(d: Params, names: list[str]) -> torch.Tensor:
    return torch.cat([d[k].reshape(-1) for k in names])


def sample_grad(loaded: LoadedRun, theta: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """grad l(z; theta) (P,) for one sample, flattened in the final weights' key order."""
    names = list(loaded.final_theta)
    leaves = {k: theta[k].detach().requires_grad_(True) for k in names}
    loss = per_sample_loss(functional_call(loaded.problem.model, leaves, (x[None],)), y[None])[0]
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(leaves.values()))])


def naive_frozen_flat(loaded: LoadedRun, query: Query, *, curvature: str) -> np.ndarray:
    """The H := 0 pass written out: flat vectors a, b per query, one sample's gradient at a time."""
    problem, traj = loaded.problem, loaded.traj
    names = list(loaded.final_theta)
    theta, state = traj.load_checkpoint(0)
    states: list[tuple[Params, torch.Tensor]] = []
    for t in range(traj.n_steps):
        before = clone_params(theta)
        sgd_step(problem, theta, state, traj.batch(t), lr=traj.lr(t), aug_seed=traj.aug_seed(t))
        states.append((before, flat(adam_preconditioner(problem, state, traj.lr(t)), names)))
    u = flat_query_gradients(loaded, query, loaded.final_theta)
    a, b = u.clone(), torch.zeros_like(u)
    b1 = problem.beta1
    lam_a, lam_w = decays(loaded, curvature)
    scores = torch.zeros(problem.x.shape[0], u.shape[1], dtype=torch.float64)
    for t in range(traj.n_steps - 1, -1, -1):
        theta_t, pre = states[t]
        idx = traj.batch(t)
        xb, yb = problem.batch_inputs(idx, traj.aug_seed(t))
        c = b - pre[:, None] * a
        for j, k in enumerate(idx.tolist()):
            scores[k] -= (1 - b1) * (sample_grad(loaded, theta_t, xb[j], yb[j]) @ c) / len(idx)
        a = (1 - traj.lr(t) * lam_w) * a + (1 - b1) * lam_a * c
        b = b1 * c
    return scores.numpy()


def rel_err(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(x - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("query", ["val", "class"])
def test_sgd_influence_equals_autograd_with_the_preconditioner_frozen(
    adam_run: LoadedRun, query: str
) -> None:
    q = Query(query)
    ours = run_method("sgd-influence", adam_run, q, preconditioner="frozen")
    ref = unrolled_frozen(adam_run, q)
    assert ours.shape == ref.shape == (30, len(q.column_names(adam_run)))
    assert rel_err(ours, ref) < 1e-9


@pytest.mark.parametrize("last_epochs", [None, 1])
def test_full_preconditioner_equals_autograd_through_adam(
    adam_run: LoadedRun, last_epochs: int | None
) -> None:
    """preconditioner="full" is the exact first-order estimate: nothing frozen."""
    q = Query("class")
    start = window_start(adam_run.traj, last_epochs)
    ours = run_method("sgd-influence", adam_run, q, preconditioner="full", last_epochs=last_epochs)
    ref = unrolled_frozen(adam_run, q, start=start, frozen=False)
    assert rel_err(ours, ref) < 1e-9
    assert rel_err(ours, unrolled_frozen(adam_run, q, start=start)) > 1e-3  # not the frozen one
    # the block-wise replay (few stored states) and one query at a time give the same scores
    u = flat_query_gradients(adam_run, q, adam_run.final_theta)
    low = exact_pass(
        adam_run, u, last_epochs=last_epochs, max_states=2, q_chunk=1, preconditioner="full"
    )
    assert rel_err(low.numpy(), ours) < 1e-12
    with pytest.raises(ConfigError, match="preconditioner"):
        run_method("hydra", adam_run, q, preconditioner="exact")


def test_last_epoch_equals_window_restricted_autograd(adam_run: LoadedRun) -> None:
    t0 = window_start(adam_run.traj, 1)
    ours = run_method("sgd-influence-last", adam_run, Query("val"), preconditioner="frozen")
    assert rel_err(ours, unrolled_frozen(adam_run, Query("val"), start=t0)) < 1e-9


@pytest.mark.parametrize(("method", "curvature"), [("hydra", "decay"), ("tracin", "none")])
def test_hessian_free_methods_equal_naive_pass(
    adam_run: LoadedRun, method: str, curvature: str
) -> None:
    q = Query("class")
    ours = run_method(method, adam_run, q, preconditioner="frozen")
    assert rel_err(ours, naive_frozen_flat(adam_run, q, curvature=curvature)) < 1e-10


def test_dot_routes_blocks_and_chunks_agree(adam_run: LoadedRun) -> None:
    u = flat_query_gradients(adam_run, Query("class"), adam_run.final_theta)
    routes = {m: parallel_pass(adam_run, u, curvature="decay", dots=m) for m in ("fold", "jvp")}
    low = adam_pass(adam_run, u, curvature="decay", dots="vmap", max_states=2, q_chunk=1)
    assert rel_err(routes["fold"].numpy(), low.numpy()) < 1e-12
    assert rel_err(routes["jvp"].numpy(), low.numpy()) < 1e-12
    seen: list[tuple[int, int]] = []
    ex = exact_pass(adam_run, u)
    ex_low = exact_pass(
        adam_run, u, max_states=2, q_chunk=1, progress=lambda d, t, _: seen.append((d, t))
    )
    assert torch.equal(ex, ex_low)
    assert seen[-1] == (2 * adam_run.traj.n_steps, 2 * adam_run.traj.n_steps)
    # curvature matters: the Hessian-free pass is a different estimate
    assert rel_err(routes["fold"].numpy(), ex.numpy()) > 1e-6


def test_scalar_coefficient_routes_are_refused(adam_run: LoadedRun) -> None:
    with pytest.raises(ConfigError, match="SGD runs only"):
        run_method("hydra", adam_run, Query("self"))
    with pytest.raises(ConfigError, match="SGD runs only"):
        build_store(adam_run, "hydra", dim=16)
    with pytest.raises(ConfigError, match="group_fraction applies to SGD runs only"):
        run_method("sgd-influence-group", adam_run, Query("val"))


def test_true_leave_one_out_reruns_adam(adam_run: LoadedRun) -> None:
    """loo_changes (stacked runs) equals a weighted replay of the Adam run with k left out."""
    from engine.sgd import run_steps

    got = loo_changes(adam_run, Query("val"), samples=[0, 13])
    base = query_losses(adam_run, Query("val"), adam_run.final_theta)
    for j, k in enumerate((0, 13)):
        theta, state = adam_run.traj.load_checkpoint(0)
        w = torch.ones(adam_run.problem.x.shape[0], dtype=torch.float64)
        w[k] = 0.0
        run_steps(
            adam_run.problem,
            adam_run.traj,
            theta,
            state,
            start=0,
            stop=adam_run.traj.n_steps,
            weights=w,
        )
        want = (query_losses(adam_run, Query("val"), theta) - base).detach().numpy()
        np.testing.assert_allclose(got[j], want, rtol=1e-8, atol=1e-14)
    assert np.abs(got).max() > 0
