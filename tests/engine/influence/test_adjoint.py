"""The adjoint pass against autograd through the unrolled training and against naive loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.config import ConfigError
from engine.influence.adjoint import adjoint_scores, exact_pass, parallel_pass
from engine.influence.methods import run_method
from engine.influence.queries import Query, flat_query_gradients, query_losses
from engine.influence.walk import step_coefficients, window_start
from engine.loading import LoadedRun
from engine.models import per_sample_loss
from engine.sgd import batch_loss, clone_params, replay_to, run_steps, sgd_step
from engine.trajectory import Params


def forward_states(loaded: LoadedRun) -> list[Params]:
    """theta_t for t = 0..T-1, replayed once from theta_0."""
    problem, traj = loaded.problem, loaded.traj
    theta, v = traj.load_checkpoint(0)
    out = []
    for t in range(traj.n_steps):
        out.append(clone_params(theta))
        sgd_step(problem, theta, v, traj.batch(t), lr=traj.lr(t), aug_seed=traj.aug_seed(t))
    return out


def sample_grad(loaded: LoadedRun, theta: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """grad l(z; theta) (P,) for one sample, by plain autograd."""
    from torch.func import functional_call

    leaves = {k: t.detach().requires_grad_(True) for k, t in theta.items()}
    loss = per_sample_loss(functional_call(loaded.problem.model, leaves, (x[None],)), y[None])[0]
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(leaves.values()))])


def unrolled_scores(
    loaded: LoadedRun, query: Query, *, start: int = 0, at: float = 1.0
) -> np.ndarray:
    """-d f(theta_T) / d w (N, Q) by autograd through steps start..T-1 with per-sample weights w,
    taken at w = at * 1 (every sample weighted `at` from step 0)."""
    problem, traj = loaded.problem, loaded.traj
    if at == 1.0:
        theta, v = replay_to(problem, traj, start)
    else:
        theta, v = traj.load_checkpoint(0)
        w0 = torch.full((problem.x.shape[0],), at, dtype=problem.x.dtype)
        run_steps(problem, traj, theta, v, start=0, stop=start, weights=w0)
    th = {k: t.clone().requires_grad_(True) for k, t in theta.items()}
    vv = dict(v)
    w = torch.full((problem.x.shape[0],), at, dtype=problem.x.dtype, requires_grad=True)
    lam, mom = problem.weight_decay, problem.momentum
    for t in range(start, traj.n_steps):
        idx = traj.batch(t)
        xb, yb = problem.batch_inputs(idx, traj.aug_seed(t))
        loss = batch_loss(problem, th, xb, yb, w[idx])
        grads = torch.autograd.grad(loss, list(th.values()), create_graph=True)
        for k, g in zip(list(th), grads, strict=True):
            vv[k] = mom * vv[k] + g + lam * th[k]
            th[k] = th[k] - traj.lr(t) * vv[k]
    f = query_losses(loaded, query, th)
    cols = [-torch.autograd.grad(f[q], w, retain_graph=True)[0] for q in range(f.shape[0])]
    return torch.stack(cols, 1).detach().numpy()


def naive_flat_pass(loaded: LoadedRun, query: Query, *, lam: float) -> np.ndarray:
    """The H := 0 pass written out: a, b vectors, per-sample gradients one sample at a time."""
    problem, traj = loaded.problem, loaded.traj
    u = flat_query_gradients(loaded, query, loaded.final_theta)
    a, b = u.clone(), torch.zeros_like(u)
    scores = torch.zeros(problem.x.shape[0], u.shape[1], dtype=torch.float64)
    states = forward_states(loaded)
    for t in range(traj.n_steps - 1, -1, -1):
        idx = traj.batch(t)
        xb, yb = problem.batch_inputs(idx, traj.aug_seed(t))
        c = b - traj.lr(t) * a
        for j, k in enumerate(idx.tolist()):
            g = sample_grad(loaded, states[t], xb[j], yb[j])
            scores[k] -= (g @ c) / len(idx)
        a = a + lam * c
        b = problem.momentum * c
    return scores.numpy()


def rel_err(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(x - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("query", ["val", "class", "test"])
def test_sgd_influence_equals_autograd_through_training(tiny_run: LoadedRun, query: str) -> None:
    q = Query("test", tuple(tiny_run.bundle.test.ids[:3])) if query == "test" else Query(query)
    ours = run_method("sgd-influence", tiny_run, q)
    ref = unrolled_scores(tiny_run, q)
    assert ours.shape == ref.shape == (30, len(q.column_names(tiny_run)))
    assert rel_err(ours, ref) < 1e-9


def test_sgd_influence_with_augmentation_equals_autograd(aug_run: LoadedRun) -> None:
    ours = run_method("sgd-influence", aug_run, Query("val"))
    assert rel_err(ours, unrolled_scores(aug_run, Query("val"))) < 1e-9


def test_sgd_influence_on_standardized_inputs_equals_autograd_and_leave_one_out(
    std_run: LoadedRun,
) -> None:
    from engine.experiments.loo import loo_changes

    ours = run_method("sgd-influence", std_run, Query("val"))
    assert rel_err(ours, unrolled_scores(std_run, Query("val"))) < 1e-9
    # the scaler belongs to the preprocessing: leaving a sample out does not refit it, so the
    # first-order estimate tracks true leave-one-out closely on this tiny run
    truth = loo_changes(std_run, Query("val"))
    assert np.corrcoef(ours[:, 0], truth[:, 0])[0, 1] > 0.95


def test_last_epoch_equals_window_restricted_autograd(tiny_run: LoadedRun) -> None:
    t0 = window_start(tiny_run.traj, 1)
    assert t0 == 2 * tiny_run.traj.steps_per_epoch
    ours = run_method("sgd-influence-last", tiny_run, Query("val"))
    assert rel_err(ours, unrolled_scores(tiny_run, Query("val"), start=t0)) < 1e-9
    two = run_method("sgd-influence", tiny_run, Query("val"), last_epochs=2)
    assert (
        rel_err(two, unrolled_scores(tiny_run, Query("val"), start=tiny_run.traj.steps_per_epoch))
        < 1e-9
    )
    # samples only see steps inside the window: the full pass differs
    assert rel_err(ours, run_method("sgd-influence", tiny_run, Query("val"))) > 1e-6


@pytest.mark.parametrize("fixture", ["tiny_run", "aug_run"])
@pytest.mark.parametrize(("method", "lam_on"), [("hydra", True), ("tracin", False)])
def test_hessian_free_methods_equal_naive_pass(
    request: pytest.FixtureRequest, fixture: str, method: str, lam_on: bool
) -> None:
    loaded: LoadedRun = request.getfixturevalue(fixture)
    for q in (Query("val"), Query("class")):
        ours = run_method(method, loaded, q)
        ref = naive_flat_pass(loaded, q, lam=loaded.problem.weight_decay if lam_on else 0.0)
        assert rel_err(ours, ref) < 1e-10


@pytest.mark.slow
def test_dot_product_routes_agree_on_convolutions(conv_run: LoadedRun) -> None:
    u = flat_query_gradients(conv_run, Query("class"), conv_run.final_theta)
    out = {
        m: parallel_pass(conv_run, u, curvature="decay", dots=m).numpy()
        for m in ("fold", "jvp", "vmap")
    }
    assert rel_err(out["fold"], out["vmap"]) < 1e-10
    assert rel_err(out["jvp"], out["vmap"]) < 1e-10
    assert np.abs(out["fold"]).max() > 0


@pytest.mark.slow
def test_exact_pass_on_convolutions_matches_autograd(conv_run: LoadedRun) -> None:
    ours = run_method("sgd-influence", conv_run, Query("val"))
    assert rel_err(ours, unrolled_scores(conv_run, Query("val"))) < 1e-9


def test_self_influence_matches_naive_sum(tiny_run: LoadedRun) -> None:
    problem, traj = tiny_run.problem, tiny_run.traj
    coef = step_coefficients(traj, momentum=problem.momentum, weight_decay=problem.weight_decay)
    theta_T = tiny_run.final_theta
    ref = np.zeros(30)
    for t, theta_t in enumerate(forward_states(tiny_run)):
        for k in traj.batch(t).tolist():
            g_t = sample_grad(tiny_run, theta_t, problem.x[k], problem.y[k])
            g_T = sample_grad(tiny_run, theta_T, problem.x[k], problem.y[k])
            ref[k] += coef[t] * float(g_t @ g_T)
    ours = run_method("hydra", tiny_run, Query("self"))[:, 0]
    assert rel_err(ours, ref) < 1e-10
    # the same as the ordinary pass with sample k's own final gradient as the query direction
    from engine.influence.pergrad import per_sample_grads

    g_T = per_sample_grads(problem, theta_T, problem.x.all(), problem.y)  # (N, P)
    as_queries = parallel_pass(tiny_run, g_T.T.contiguous(), curvature="decay").numpy()
    assert rel_err(ours, np.diag(as_queries)) < 1e-10
    assert np.median(ours) > 0  # a sample's own training lowers its own loss


def test_self_query_with_exact_curvature_is_refused(tiny_run: LoadedRun) -> None:
    with pytest.raises(ConfigError, match="self"):
        adjoint_scores(tiny_run, Query("self"), curvature="exact")


def test_progress_and_bad_options(tiny_run: LoadedRun) -> None:
    seen: list[tuple[int, int]] = []
    run_method("tracin", tiny_run, Query("val"), progress=lambda d, t, _: seen.append((d, t)))
    assert seen[-1] == (tiny_run.traj.n_steps, tiny_run.traj.n_steps)
    assert len(seen) == tiny_run.traj.n_steps
    with pytest.raises(ConfigError):
        run_method("hydra", tiny_run, Query("val"), last_epochs=0)
    with pytest.raises(ConfigError):
        run_method("hydra", tiny_run, Query("val"), bogus=1)


def test_exact_pass_with_few_stored_states_and_query_chunks(tiny_run: LoadedRun) -> None:
    """Segments longer than max_states are replayed in blocks; queries split in chunks: same result."""
    u = flat_query_gradients(tiny_run, Query("class"), tiny_run.final_theta)
    ref = exact_pass(tiny_run, u)
    seen: list[tuple[int, int]] = []
    low = exact_pass(
        tiny_run, u, max_states=2, q_chunk=1, progress=lambda d, t, _: seen.append((d, t))
    )
    assert torch.equal(ref, low)
    assert seen[-1] == (2 * tiny_run.traj.n_steps, 2 * tiny_run.traj.n_steps)


def test_damped_and_windowed_curvature_span_hydra_to_sgd_influence(tiny_run: LoadedRun) -> None:
    """hessian_scale 1 is SGD-Influence, 0 is HYDRA (H := 0, weight decay kept); exact_epochs K
    walks with H only over the last K epochs (all epochs: the exact pass itself)."""
    q = Query("val")
    exact = run_method("sgd-influence", tiny_run, q)
    hydra = run_method("hydra", tiny_run, q)
    np.testing.assert_allclose(
        run_method("sgd-influence", tiny_run, q, hessian_scale=1.0), exact, rtol=0, atol=0
    )
    np.testing.assert_allclose(
        run_method("sgd-influence", tiny_run, q, hessian_scale=0.0), hydra, rtol=1e-9, atol=1e-12
    )
    half = run_method("sgd-influence", tiny_run, q, hessian_scale=0.5)
    assert not np.allclose(half, exact) and not np.allclose(half, hydra)
    all_epochs = run_method("sgd-influence", tiny_run, q, exact_epochs=tiny_run.cfg.epochs)
    np.testing.assert_allclose(all_epochs, exact, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="hessian_scale must be in"):
        run_method("sgd-influence", tiny_run, q, hessian_scale=1.5)
    with pytest.raises(ConfigError, match="bend the exact curvature"):
        run_method("hydra", tiny_run, q, hessian_scale=0.5)


@pytest.mark.parametrize("query", ["val", "class"])
def test_group_centred_pass_equals_autograd_at_the_centre(tiny_run: LoadedRun, query: str) -> None:
    """group_fraction f: -d f / d w at w = (1 - f) 1, by autograd through training weighted 1 - f;
    with a window, a few stored states and query chunks too; f = 0 is the plain pass."""
    q = Query(query)
    ours = run_method("sgd-influence", tiny_run, q, group_fraction=0.3)
    ref = unrolled_scores(tiny_run, q, at=0.7)
    assert rel_err(ours, ref) < 1e-9
    assert rel_err(ours, run_method("sgd-influence", tiny_run, q)) > 1e-3  # a different point
    t0 = window_start(tiny_run.traj, 1)
    last = run_method("sgd-influence-last", tiny_run, q, group_fraction=0.3)
    assert rel_err(last, unrolled_scores(tiny_run, q, start=t0, at=0.7)) < 1e-9
    zero = run_method("sgd-influence", tiny_run, q, group_fraction=0.0)
    np.testing.assert_array_equal(zero, run_method("sgd-influence", tiny_run, q))


def test_group_centred_pass_refuses_what_it_cannot_do(tiny_run: LoadedRun) -> None:
    q = Query("val")
    with pytest.raises(ConfigError, match="group_fraction must be in"):
        run_method("sgd-influence", tiny_run, q, group_fraction=1.0)
    with pytest.raises(ConfigError, match="needs the exact curvature"):
        run_method("hydra", tiny_run, q, group_fraction=0.1)
    before = tiny_run.final_theta
    run_method("sgd-influence", tiny_run, q, group_fraction=0.5)
    # the run is untouched: the centred trajectory is a view held in memory
    assert tiny_run.traj.weights is None
    for k, t in tiny_run.final_theta.items():
        assert torch.equal(t, before[k])


def test_sgd_influence_on_a_resnet_with_groupnorm_equals_autograd(resnet_run: LoadedRun) -> None:
    """resnet9-gn (residual blocks, GroupNorm, max pooling), tiny and in float64: the exact pass
    (folded per-sample dots, GroupNorm included) against autograd through the unrolled training,
    and a bit-exact replay."""
    from engine.influence.pergrad import supports_fold
    from engine.verify import verify_replay

    assert supports_fold(resnet_run.problem.model)
    assert verify_replay(resnet_run.run.path)["exact"]
    ours = run_method("sgd-influence", resnet_run, Query("val"))
    assert rel_err(ours, unrolled_scores(resnet_run, Query("val"))) < 1e-9
