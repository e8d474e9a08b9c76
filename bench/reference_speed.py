"""Exact sgd-influence next to the reference algorithm of Hara et al. (2019), in one process.

    OMP_NUM_THREADS=1 .venv/bin/python bench/reference_speed.py [--n-train 2000] [--epochs 2]

The authors' code (sato9hara/sgd-influence, experiment/Sec71/infl.py, `infl_sgd`) runs their
Algorithm 2 as: keep every step's model in memory (saved while training); then for t = T-1 .. 0,
one backward per training sample of the batch for <u, g_i(theta_t)> (a Python loop), and one
double backward of the batch loss for the Hessian-vector product, u <- u - eta_t (H_t u + lam u).
This script writes that algorithm out (our code, the same structure) for a plain-SGD run
(momentum 0: the reference has none) and times it against `run_method("sgd-influence")` on the
same run and query (the mean validation loss), checks the two agree, and prints the ratio (each
side timed --repeat times, fastest kept). Time to collect the per-step models is reported apart
(the reference pays it during training).
Last line JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import best_of, train_with_fallback
from torch.func import functional_call


def reference_sgd_influence(loaded: Any, states: list[dict[str, torch.Tensor]]) -> np.ndarray:
    """Hara et al.'s Algorithm 2 as their infl_sgd runs it: per-sample loop + batch HVP per step.

    states: theta_t for t = 0..T-1 (every step's weights). Returns scores (N,), the estimated change
    of the mean validation loss when each sample is left out (negative = harmful), as ours.
    """
    from engine.influence.queries import Query, flat_query_gradients
    from engine.models import per_sample_loss

    problem, traj = loaded.problem, loaded.traj
    model, lam = problem.model, float(problem.weight_decay)
    names = list(states[0])
    u = flat_query_gradients(loaded, Query("val"), loaded.final_theta)[:, 0]
    infl = np.zeros(problem.x.shape[0])

    def flat(ts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in ts])

    for t in range(traj.n_steps - 1, -1, -1):
        idx, lr = traj.batch(t), traj.lr(t)
        xb, yb = problem.batch_inputs(idx, traj.aug_seed(t))
        leaves = {k: states[t][k].detach().requires_grad_(True) for k in names}
        params = list(leaves.values())
        for j, i in enumerate(idx.tolist()):  # one backward per sample, as the reference
            loss = per_sample_loss(functional_call(model, leaves, (xb[j : j + 1],)), yb[j : j + 1])
            g = flat(torch.autograd.grad(loss[0], params))
            # removing i takes (lr / B) g_i out of the step, so the loss changes by +(lr / B) <u, g_i>
            infl[i] += lr * float(u @ g) / len(idx)
        loss = per_sample_loss(functional_call(model, leaves, (xb,)), yb).mean()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        hu = flat(torch.autograd.grad(flat(grads) @ u, params))
        u = u - lr * (hu + lam * u)
    return infl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--model", default="lenet5")
    ap.add_argument(
        "--repeat", type=int, default=2, help="time each side this often, keep the fastest"
    )
    a = ap.parse_args()
    torch.set_num_threads(1)

    from engine.config import TrainConfig
    from engine.data import DataSpec
    from engine.influence.methods import run_method
    from engine.influence.queries import Query
    from engine.loading import load_run
    from engine.sgd import clone_params, sgd_step

    cfg = TrainConfig(
        model=a.model, epochs=a.epochs, batch_size=32, lr=0.05, momentum=0.0,
        weight_decay=5e-4, dtype="float32", device="cpu", seed=0,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        # digits has too few images for fixed split sizes: its default fractions instead
        sizes = {} if a.dataset == "digits" else {"n_val": 500, "n_test": 200}
        spec = DataSpec(dataset=a.dataset, n_train=a.n_train, seed=0, **sizes)
        res, spec, note = train_with_fallback(Path(tmp) / "r", spec, cfg)
        loaded = load_run(Path(tmp) / "r")
        problem, traj = loaded.problem, loaded.traj

        # best_of: the fastest of a.repeat calls (the first pays one-off warm-up)
        ours, t_ours, _ = best_of(
            a.repeat, lambda: run_method("sgd-influence", loaded, Query("val"))[:, 0]
        )

        t0 = time.perf_counter()
        theta, v = traj.load_checkpoint(0)
        states = []
        for t in range(traj.n_steps):
            states.append(clone_params(theta))
            sgd_step(problem, theta, v, traj.batch(t), lr=traj.lr(t), aug_seed=traj.aug_seed(t))
        t_states = time.perf_counter() - t0
        state_mb = (
            sum(sum(x.numel() * x.element_size() for x in s.values()) for s in states) / 2**20
        )

        ref, t_ref, _ = best_of(a.repeat, lambda: reference_sgd_influence(loaded, states))

    rel = float(np.abs(ours - ref).max() / np.abs(ref).max())
    out = {
        "dataset": spec.dataset,
        "model": a.model,
        "n_train": len(loaded.bundle.train),
        "steps": traj.n_steps,
        "train_seconds": res.seconds,
        "ours_seconds": t_ours,
        "reference_seconds": t_ref,
        "reference_states_seconds": t_states,
        "reference_states_mb": state_mb,
        "speedup": t_ref / t_ours,
        "max_rel_diff": rel,
        "note": note,
    }
    print(
        f"{a.model} on {spec.dataset}, {out['n_train']} training images, {traj.n_steps} SGD steps "
        f"(training {res.seconds:.1f}s){'; ' + note if note else ''}\n"
        f"sgd-influence (ours)            {t_ours:8.1f}s\n"
        f"reference algorithm (Hara infl_sgd structure) {t_ref:8.1f}s  "
        f"(+{t_states:.1f}s and {state_mb:.0f} MiB to keep every step's weights)\n"
        f"ours is {t_ref / t_ours:.1f}x faster; largest difference {rel:.1e} of the largest score"
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
