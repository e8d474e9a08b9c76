"""How much leave-one-out fidelity the frozen-preconditioner approximation costs on Adam runs.

For the Sec. 7.1 protocol with Adam (engine.experiments.fidelity.protocol(..., optimizer=...)),
per seed: Kendall's tau against true leave-one-out of

- sgd-influence: the adjoint pass with Adam's preconditioner P_t frozen (engine.influence.adam);
- full: -d f(theta_T) / d w_k by autograd through the unrolled Adam training with nothing frozen
  (the second moment s_{t+1}, hence P_t, differentiated too): the exact first-order estimate;

and tau(sgd-influence, full). Small runs only (the full derivative keeps the whole graph).

    .venv/bin/python bench/adam_frozen_gap.py --model logreg --seeds 3 --optimizer adam
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import torch

from engine.experiments.fidelity import data_spec, kendall, protocol
from engine.experiments.loo import loo_changes
from engine.influence.methods import run_method
from engine.influence.queries import Query, query_losses
from engine.loading import LoadedRun, load_run
from engine.sgd import batch_loss
from engine.train import train


def full_derivative_scores(loaded: LoadedRun) -> np.ndarray:
    """-d f(theta_T) / d w (N,) through the unrolled Adam training, preconditioner included."""
    p, traj = loaded.problem, loaded.traj
    th = {k: t.clone().requires_grad_(True) for k, t in loaded.initial_theta().items()}
    m = {k: torch.zeros_like(t) for k, t in th.items()}
    s = {k: torch.zeros_like(t) for k, t in th.items()}
    w = torch.ones(p.x.shape[0], dtype=p.x.dtype, requires_grad=True)
    b1, b2, eps = p.beta1, p.beta2, p.eps
    for t in range(traj.n_steps):
        idx, lr, k = traj.batch(t), traj.lr(t), t + 1
        xb, yb = p.batch_inputs(idx, traj.aug_seed(t))
        grads = torch.autograd.grad(
            batch_loss(p, th, xb, yb, w[idx]), list(th.values()), create_graph=True
        )
        for name, g in zip(list(th), grads, strict=True):
            g = g + p.l2_in_gradient * th[name]
            m[name] = b1 * m[name] + (1 - b1) * g
            s[name] = b2 * s[name] + (1 - b2) * g * g
            pos = s[name] > 0  # a weight whose gradient was always 0 (blank pixels): sqrt'(0)
            root = torch.where(pos, torch.where(pos, s[name], 1.0).sqrt(), 0.0)
            denom = root / math.sqrt(1 - b2**k) + eps
            decay = 1 - lr * p.decoupled_decay
            th[name] = th[name] * decay - lr / (1 - b1**k) * m[name] / denom
    for name, final in loaded.final_theta.items():
        torch.testing.assert_close(th[name].detach(), final, rtol=1e-10, atol=1e-12)
    f = query_losses(loaded, Query("val"), th)[0]
    return (-torch.autograd.grad(f, w)[0]).detach().numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="logreg", choices=["logreg", "dnn"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--optimizer", default="adam", choices=["adam", "adamw"])
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(a.seeds):
            run_dir = Path(tmp) / f"s{seed}"
            train(run_dir, data_spec(seed), protocol(a.model, seed, optimizer=a.optimizer))
            loaded = load_run(run_dir)
            truth = loo_changes(loaded, Query("val"))[:, 0]
            frozen = run_method("sgd-influence", loaded, Query("val"))[:, 0]
            full = full_derivative_scores(loaded)
            rows.append((kendall(frozen, truth), kendall(full, truth), kendall(frozen, full)))
            print(
                f"seed {seed}: tau frozen {rows[-1][0]:.3f}  full {rows[-1][1]:.3f}  "
                f"frozen vs full {rows[-1][2]:.3f}"
            )
    r = np.array(rows)
    print(f"{a.model} {a.optimizer}, {a.seeds} seeds, Kendall tau vs true leave-one-out:")
    for j, name in enumerate(("sgd-influence (P_t frozen)", "full derivative", "frozen vs full")):
        print(f"  {name:<28} {r[:, j].mean():.3f} ± {r[:, j].std():.3f}")


if __name__ == "__main__":
    main()
