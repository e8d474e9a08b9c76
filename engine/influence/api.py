"""The public influence API: compute, store, load and serve scores of a run.

Sign convention everywhere: score = estimated change of the query loss if the sample is removed;
NEGATIVE = HARMFUL, positive = helpful.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from engine.config import ConfigError
from engine.fingerprint import run_fingerprint
from engine.influence import classmatrix
from engine.influence.featurestore import (
    FeatureStore,
    build_store,
    hessian_free_settings,
    open_store,
)
from engine.influence.methods import run_method
from engine.influence.queries import Query, flat_query_gradients
from engine.influence.scorestore import ScoreStore
from engine.loading import LoadedRun, open_run
from engine.progress import Progress
from engine.runs import RunError

__all__ = [
    "build_projected_store",
    "class_matrix",
    "compute_influence",
    "list_scores",
    "load_scores",
    "projected_store",
    "projection_agreement",
    "test_influencers",
]


def compute_influence(run_dir: str | Path, method: str, **kwargs: Any) -> pd.DataFrame:
    """Run `method` on the run for `query`, store and return the scores.

    Returns a frame (N_train rows, training-split order): ``sample_id`` plus one column per query
    column (``score`` for val / self, ``class:<name>``, ``test:<id>``). Writes
    ``R/influence/<method>/<query.tag>/scores.csv`` and ``params.json`` atomically. Raises RunError
    rather than replace stored scores made with other parameters (or for another run) unless
    ``overwrite=True``. Keywords (engine.influence.scorestore.ScoreStore.compute): ``query``
    (default "val"), ``progress``, ``overwrite``, ``skip_existing``, and the method's options
    (e.g. ``last_epochs=2``; ``retracer methods`` lists them). ``skip_existing=True`` returns the stored scores instead when they were made for this run with
    the same method, query and options (a restarted chain of methods does not redo finished ones).
    The run's "run" lock is held shared while computing, so the run cannot be re-trained under it.
    """
    return ScoreStore(run_dir).compute(method, **kwargs)


def load_scores(run_dir: str | Path, method: str, query: str | Query = "val") -> pd.DataFrame:
    """The stored scores of `method` for `query`; RunError if absent or made from another run."""
    return ScoreStore(run_dir).scores(method, query)


def list_scores(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every stored score set: [{"method", "query", "seconds", "created", "n"}, ...]."""
    keys = ("method", "query", "seconds", "created", "n")
    return [{k: p.get(k) for k in keys} for p in ScoreStore(run_dir).stored()]


def class_matrix(
    run_dir: str | Path, method: str = "hydra", *, normalise: bool = False
) -> tuple[np.ndarray, list[str]]:
    """HYDRA Fig. 2 inter-class matrix (C, C): rows = training class a, columns = test class b.

    M[a, b] = (1/(|S_a| |T_b|)) sum_{k in S_a} score_k(u_b), u_b the gradient of test class b's
    summed loss (the "class" query, computed and stored if absent). Positive = class a helps
    class b. normalise=True applies HYDRA's normalisation: every entry divided by
    sqrt(|row sum x column sum|) (see engine.influence.classmatrix). Returns (M, class names).
    """
    frame = ScoreStore(run_dir).get_or_compute(method, Query("class"))
    loaded = open_run(run_dir)
    names = list(loaded.bundle.class_names)
    scores = frame[[f"class:{c}" for c in names]].to_numpy()
    m = classmatrix.class_contribution(
        scores, loaded.bundle.train.labels.numpy(), loaded.bundle.test.labels.numpy(), len(names)
    )
    return (classmatrix.hydra_normalise(m) if normalise else m), names


_STORES: dict[tuple[str, str, int, int], FeatureStore] = {}


def build_projected_store(
    run_dir: str | Path,
    method: str = "hydra",
    *,
    dim: int = 2048,
    seed: int = 0,
    progress: Progress | None = None,
) -> Path:
    """Build R phi_k for every training sample (see engine.influence.featurestore); returns its folder.

    R (dim x P) is a subsampled randomized Hadamard transform generated from `seed` and never
    materialised; dim >= P stores phi exactly.
    """
    hessian_free_settings(method)
    path = build_store(open_run(run_dir), method, dim=dim, seed=seed, progress=progress)
    _STORES.pop((str(Path(run_dir).resolve()), method, dim, seed), None)
    return path


def projected_store(
    run_dir: str | Path, method: str = "hydra", *, dim: int = 2048, seed: int = 0
) -> FeatureStore:
    """The projected store of `method` (built if missing or made for another state of the run),
    cached per run, method, dim and seed."""
    key = (str(Path(run_dir).resolve()), method, dim, seed)
    hit = _STORES.get(key)
    if hit is not None and hit.meta.get("fingerprint") == run_fingerprint(run_dir):
        return hit
    try:
        st = open_store(run_dir, method, dim=dim, seed=seed)
    except RunError:
        build_projected_store(run_dir, method, dim=dim, seed=seed)
        st = open_store(run_dir, method, dim=dim, seed=seed)
    _STORES[key] = st
    return st


def gradients_of_test_samples(loaded: LoadedRun, test_ids: list[str]) -> torch.Tensor:
    return flat_query_gradients(loaded, Query("test", tuple(test_ids)), loaded.final_theta).detach()


def test_influencers(
    run_dir: str | Path,
    test_id: str,
    *,
    method: str = "hydra",
    k: int = 20,
    exact: bool = False,
    dim: int = 2048,
) -> pd.DataFrame:
    """The k most harmful (most negative score first) then the k most helpful training samples
    (most positive first) for the loss of test sample `test_id`.

    Columns: sample_id, score, rank (1 = most harmful of all N, N = most helpful), kind
    ("harmful" / "helpful"). exact=False serves the projected store (built if missing; after that
    one (N x d)(d) product); exact=True runs the adjoint pass of `method` for this single query.
    """
    if k <= 0:
        raise ConfigError(f"k must be positive, got {k}", param="k")
    loaded = open_run(run_dir)
    attack = loaded.bundle.attack  # a backdoored run's watermarked test-2 images count too
    if test_id not in set(loaded.bundle.test.ids) | set(attack.ids if attack else ()):
        raise ConfigError(f"unknown test sample id {test_id!r}")
    if exact:
        q = Query("test", (test_id,))
        scores = compute_influence(run_dir, method, query=q, overwrite=True)[
            f"test:{test_id}"
        ].to_numpy()
    else:
        hessian_free_settings(method)
        st = projected_store(run_dir, method, dim=dim)
        scores = st.scores(gradients_of_test_samples(loaded, [test_id]))[:, 0]
    order = np.argsort(scores, kind="stable")
    n = len(order)
    harm = order[: min(k, n)]
    rest = order[len(harm) :]
    helpful = rest[::-1][: min(k, len(rest))]
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(1, n + 1)
    ids = np.asarray(loaded.bundle.train.ids, dtype=object)
    pick = np.concatenate([harm, helpful])
    return pd.DataFrame(
        {
            "sample_id": ids[pick],
            "score": scores[pick],
            "rank": ranks[pick],
            "kind": ["harmful"] * len(harm) + ["helpful"] * len(helpful),
        }
    )


def projection_agreement(
    run_dir: str | Path, method: str = "hydra", *, n_test: int = 5, dim: int = 2048
) -> dict[str, Any]:
    """Spearman correlation between projected and exact scores for n_test test samples.

    The test samples are spread evenly over the test split. Returns {"method", "dim",
    "projector", "test_ids", "spearman" (list), "mean", "min"}.
    """
    from scipy.stats import spearmanr

    loaded = open_run(run_dir)
    ids = list(loaded.bundle.test.ids)
    pick = [ids[i] for i in np.linspace(0, len(ids) - 1, min(n_test, len(ids))).round().astype(int)]
    hessian_free_settings(method)
    st = projected_store(run_dir, method, dim=dim)
    u = gradients_of_test_samples(loaded, pick)
    approx = st.scores(u)
    exact = run_method(method, loaded, Query("test", tuple(pick)), u=u)
    rho = [float(spearmanr(approx[:, j], exact[:, j]).statistic) for j in range(len(pick))]
    return {
        "method": method,
        "dim": int(st.projector.dim),
        "projector": st.projector.kind,
        "test_ids": pick,
        "spearman": rho,
        "mean": float(np.mean(rho)),
        "min": float(np.min(rho)),
    }


test_influencers.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name
