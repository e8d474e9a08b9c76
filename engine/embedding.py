"""A 2-D map of the training set: penultimate-layer features at the final weights, PCA or UMAP.

Files in the run directory (each written atomically)::

    embedding/features.safetensors   {"features": float32 (N_train, F)}   cached features
    embedding/pca.csv                sample_id, x, y, method               the PCA map
    embedding/umap.csv               sample_id, x, y, method               the UMAP map
    embedding/<method>.json          the arguments that made the map, and its time

PCA takes well under a second and is what `load_embedding` returns until the UMAP map exists.
UMAP is slow to start on a small CPU (`import umap` ~19 s cold, its first fit in a process ~50 s of
numba compilation), so it is imported lazily, meant to run in a background job, and cached here.
The engine never imports streamlit.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from engine.config import ConfigError
from engine.problem import penultimate_features as model_features
from engine.progress import Progress
from engine.runs import RunDir, atomic_save_tensors, atomic_write_text, load_tensors

__all__ = [
    "EMBEDDING_METHODS",
    "compute_embedding",
    "embedding_path",
    "has_embedding",
    "load_embedding",
    "training_features",
]

EMBEDDING_METHODS = ("umap", "pca")
_FOLDER = "embedding"
_REPO_ROOT = Path(__file__).resolve().parents[1]


def embedding_path(run_dir: str | os.PathLike[str], method: str) -> Path:
    """Where the cached `method` map of a run lives (it may not exist yet)."""
    _check_method(method)
    return Path(run_dir) / _FOLDER / f"{method}.csv"


def has_embedding(run_dir: str | os.PathLike[str], method: str) -> bool:
    return embedding_path(run_dir, method).is_file()


@torch.no_grad()
def training_features(
    run_dir: str | os.PathLike[str], *, batch_size: int = 1024
) -> tuple[list[str], np.ndarray]:
    """(training ids (N,), features float32 (N, F)) of the training split at the final weights.

    Features are the output of the model without its last linear layer (for logreg: the raw
    pixels), evaluated with the run's final theta through functional_call. Cached in the run.
    """
    from engine.loading import load_run

    loaded = load_run(Path(run_dir))
    ids = list(loaded.bundle.train.ids)
    cache = loaded.run.file(_FOLDER, "features.safetensors")
    if cache.is_file():
        feats = load_tensors(cache)["features"].numpy()
        if feats.shape[0] == len(ids):
            return ids, feats
    p = loaded.problem
    feats_t = model_features(p, loaded.final_theta, batch_size=batch_size).float().cpu()
    atomic_save_tensors(cache, {"features": feats_t})
    return ids, feats_t.numpy()


def compute_embedding(
    run_dir: str | os.PathLike[str],
    *,
    method: str = "umap",
    progress: Progress | None = None,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    seed: int = 0,
) -> pd.DataFrame:
    """Compute the 2-D `method` map of the training set, cache it in the run, and return it.

    Returns a DataFrame with columns sample_id (str), x, y (float), method (str), one row per
    training sample in the training split's order. Progress is reported as (done, total, None)
    over three stages: features, fit, save.
    """
    _check_method(method)
    run = RunDir.open(run_dir)
    t0 = time.perf_counter()
    _report(progress, 0)
    ids, feats = training_features(run.path)
    _report(progress, 1)
    if len(ids) < 3:
        raise ConfigError(f"a 2-D map needs at least 3 training samples, the run has {len(ids)}")
    xy = (
        _pca(feats, seed=seed)
        if method == "pca"
        else _umap(feats, n_neighbors=n_neighbors, min_dist=min_dist, seed=seed)
    )
    _report(progress, 2)
    df = pd.DataFrame(
        {
            "sample_id": ids,
            "x": xy[:, 0].astype(float),
            "y": xy[:, 1].astype(float),
            "method": method,
        }
    )
    args: dict[str, Any] = {
        "method": method,
        "n": len(ids),
        "n_features": int(feats.shape[1]),
        "seed": seed,
    }
    if method == "umap":
        args.update(n_neighbors=n_neighbors, min_dist=min_dist)
    args["seconds"] = time.perf_counter() - t0
    atomic_write_text(embedding_path(run.path, method), df.to_csv(index=False))
    run.write_json(f"{_FOLDER}/{method}.json", args)
    _report(progress, 3)
    return df


def load_embedding(run_dir: str | os.PathLike[str], *, method: str | None = None) -> pd.DataFrame:
    """The best available map: UMAP when cached, else PCA (computed now and cached if missing).

    With `method` given, return that map (computing it now if it is not cached: slow for UMAP).
    Columns: sample_id, x, y, method.
    """
    order = [method] if method is not None else list(EMBEDDING_METHODS)
    for m in order:
        p = embedding_path(run_dir, m)
        if p.is_file():
            df = pd.read_csv(p, dtype={"sample_id": str})
            if len(df):
                return df
    return compute_embedding(run_dir, method=method or "pca")


def _check_method(method: str) -> None:
    if method not in EMBEDDING_METHODS:
        raise ConfigError(
            f"embedding method must be one of {', '.join(EMBEDDING_METHODS)}, got {method!r}"
        )


def _report(progress: Progress | None, done: int) -> None:
    if progress is not None:
        progress(done, 3, None)


def _pca(feats: np.ndarray, *, seed: int) -> np.ndarray:
    """(N, 2) principal-component coordinates of features (N, F); constant features give zeros."""
    from sklearn.decomposition import PCA

    x = np.asarray(feats, dtype=np.float64)
    n_comp = min(2, x.shape[0], x.shape[1])
    out = np.zeros((x.shape[0], 2))
    if n_comp > 0 and float(x.std()) > 0:
        out[:, :n_comp] = PCA(n_components=n_comp, random_state=seed).fit_transform(x)
    return out


def _umap(feats: np.ndarray, *, n_neighbors: int, min_dist: float, seed: int) -> np.ndarray:
    """(N, 2) UMAP coordinates of features (N, F). Imports umap lazily (slow the first time)."""
    ensure_numba_cache()
    import umap  # noqa: PLC0415  (lazy on purpose: ~19 s cold import)

    x = np.asarray(feats, dtype=np.float32)
    k = max(2, min(n_neighbors, x.shape[0] - 1))
    init = "spectral" if x.shape[0] >= 10 else "random"
    reducer = umap.UMAP(
        n_components=2, n_neighbors=k, min_dist=min_dist, random_state=seed, init=init, n_jobs=1
    )
    return np.asarray(reducer.fit_transform(x), dtype=np.float64)


def ensure_numba_cache() -> str:
    """Set NUMBA_CACHE_DIR to a writable folder when it is unset (numba caches compiled code there).

    Prefers <repo>/.cache/numba (what `make` uses), then ~/.cache/retracer/numba, then a temp folder.
    """
    current = os.environ.get("NUMBA_CACHE_DIR")
    if current:
        return current
    for cand in (_REPO_ROOT / ".cache" / "numba", Path.home() / ".cache" / "retracer" / "numba"):
        try:
            cand.mkdir(parents=True, exist_ok=True)
            if os.access(cand, os.W_OK):
                os.environ["NUMBA_CACHE_DIR"] = str(cand)
                return str(cand)
        except OSError:
            continue
    tmp = Path(tempfile.gettempdir()) / "retracer-numba"
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = str(tmp)
    return str(tmp)
