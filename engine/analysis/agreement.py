"""How well a fast estimator agrees with exact SGD-Influence on one run (HYDRA Figs. 3-5).

Two views of the same question:

- scores: the fast method's and the exact method's scores for one query (default the mean
  validation loss): the sign-error rate (fraction of training samples whose sign differs: a
  helpful sample called harmful or the reverse; HYDRA Fig. 4), Spearman's rank correlation
  (Fig. 5), and Pearson's.
- parameters: for a small sample of training points k, the parameter-space sensitivity
  J_t(k) = d theta_t / d w_k (w_k the weight of k's loss term, w = 1 in training) along the
  whole trajectory, exact and approximated, and the norm of their difference over the steps
  (HYDRA Fig. 3's ||nabla_{t,i} - nabla~_{t,i}||; HYDRA's nabla is d theta_t / d eps_i with weights
  1/N + eps_i, i.e. N times our J_t). Forward-mode, unrolled with the logged batches:

      V_0 = 0, J_0 = 0
      V_{t+1} = p V_t + [k in S_t] (1/B_t) g_k(theta_t) + (H_t + lam I) J_t
      J_{t+1} = J_t - eta_t V_{t+1}

  with H_t the batch Hessian (exact: Hessian-vector products, all K samples vmapped); hydra sets
  H_t := 0, tracin H_t := 0 and lam := 0, sgd-influence-last keeps J = V = 0 before its window.
  This is the same linear recursion the adjoint pass runs backwards, so -<u, J_T(k)> equals the
  method's score_k for query u exactly (checked in the tests).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from engine.config import ConfigError
from engine.influence.methods import get_method

if TYPE_CHECKING:
    from engine.loading import LoadedRun
    from engine.progress import Progress
    from engine.trajectory import Params

__all__ = [
    "agreement",
    "agreement_figure",
    "score_agreement",
    "sensitivities",
]

FAST_METHODS = ("hydra", "sgd-influence-last", "tracin")


def score_agreement(fast: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    """{"n", "sign_error_rate", "spearman", "pearson", "top10_overlap"} of two score vectors (N,).

    A sign error is a sample whose two scores have different signs (zeros count as their own
    sign). top10_overlap: |top 10% harmful by fast and by exact| / (10% of N).
    """
    from scipy.stats import pearsonr, spearmanr

    f = np.asarray(fast, dtype=np.float64).ravel()
    e = np.asarray(exact, dtype=np.float64).ravel()
    if f.shape != e.shape or f.size < 2:
        raise ConfigError(
            f"need two score vectors of the same length >= 2, got {f.shape}, {e.shape}"
        )
    n_top = max(1, int(round(0.1 * f.size)))
    top_f = set(np.argsort(f, kind="stable")[:n_top].tolist())
    top_e = set(np.argsort(e, kind="stable")[:n_top].tolist())
    same = np.array_equal(f, e)
    return {
        "n": int(f.size),
        "sign_error_rate": float(np.mean(np.sign(f) != np.sign(e))),
        "spearman": 1.0 if same else float(spearmanr(f, e).statistic),
        "pearson": 1.0 if same else float(pearsonr(f, e).statistic),
        "top10_overlap": len(top_f & top_e) / n_top,
    }


def _settings(method: str, loaded: LoadedRun) -> tuple[str, int]:
    """(curvature, first step with a nonzero sensitivity) of an adjoint method."""
    from engine.influence.walk import window_start

    spec = get_method(method)
    curvature = spec.defaults.get("curvature")
    if curvature is None:
        raise ConfigError(
            f"{method!r} is not a trajectory method; the parameter-space comparison needs one of "
            "sgd-influence, sgd-influence-last, hydra, tracin"
        )
    return str(curvature), window_start(loaded.traj, spec.defaults.get("last_epochs"))


def _sample_grads(
    loaded: LoadedRun, theta: Params, xb: torch.Tensor, yb: torch.Tensor, pos: list[list[int]]
) -> Params:
    """{name: (K, *shape)}: the summed gradient of k's loss over its positions pos[k] in the batch."""
    from engine.influence.pergrad import per_sample_grads, unflatten

    flat_all = [i for p in pos for i in p]
    p_total = sum(t.numel() for t in theta.values())
    out = torch.zeros(p_total, len(pos), dtype=xb.dtype, device=xb.device)
    if flat_all:
        g = per_sample_grads(loaded.problem, theta, xb[flat_all], yb[flat_all])  # (n, P)
        j = 0
        for k, p in enumerate(pos):
            for _ in p:
                out[:, k] += g[j]
                j += 1
    return unflatten(theta, out)


def sensitivities(
    loaded: LoadedRun,
    samples: np.ndarray,
    methods: tuple[str, ...],
    *,
    every: int = 1,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Unrolled d theta_t / d w_k for the training indices `samples` (K,) under each method.

    Returns {"steps": (S,) recorded steps t (J_t is recorded after step t-1; t = T last),
    "norm": {method: (S, K) ||J_t(k)||}, "diff": {method: (S, K) ||J_t(k) - J_t^{methods[0]}(k)||},
    "final": {method: (P, K) J_T}}. The first method is the reference for "diff".
    """
    from engine.influence.pergrad import flatten_batched
    from engine.influence.walk import hvp_and_dots
    from engine.sgd import sgd_step

    problem, traj = loaded.problem, loaded.traj
    if problem.is_adam:
        raise ConfigError(
            "the parameter-space agreement unrolls SGD's update and does not support "
            f"{problem.optimizer} runs; compare the scores with score_agreement instead"
        )
    samples = np.asarray(samples, dtype=np.int64)
    cfg = {m: _settings(m, loaded) for m in methods}
    lam, mom = problem.weight_decay, problem.momentum
    theta, v = traj.load_checkpoint(0, device=problem.x.device)

    def zeros() -> Params:
        return {
            n: torch.zeros(len(samples), *t.shape, dtype=t.dtype, device=t.device)
            for n, t in theta.items()
        }

    J = {m: zeros() for m in methods}
    V = {m: zeros() for m in methods}
    steps: list[int] = []
    norms: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    diffs: dict[str, list[np.ndarray]] = {m: [] for m in methods}

    def record(t: int) -> None:
        steps.append(t)
        ref = flatten_batched(J[methods[0]])
        for m in methods:
            fl = flatten_batched(J[m])
            norms[m].append(fl.norm(dim=0).double().cpu().numpy())
            diffs[m].append((fl - ref).norm(dim=0).double().cpu().numpy())

    record(0)
    where = {int(k): i for i, k in enumerate(samples)}
    for t in range(traj.n_steps):
        idx = traj.batch(t)
        xb, yb = problem.batch_inputs(idx, traj.aug_seed(t))
        pos: list[list[int]] = [[] for _ in samples]
        for j, k in enumerate(idx.tolist()):
            if k in where:
                pos[where[k]].append(j)
        g = _sample_grads(loaded, theta, xb, yb, pos)
        bsz = len(idx)
        for m in methods:
            curvature, start = cfg[m]
            if t < start:
                continue
            lam_m = 0.0 if curvature == "none" else lam
            drive = {n: g[n] / bsz + lam_m * J[m][n] for n in g}
            if curvature == "exact":
                hj, _ = hvp_and_dots(problem, theta, xb, yb, J[m])
                drive = {n: drive[n] + hj[n] for n in drive}
            V[m] = {n: mom * V[m][n] + drive[n] for n in drive}
            J[m] = {n: J[m][n] - traj.lr(t) * V[m][n] for n in drive}
        sgd_step(problem, theta, v, idx, lr=traj.lr(t), aug_seed=traj.aug_seed(t))
        if (t + 1) % every == 0 or t + 1 == traj.n_steps:
            record(t + 1)
        if progress is not None:
            progress(t + 1, traj.n_steps, None)
    return {
        "steps": np.asarray(steps),
        "norm": {m: np.stack(norms[m]) for m in methods},
        "diff": {m: np.stack(diffs[m]) for m in methods},
        "final": {m: flatten_batched(J[m]).detach() for m in methods},
    }


def _scores(run_dir: str | Path, method: str, query: str) -> np.ndarray:
    from engine.influence.scorestore import ScoreStore

    df = ScoreStore(run_dir).get_or_compute(method, query)
    col = "score" if "score" in df.columns else [c for c in df.columns if c != "sample_id"][0]
    return df[col].to_numpy(np.float64)


def agreement(
    run_dir: str | Path,
    *,
    fast: str = "hydra",
    exact: str = "sgd-influence",
    query: str = "val",
    n_samples: int = 20,
    points: int = 100,
    seed: int = 0,
    save: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The agreement report of `fast` against `exact` on a run.

    Scores of both methods for `query` come from the run's store (computed and stored if absent).
    n_samples training points (random, seeded) are followed through the trajectory in parameter
    space (0 skips that part); about `points` steps are recorded. Returns {"kind": "agreement",
    "fast", "exact", "query", **score_agreement, "sample_ids", "steps", "epochs" (steps /
    steps_per_epoch), "error_mean" (S,) mean_k ||J_t - J~_t||, "exact_norm_mean" (S,),
    "relative_error" (S,) = error_mean / exact_norm_mean (NaN where the norm is 0),
    "final_relative_error", "seconds"}; saved as ``<run>/experiments/agreement-*/result.json``
    (with its figure) when save=True.
    """
    from engine.loading import open_run

    t0 = time.perf_counter()
    if n_samples < 0:
        raise ConfigError(f"samples must be >= 0, got {n_samples}", param="samples")
    loaded = open_run(run_dir)
    res: dict[str, Any] = {
        "kind": "agreement",
        "run_dir": str(loaded.run.path),
        "fast": fast,
        "exact": exact,
        "query": query,
    }
    res.update(score_agreement(_scores(run_dir, fast, query), _scores(run_dir, exact, query)))
    n_train = len(loaded.bundle.train)
    if n_samples:
        pick = np.sort(
            np.random.default_rng(seed).choice(n_train, size=min(n_samples, n_train), replace=False)
        )
        traj = loaded.traj
        every = max(1, traj.n_steps // max(1, points))
        sens = sensitivities(loaded, pick, (exact, fast), every=every, progress=progress)
        err = sens["diff"][fast].mean(axis=1)
        norm = sens["norm"][exact].mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(norm > 0, err / norm, np.nan)
        res.update(
            sample_ids=[loaded.bundle.train.ids[i] for i in pick],
            steps=sens["steps"].tolist(),
            epochs=(sens["steps"] / traj.steps_per_epoch).tolist(),
            error_mean=err.tolist(),
            exact_norm_mean=norm.tolist(),
            fast_norm_mean=sens["norm"][fast].mean(axis=1).tolist(),
            relative_error=rel.tolist(),
            final_relative_error=float(rel[-1]),
        )
    else:
        res.update(sample_ids=[], steps=[], epochs=[], error_mean=[], exact_norm_mean=[])
        res.update(fast_norm_mean=[], relative_error=[], final_relative_error=float("nan"))
    res["seconds"] = time.perf_counter() - t0
    if save:
        from engine.experiments.report import new_experiment_dir, save_result, write_figure

        folder = new_experiment_dir(loaded.run.path, "agreement")
        res["figure"] = write_figure(folder, "agreement", agreement_figure(res))
        save_result(folder, res)
    return res


def agreement_figure(res: dict[str, Any]) -> Any:
    """Plotly figure of an agreement result: ||J_t - J~_t|| and ||J_t|| (mean over the sampled
    points) against epochs, HYDRA Fig. 3 style, with the score agreement in the title."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=res["epochs"],
            y=res["error_mean"],
            mode="lines",
            name=f"||dθ/dw ({res['exact']}) − dθ/dw ({res['fast']})||",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=res["epochs"],
            y=res["exact_norm_mean"],
            mode="lines",
            line={"dash": "dot"},
            name=f"||dθ/dw|| ({res['exact']})",
        )
    )
    fig.update_layout(
        title=(
            f"{res['fast']} vs {res['exact']}: sign errors {res['sign_error_rate']:.1%}, "
            f"Spearman {res['spearman']:.3f} (query {res['query']})"
        ),
        xaxis={"title": "epoch"},
        yaxis={"title": "mean norm over sampled training points"},
        template="plotly_white",
        legend={"orientation": "h", "y": -0.2},
    )
    return fig
