"""influence-function: CG / LiSSA against a dense solve, and against true leave-one-out retraining
to convergence on a tiny convex problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau, pearsonr
from torch.func import functional_call

from engine.config import ConfigError, TrainConfig
from engine.data import DataSpec
from engine.experiments.loo import loo_changes
from engine.influence.influence_function import (
    inverse_hvp,
    per_sample_gradients,
    train_hvp,
)
from engine.influence.methods import get_method, run_method
from engine.influence.pergrad import unflatten_one
from engine.influence.queries import Query, flat, flat_query_gradients
from engine.loading import LoadedRun, load_run
from engine.models import per_sample_loss
from engine.train import train


def _logreg(root: Path, name: str, **cfg: object) -> LoadedRun:
    base: dict[str, object] = dict(
        model="logreg",
        binary=True,
        epochs=5,
        batch_size=5,
        lr=0.1,
        momentum=0.0,
        weight_decay=1e-2,
        schedule="invsqrt",
        dtype="float64",
        seed=0,
        device="cpu",
    )
    base.update(cfg)
    spec = DataSpec(dataset="digits", classes=[1, 7], n_train=30, n_val=20, n_test=12, seed=0)
    train(root / name, spec, TrainConfig(**base))  # type: ignore[arg-type]
    return load_run(root / name)


@pytest.fixture(scope="module")
def logreg(tmp_path_factory: pytest.TempPathFactory) -> LoadedRun:
    return _logreg(tmp_path_factory.mktemp("if"), "logreg")


def _dense(loaded: LoadedRun, damping: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(A = H + (lam + damping) I, per-sample gradients G (P, N)) by brute force."""
    th = loaded.final_theta

    def objective(vec: torch.Tensor) -> torch.Tensor:
        logits = functional_call(
            loaded.problem.model, unflatten_one(th, vec), (loaded.problem.x.all(),)
        )
        return per_sample_loss(logits, loaded.problem.y).mean()

    h = torch.autograd.functional.hessian(objective, flat(th))
    a = h + (loaded.cfg.weight_decay + damping) * torch.eye(h.shape[0], dtype=h.dtype)
    g = per_sample_gradients(loaded, th, torch.arange(loaded.problem.x.shape[0]))
    return a, g


def test_hvp_matches_dense_hessian(logreg: LoadedRun) -> None:
    a, _ = _dense(logreg)
    v = torch.randn(a.shape[0], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    hv = train_hvp(logreg, logreg.final_theta, v) + logreg.cfg.weight_decay * v
    assert torch.allclose(hv, a @ v, rtol=1e-12, atol=1e-14)


def test_cg_equals_dense_solve_and_scores_follow_the_formula(logreg: LoadedRun) -> None:
    a, g = _dense(logreg)
    u = flat_query_gradients(logreg, Query("val"), logreg.final_theta)
    exact = torch.linalg.solve(a, u)
    x, info = inverse_hvp(logreg, logreg.final_theta, u, solver="cg")
    assert float((x - exact).norm() / exact.norm()) < 1e-8
    assert info["indefinite"] == 0
    n = logreg.problem.x.shape[0]
    scores = run_method("influence-function", logreg, Query("val"))
    expected = (g.T @ exact).numpy() / n  # (1/N) <A^{-1} u, g_k>
    assert scores.shape == (n, 1)
    np.testing.assert_allclose(scores, expected, rtol=1e-7, atol=1e-12)


def test_lissa_close_to_the_exact_solve(logreg: LoadedRun) -> None:
    damping = 0.2  # keeps the series short enough for a unit test
    a, _ = _dense(logreg, damping)
    u = flat_query_gradients(logreg, Query("val"), logreg.final_theta)
    exact = torch.linalg.solve(a, u)
    x, info = inverse_hvp(logreg, logreg.final_theta, u, solver="lissa", damping=damping, depth=300)
    assert info["scale"] > float(torch.linalg.eigvalsh(a).max())  # the automatic scale converges
    assert float((x - exact).norm() / exact.norm()) < 1e-3
    # Stochastic minibatch LiSSA, averaged over repeats, lands near it too.
    xs, _ = inverse_hvp(
        logreg,
        logreg.final_theta,
        u,
        solver="lissa",
        damping=damping,
        depth=300,
        repeats=2,
        lissa_batch_size=10,
    )
    assert float(torch.nn.functional.cosine_similarity(xs[:, 0], exact[:, 0], dim=0)) > 0.95


def test_many_query_columns_share_one_batched_solve(logreg: LoadedRun) -> None:
    q = Query("test", tuple(logreg.bundle.test.ids[:3]))
    both = run_method("influence-function", logreg, q)
    assert both.shape == (logreg.problem.x.shape[0], 3)
    for j, sid in enumerate(q.test_ids):
        one = run_method("influence-function", logreg, Query("test", (sid,)))
        np.testing.assert_allclose(both[:, j], one[:, 0], rtol=1e-7, atol=1e-12)


def test_self_query_is_the_diagonal(logreg: LoadedRun) -> None:
    a, g = _dense(logreg)
    n = g.shape[1]
    s = run_method("influence-function", logreg, Query("self"), self_chunk=7)
    expected = ((torch.linalg.solve(a, g)) * g).sum(0).numpy() / n
    np.testing.assert_allclose(s[:, 0], expected, rtol=1e-7)
    assert (s > 0).all()  # removing a sample raises its own loss on a convex problem


def test_bad_options_are_config_errors(logreg: LoadedRun) -> None:
    assert get_method("influence-function").uses_query
    with pytest.raises(ConfigError):
        run_method("influence-function", logreg, Query("val"), solver="newton")
    with pytest.raises(ConfigError):
        run_method("influence-function", logreg, Query("val"), damping=-1.0)


@pytest.mark.slow
def test_matches_leave_one_out_at_convergence(tmp_path: Path) -> None:
    """Full-batch heavy-ball GD to convergence on a strongly convex logreg: the counterfactual
    runs converge to the leave-one-out optima, which the influence function approximates."""
    loaded = _logreg(
        tmp_path,
        "conv",
        batch_size=30,
        epochs=400,
        lr=0.5,
        momentum=0.9,
        weight_decay=0.05,
        schedule="constant",
    )
    objective_grad = per_sample_gradients(loaded, loaded.final_theta, torch.arange(30)).mean(1)
    objective_grad += loaded.cfg.weight_decay * flat(loaded.final_theta)
    assert float(objective_grad.norm()) < 1e-6  # converged (the changes are ~1e-3)
    truth = loo_changes(loaded)[:, 0]
    scores = run_method("influence-function", loaded, Query("val"))[:, 0]
    assert pearsonr(scores, truth).statistic > 0.97
    assert kendalltau(scores, truth).statistic > 0.85
