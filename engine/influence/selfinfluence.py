"""Hessian-free passes that need materialised per-sample gradients: self-influence and the
replay iterator the projected feature store shares (engine.influence.featurestore).

Same coefficients as the H := 0 adjoint pass (engine.influence.walk.step_coefficients):
score_k = sum_t coef_t <u, g_k(theta_t)>; NEGATIVE = HARMFUL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from engine.influence.pergrad import per_sample_grads, supports_fold
from engine.influence.rowgrads import capture_layers, row_chunks, rows_of_grads, step_and_capture
from engine.influence.walk import scalar_coefficients, segments_from, window_start
from engine.progress import Progress
from engine.sgd import sgd_step

if TYPE_CHECKING:
    from engine.loading import LoadedRun


# Per-sample gradients are handed out in blocks of at most this many bytes: a whole batch's (B, P)
# block is 64 x 11M x 4 B = 2.8 GB for a resnet18-size model, and twice that while it is assembled.
GRAD_BLOCK_BYTES = 64 * 2**20


def window_grads(
    loaded: LoadedRun,
    *,
    start: int,
    progress: Progress | None = None,
    max_bytes: int = GRAD_BLOCK_BYTES,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Replay the run from its checkpoints and yield (t, idx (b,), G (b, P)) for every step t >=
    start: the per-sample gradients at theta_t of samples idx of step t's (augmented) batch, in
    row blocks of at most max_bytes (b <= B; one step may yield several blocks, each used before
    the next is made). For the H := 0 passes that need materialised per-sample gradients
    (self-influence, the projected store)."""
    problem, traj = loaded.problem, loaded.traj
    total, done = traj.n_steps - start, 0
    # Linear / Conv2d models: the per-sample gradients come out of the replay step's own backward
    fused = supports_fold(problem.model)
    for s, e in segments_from(traj, start):
        theta, v = traj.load_checkpoint(s, device=problem.x.device)
        n_params = sum(p.numel() for p in theta.values())
        itemsize = next(iter(theta.values())).element_size()
        for t in range(s, e):
            idx = traj.batch(t)
            stepped = False
            if t >= start:
                xb, yb = problem.batch_inputs(idx, traj.aug_seed(t))
                chunks = row_chunks(len(idx), n_params, itemsize=itemsize, max_bytes=max_bytes)
                if fused:
                    if t + 1 < e:
                        layers = step_and_capture(problem, theta, v, xb, yb, lr=traj.lr(t))
                        stepped = True
                    else:  # a segment's last step: the next segment starts from a checkpoint
                        layers = capture_layers(problem, theta, xb, yb)
                    for rows in chunks:
                        yield t, idx[rows], rows_of_grads(theta, layers, rows)
                    del layers
                else:
                    for rows in chunks:
                        yield t, idx[rows], per_sample_grads(problem, theta, xb[rows], yb[rows])
                done += 1
                if progress is not None:
                    progress(done, total, None)
            if t + 1 < e and not stepped:
                sgd_step(problem, theta, v, idx, lr=traj.lr(t), aug_seed=traj.aug_seed(t))


def self_parallel_pass(
    loaded: LoadedRun,
    *,
    curvature: str,
    last_epochs: int | None = None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Self-influence (N, 1) for H := 0: score_k = sum_t coef_t <g_k(theta_T), g_k(theta_t)>.

    The query is k's own loss at theta_T on its un-augmented input; g_k(theta_t) uses the
    augmented input of step t, as in training. Positive = k lowers its own final loss.
    """
    problem = loaded.problem
    start = window_start(loaded.traj, last_epochs)
    coef = scalar_coefficients(loaded, curvature, start)
    theta_T = loaded.final_theta
    scores = torch.zeros(problem.x.shape[0], 1, dtype=torch.float64, device=problem.x.device)
    for t, idx, g_t in window_grads(loaded, start=start, progress=progress):
        dev_idx = idx.to(problem.x.device)
        g_T = per_sample_grads(problem, theta_T, problem.x[dev_idx], problem.y[dev_idx])
        scores.index_add_(
            0, dev_idx, ((g_t * g_T).sum(1, keepdim=True) * coef[t]).to(torch.float64)
        )
    return scores
