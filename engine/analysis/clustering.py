"""Unsupervised label-error clustering (HYDRA, Chen et al. 2021, Table 4).

For every training sample k, its contributions C[k, j] to the losses of M randomly chosen
validation samples j (M = 1000 by default, capped at the validation size) are reduced to signs
(+1 helps j, -1 hurts j; the sign convention of every score: score = change of j's loss if k is
removed, NEGATIVE = HARMFUL). Within each *given* class, k-means with two clusters splits the
(n_class, M) sign matrix; the cluster whose mean contribution is more negative (hurts validation
loss more) is flagged as the suspected label errors.

Contributions come from the projected feature store of a Hessian-free method (hydra, tracin: one
(N x d)(d x M) product once the store exists), or, with ``exact=True`` (and always for the
exact-curvature methods), from one adjoint pass with the M per-sample validation gradients as
queries. When the run knows its label errors (manifest ``flipped``: injected noise or a
MISLABELED.csv) the report gives the Jaccard index of the flagged set against the flipped set
(per class and overall) and of the unflagged set against the clean set (HYDRA's two columns).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from engine.config import ConfigError
from engine.influence.methods import get_method
from engine.progress import Progress

if TYPE_CHECKING:
    from engine.loading import LoadedRun

__all__ = [
    "cluster_label_errors",
    "flipped_mask",
    "jaccard",
    "sign_clusters",
    "validation_contributions",
    "validation_gradients",
]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|a and b| / |a or b| for two boolean masks of the same shape; NaN when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = int((a | b).sum())
    return float((a & b).sum() / union) if union else float("nan")


def flipped_mask(loaded: LoadedRun) -> np.ndarray | None:
    """(N_train,) bool: the training samples whose given label is known wrong, or None if unknown."""
    man = loaded.bundle.manifest
    if "flipped" not in man.columns:
        return None
    return man.set_index("sample_id").loc[list(loaded.bundle.train.ids), "flipped"].to_numpy(bool)


def pick_validation(loaded: LoadedRun, m: int, *, seed: int = 0) -> np.ndarray:
    """Indices (M',) into the validation split: m of them at random (all when m >= its size)."""
    n_val = len(loaded.bundle.val)
    if m <= 0:
        raise ConfigError(f"m must be positive, got {m}", param="m")
    if n_val == 0:
        raise ConfigError("the run has no validation split to cluster against")
    if m >= n_val:
        return np.arange(n_val)
    return np.sort(np.random.default_rng(seed).choice(n_val, size=m, replace=False))


def validation_gradients(
    loaded: LoadedRun, val_idx: np.ndarray, *, chunk: int = 256
) -> torch.Tensor:
    """G (P, M): the gradient of each chosen validation sample's own loss at the final weights."""
    from engine.influence.pergrad import per_sample_grads

    p = loaded.problem
    x = loaded.bundle.val.x(p.x.dtype).to(p.x.device)
    y = loaded.bundle.val.labels.to(p.x.device)
    idx = torch.as_tensor(val_idx, dtype=torch.long, device=p.x.device)
    cols = [
        per_sample_grads(p, loaded.final_theta, x[idx[i : i + chunk]], y[idx[i : i + chunk]]).T
        for i in range(0, len(idx), chunk)
    ]
    return torch.cat(cols, dim=1).detach()


def validation_contributions(
    loaded: LoadedRun,
    *,
    method: str = "hydra",
    m: int = 1000,
    seed: int = 0,
    exact: bool = False,
    dim: int = 2048,
    progress: Progress | None = None,
) -> tuple[np.ndarray, list[str]]:
    """(C (N_train, M) float64, validation ids): C[k, j] = score of k for validation sample j's loss.

    Negative = k hurts j. exact=False serves a Hessian-free method from the projected store of
    dimension `dim` (built if missing); exact=True, or an exact-curvature method, runs the adjoint
    pass with the M validation gradients as queries (cost grows with M for exact curvature).
    """
    spec = get_method(method)
    curvature = spec.defaults.get("curvature")
    if curvature is None:
        raise ConfigError(
            f"clustering needs a trajectory method (hydra, tracin, sgd-influence, sgd-influence-last), not {method!r}"
        )
    val_idx = pick_validation(loaded, m, seed=seed)
    val_ids = [loaded.bundle.val.ids[i] for i in val_idx]
    u = validation_gradients(loaded, val_idx)
    if exact or curvature == "exact":
        from engine.influence.adjoint import exact_pass, parallel_pass

        last = spec.defaults.get("last_epochs")
        if curvature == "exact":
            out = exact_pass(loaded, u, last_epochs=last, progress=progress)
        else:
            out = parallel_pass(
                loaded, u, curvature=str(curvature), last_epochs=last, progress=progress
            )
        return out.cpu().numpy().astype(np.float64), val_ids
    from engine.influence.api import projected_store

    st = projected_store(loaded.run.path, method, dim=dim)
    blocks = [st.scores(u[:, i : i + 256]) for i in range(0, u.shape[1], 256)]
    return np.concatenate(blocks, axis=1), val_ids


def sign_clusters(
    contributions: np.ndarray, labels: np.ndarray, *, seed: int = 0
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Two-means on the signs within each given class; returns (flagged (N,) bool, per-class rows).

    contributions: (N, M), negative = harmful; labels: (N,) given class indices. In each class with
    at least two samples, KMeans(2) on sign(C) in {-1, +1}^M (0 stays 0); the cluster with the more
    negative mean contribution (mean over its members and the M columns) is flagged. A class whose
    signs are all identical stays one cluster and is not flagged. Rows: class, n, n_flagged,
    mean_flagged, mean_other (mean contributions of the two clusters).
    """
    from sklearn.cluster import KMeans

    c = np.asarray(contributions, dtype=np.float64)
    labels = np.asarray(labels)
    flagged = np.zeros(len(labels), dtype=bool)
    rows: list[dict[str, Any]] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        row: dict[str, Any] = {"class": int(cls), "n": len(members), "n_flagged": 0}
        signs = np.sign(c[members]).astype(np.float32)
        if len(members) < 2 or len(np.unique(signs, axis=0)) < 2:
            row.update(mean_flagged=float("nan"), mean_other=float(c[members].mean()))
            rows.append(row)
            continue
        km = KMeans(n_clusters=2, n_init=10, random_state=seed).fit(signs)
        means = [float(c[members[km.labels_ == j]].mean()) for j in (0, 1)]
        bad = int(np.argmin(means))
        hit = members[km.labels_ == bad]
        flagged[hit] = True
        row.update(n_flagged=len(hit), mean_flagged=means[bad], mean_other=means[1 - bad])
        rows.append(row)
    return flagged, rows


def cluster_label_errors(
    run_dir: str | Path,
    *,
    method: str = "hydra",
    m: int = 1000,
    seed: int = 0,
    exact: bool = False,
    dim: int = 2048,
    save: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """HYDRA Table 4 on a run: flag one k-means cluster per given class; score it if errors are known.

    Returns {"kind": "cluster", "method", "m" (validation samples used), "n_train", "flagged_ids",
    "classes": [per-class rows with class name, n, n_flagged, n_flipped, jaccard_flipped,
    jaccard_clean, mean_flagged, mean_other], "known_errors", "n_flipped", "jaccard_flipped" (flagged
    vs flipped over all classes), "jaccard_clean", "mean_class_jaccard_flipped",
    "mean_class_jaccard_clean", "precision", "recall", "seconds"}; the Jaccard entries are NaN (None
    in JSON) when the run has no known errors. save=True writes it as an experiment
    (``<run>/experiments/cluster-*/result.json``).
    """
    from engine.loading import open_run

    t0 = time.perf_counter()
    loaded = open_run(run_dir)
    contrib, val_ids = validation_contributions(
        loaded, method=method, m=m, seed=seed, exact=exact, dim=dim, progress=progress
    )
    labels = loaded.bundle.train.labels.numpy()
    flagged, rows = sign_clusters(contrib, labels, seed=seed)
    flips = flipped_mask(loaded)
    known = flips is not None and bool(flips.any())
    names = list(loaded.bundle.class_names)
    nan = float("nan")
    for row in rows:
        row["name"] = names[row["class"]]
        mem = labels == row["class"]
        if known:
            assert flips is not None
            row["n_flipped"] = int((flips & mem).sum())
            row["jaccard_flipped"] = jaccard(flagged & mem, flips & mem)
            row["jaccard_clean"] = jaccard(~flagged & mem, ~flips & mem)
        else:
            row.update(n_flipped=None, jaccard_flipped=nan, jaccard_clean=nan)
    ids = np.asarray(loaded.bundle.train.ids, dtype=object)
    res: dict[str, Any] = {
        "kind": "cluster",
        "run_dir": str(loaded.run.path),
        "method": method,
        "exact": bool(exact),
        "m": len(val_ids),
        "seed": seed,
        "n_train": len(labels),
        "flagged_ids": [str(i) for i in ids[flagged]],
        "classes": rows,
        "known_errors": known,
        "n_flipped": int(flips.sum()) if flips is not None else None,
    }
    if known:
        assert flips is not None
        hits = int((flagged & flips).sum())
        with_flips = [r for r in rows if r["n_flipped"]]
        res.update(
            jaccard_flipped=jaccard(flagged, flips),
            jaccard_clean=jaccard(~flagged, ~flips),
            mean_class_jaccard_flipped=float(np.nanmean([r["jaccard_flipped"] for r in with_flips]))
            if with_flips
            else nan,
            mean_class_jaccard_clean=float(np.nanmean([r["jaccard_clean"] for r in rows])),
            precision=hits / int(flagged.sum()) if flagged.any() else nan,
            recall=hits / int(flips.sum()),
        )
    else:
        res.update(
            jaccard_flipped=nan,
            jaccard_clean=nan,
            mean_class_jaccard_flipped=nan,
            mean_class_jaccard_clean=nan,
            precision=nan,
            recall=nan,
        )
    res["seconds"] = time.perf_counter() - t0
    if save:
        from engine.experiments.report import new_experiment_dir, save_result

        save_result(new_experiment_dir(loaded.run.path, "cluster"), res)
    return res
