"""One SGD / Adam step (engine.sgd): the update equals torch.optim's, and what the optimisers share."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from engine.sgd import SQ, STEP, Problem, apply_update, batch_loss, sgd_step


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_update_matches_torch_optim(optimizer: str) -> None:
    """Our step equals torch.optim.Adam / AdamW over steps with a changing learning rate."""
    problem, theta = tiny_problem(optimizer)
    cls = torch.optim.Adam if optimizer == "adam" else torch.optim.AdamW

    def check(state: dict[str, torch.Tensor], opt: torch.optim.Optimizer, ref: dict) -> None:  # type: ignore[type-arg]
        for k in theta:
            torch.testing.assert_close(
                state[k + SQ], opt.state[ref[k]]["exp_avg_sq"], rtol=1e-12, atol=1e-14
            )

    state = step_beside_torch(
        problem, theta, lambda ps: cls(ps, lr=1.0, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.1),
        lrs=[0.05 / (1 + t) for t in range(12)], batch=6, seed=1, each_step=check,
    )  # fmt: skip
    assert int(state[STEP]) == 12
    assert not torch.equal(theta["1.weight"], tiny_problem(optimizer)[1]["1.weight"])


def test_adam_and_adamw_differ_only_through_weight_decay() -> None:
    grads = [torch.full((3,), 0.5, dtype=torch.float64)]
    out = {}
    for opt in ("adam", "adamw"):
        for lam in (0.0, 0.3):
            p, _ = tiny_problem(opt)
            p.weight_decay = lam
            theta = {"w": torch.ones(3, dtype=torch.float64)}
            state = {"w": torch.zeros(3, dtype=torch.float64)}
            apply_update(p, theta, state, grads, lr=0.1)
            out[opt, lam] = theta["w"]
    assert torch.equal(out["adam", 0.0], out["adamw", 0.0])
    assert not torch.allclose(out["adam", 0.3], out["adamw", 0.3])


def step_beside_torch(
    problem: Problem,
    theta: dict[str, torch.Tensor],
    make_opt: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
    *,
    lrs: list[float],
    batch: int,
    seed: int,
    each_step: Callable[..., None] | None = None,
) -> dict[str, torch.Tensor]:
    """Take sgd_step and the torch optimiser side by side on the same random batches with the
    learning rates `lrs`; after each step the weights must agree to 1e-12 (and each_step(state,
    opt, ref) may check more). Returns our optimiser state (it starts at zero, as training does)."""
    state = {k: torch.zeros_like(t) for k, t in theta.items()}
    ref = {k: t.clone().requires_grad_(True) for k, t in theta.items()}
    opt = make_opt(list(ref.values()))
    gen = torch.Generator().manual_seed(seed)
    for lr in lrs:
        idx = torch.randperm(problem.x.shape[0], generator=gen)[:batch]
        sgd_step(problem, theta, state, idx, lr=lr, aug_seed=0)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        batch_loss(problem, ref, problem.x[idx], problem.y[idx], None).backward()
        opt.step()
        for k in theta:
            torch.testing.assert_close(theta[k], ref[k].detach(), rtol=1e-12, atol=1e-12)
        if each_step is not None:
            each_step(state, opt, ref)
    return state


def tiny_problem(optimizer: str) -> tuple[Problem, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(12, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)
    ).double()
    x = torch.rand(20, 1, 3, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    problem = Problem(
        model=model,
        x=x,
        y=y,
        momentum=0.0,
        weight_decay=0.1,
        optimizer=optimizer,
        beta1=0.8,
        beta2=0.9,
        eps=1e-3,
    )
    return problem, {k: p.detach().clone() for k, p in model.named_parameters()}


def test_sgd_step_equals_torch_sgd_with_momentum_and_weight_decay() -> None:
    """PyTorch SGD (dampening 0, no Nesterov): v = p v + g + lam theta; theta -= lr v."""
    problem, theta = tiny_problem("sgd")
    problem.momentum, problem.weight_decay = 0.9, 0.05
    step_beside_torch(
        problem, theta, lambda ps: torch.optim.SGD(ps, lr=1.0, momentum=0.9, weight_decay=0.05),
        lrs=[0.1 * 0.9**t for t in range(10)], batch=5, seed=2,
    )  # fmt: skip


def test_weights_and_renormalise_decide_the_batch_mean() -> None:
    """Weight 0 drops a sample's term; the mean stays over B (the logged 1/B_t) unless renormalised
    over the samples that stay, which equals a step on the smaller batch."""
    problem, theta0 = tiny_problem("sgd")
    problem.weight_decay = 0.0  # the decay term is not a batch mean
    idx = torch.arange(6)
    w = torch.ones(20, dtype=torch.float64)
    w[[1, 4]] = 0
    keep = torch.tensor([0, 2, 3, 5])

    def step(**kw: object) -> dict[str, torch.Tensor]:
        th = {k: t.clone() for k, t in theta0.items()}
        v = {k: torch.zeros_like(t) for k, t in th.items()}
        sgd_step(problem, th, v, kw.pop("batch", idx), lr=0.1, aug_seed=0, **kw)  # type: ignore[arg-type]
        return th

    logged, renorm, smaller = step(weights=w), step(weights=w, renormalise=True), step(batch=keep)
    for k in theta0:
        torch.testing.assert_close(renorm[k], smaller[k], rtol=1e-12, atol=1e-12)
        d_logged, d_small = theta0[k] - logged[k], theta0[k] - smaller[k]
        torch.testing.assert_close(d_logged, d_small * len(keep) / len(idx), rtol=1e-10, atol=1e-12)
