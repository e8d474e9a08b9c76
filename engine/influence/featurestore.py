"""The projected feature store for interactive per-test-sample influencers (TRAK-style).

For the H := 0 methods (hydra, tracin) score_k(u) = <u, phi_k> with
phi_k = sum_{t: k in S_t} coef_t g_k(theta_t) (engine.influence.walk.step_coefficients). The
store keeps F[k] = R phi_k (N, d) for a random projection R (engine.influence.projection), so a
test sample's scores are F (R u): one (N x d)(d) product. Sign convention as everywhere: score =
change of the test sample's loss if k is removed; NEGATIVE = HARMFUL.

On disk, ``<run>/influence/<method>/store-<kind>-d<dim>-s<seed>/``: ``features.npy`` (float32
(N, d), memory-mapped on load) and ``meta.json`` (method, curvature, window, projector, run
fingerprint, n, seconds), each written atomically; the metadata is checked on reload.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from engine.config import ConfigError
from engine.fingerprint import run_fingerprint
from engine.influence.projection import Projector, make_projector
from engine.influence.registry import METHODS
from engine.influence.selfinfluence import window_grads
from engine.influence.walk import scalar_coefficients, window_start
from engine.progress import Progress
from engine.runs import ENGINE_VERSION, RunError, atomic_write_json, read_json

if TYPE_CHECKING:
    from engine.loading import LoadedRun


@dataclass
class FeatureStore:
    """features: float32 (N, d) (memory-mapped); projector: the R that made them; meta: meta.json."""

    path: Path
    features: np.ndarray
    projector: Projector
    meta: dict[str, Any]

    def scores(self, u: torch.Tensor) -> np.ndarray:
        """Approximate scores (N, Q) for query gradients u (P, Q)."""
        ru = (
            self.projector.project(u.T.to(torch.float64)).T.cpu().numpy().astype(np.float32)
        )  # (d, Q)
        return np.asarray(self.features @ ru, dtype=np.float64)


def hessian_free_settings(
    method: str, options: dict[str, Any] | None = None
) -> tuple[str, int | None]:
    """(curvature, last_epochs) of an H := 0 adjoint method; ConfigError for any other method."""
    spec = METHODS.get(method)  # the registry, not the catalog: estimators (votes) call this
    if spec is None:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    opts = {**spec.defaults, **(options or {})}
    curvature = opts.get("curvature")
    if curvature not in ("decay", "none"):
        raise ConfigError(
            f"the projected store needs a Hessian-free adjoint method (hydra or tracin), not {method!r}"
        )
    return str(curvature), opts.get("last_epochs")


def store_dir(run_dir: str | Path, method: str, *, dim: int, seed: int, kind: str) -> Path:
    return Path(run_dir) / "influence" / method / f"store-{kind}-d{dim}-s{seed}"


def _atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def project_phi(
    loaded: LoadedRun,
    projector: Projector,
    *,
    curvature: str,
    last_epochs: int | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """F (N, d) float32 = R phi_k for every training sample, by one forward replay.

    Accumulated in float32, the dtype it is stored in: each sample gets one term per epoch of
    the window, and a float64 buffer and its float32 copy took 3x the store's size at its peak
    (+1.2 GB at 51k images, d = 2048)."""
    start = window_start(loaded.traj, last_epochs)
    coef = scalar_coefficients(loaded, curvature, start)
    feats = torch.zeros(loaded.problem.x.shape[0], projector.dim, dtype=torch.float32)
    for t, idx, g in window_grads(loaded, start=start, progress=progress):
        term = projector.project(g).to(torch.float64) * coef[t]
        feats.index_add_(0, idx.cpu(), term.to(torch.float32).cpu())
    return feats.numpy()


def build_store(
    loaded: LoadedRun,
    method: str,
    *,
    dim: int = 2048,
    seed: int = 0,
    kind: str = "srht",
    progress: Progress | None = None,
) -> Path:
    """Build and save the store of `method` for a loaded run; returns its folder."""
    curvature, last_epochs = hessian_free_settings(method)
    n_params = sum(t.numel() for t in loaded.final_theta.values())
    projector = make_projector(n_params, dim, seed=seed, kind=kind)
    t0 = time.perf_counter()
    feats = project_phi(
        loaded, projector, curvature=curvature, last_epochs=last_epochs, progress=progress
    )
    folder = store_dir(loaded.run.path, method, dim=dim, seed=seed, kind=kind)
    with loaded.run.lock(f"store-{method}"):
        _atomic_save_npy(folder / "features.npy", feats)
        atomic_write_json(
            folder / "meta.json",
            {
                "method": method,
                "curvature": curvature,
                "last_epochs": last_epochs,
                "projector": projector.meta(),
                "requested_dim": dim,
                "n": int(feats.shape[0]),
                "fingerprint": run_fingerprint(loaded.run.path),
                "seconds": time.perf_counter() - t0,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "engine_version": ENGINE_VERSION,
            },
        )
    return folder


def store_ready(
    run_dir: str | Path, method: str, *, dim: int = 2048, seed: int = 0, kind: str = "srht"
) -> bool:
    """True when `method`'s store exists and was built for this state of the run (open_store
    would serve it)."""
    try:
        open_store(run_dir, method, dim=dim, seed=seed, kind=kind)
    except RunError:
        return False
    return True


def open_store(
    run_dir: str | Path, method: str, *, dim: int = 2048, seed: int = 0, kind: str = "srht"
) -> FeatureStore:
    """Load a store, checking its metadata against this run; RunError if absent or stale."""
    folder = store_dir(run_dir, method, dim=dim, seed=seed, kind=kind)
    if not (folder / "meta.json").exists() or not (folder / "features.npy").exists():
        raise RunError(f"no projected store for {method} (d={dim}, seed={seed}) in {run_dir}")
    meta = dict(read_json(folder / "meta.json"))
    fp = run_fingerprint(run_dir)
    pm = meta.get("projector", {})
    if meta.get("fingerprint") != fp:
        raise RunError(f"{folder} was built for another run; rebuild it")
    if meta.get("method") != method or pm.get("seed") != seed or meta.get("requested_dim") != dim:
        raise RunError(
            f"{folder}/meta.json does not describe {method} d={dim} seed={seed}; rebuild it"
        )
    feats = np.load(folder / "features.npy", mmap_mode="r")
    if feats.shape != (fp["n_train"], pm.get("dim")):
        raise RunError(
            f"{folder}/features.npy has shape {feats.shape}, expected ({fp['n_train']}, {pm.get('dim')})"
        )
    projector = make_projector(int(pm["n_params"]), dim, seed=seed, kind=kind)
    if projector.meta() != pm:
        raise RunError(f"{folder}: projector {pm} cannot be regenerated ({projector.meta()})")
    return FeatureStore(folder, feats, projector, meta)
