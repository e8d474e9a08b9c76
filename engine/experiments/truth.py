"""The ground truth of an LDS: the run retrained without groups of training samples, cached.

A group is a named set of training indices. ``measured_groups`` retrains the run without each
group (setting ``single``: the counterfactual ``all`` retrain, same start and batches, the logged
1/B_t kept; ``fresh``: ``seeds`` new seeds, the query averaged over them) and measures the query
(engine.counterfactual.query_values); ``ground_truth`` does it for the LDS's random subsets.
Values are cached in ``<run>/lds/truth-<setting>-<query>-s<seeds>.json`` by group name, tagged
with the run's fingerprint and the test images, and a call measures only what is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine import tasks
from engine.executor import current_executor
from engine.fingerprint import run_fingerprint
from engine.loading import LoadedRun
from engine.progress import Progress
from engine.runs import atomic_write_json, read_json
from engine.tasks import changes_of

__all__ = ["FRESH_SEED_OFFSET", "ground_truth", "measured_groups", "subset"]

FRESH_SEED_OFFSET = (
    2001  # fresh ground-truth seeds: run seed + 2001.. (none of retrain's or recommend's)
)


def subset(loaded: LoadedRun, fraction: float, j: int) -> np.ndarray:
    """Training indices (sorted) of subset j at `fraction`: round(fraction * N) samples (at least
    one), drawn from a generator seeded by the run's seed, the fraction and j."""
    n = len(loaded.bundle.train)
    size = max(1, round(fraction * n))
    rng = np.random.default_rng([loaded.cfg.seed, 15_485_863, round(fraction * 1_000_000), j])
    return np.sort(rng.choice(n, size=size, replace=False))


def _cache_path(run_dir: Path, setting: str, query: str, seeds: int) -> Path:
    return run_dir / "lds" / f"truth-{setting}-{query}-s{seeds}.json"


def measured_groups(
    loaded: LoadedRun,
    groups: dict[str, np.ndarray],
    *,
    setting: str,
    seeds: int,
    query: str,
    test_ids: list[str],
    progress: Progress | None,
) -> tuple[dict[str, np.ndarray], int]:
    """({key: (Q,) query values after retraining without the group}, retrains run now), each
    group's value cached in the run under its key (module docstring) and measured only once."""
    path = _cache_path(loaded.run.path, setting, query, seeds)
    fp = run_fingerprint(loaded.run.path)
    cached: dict[str, list[float]] = {}
    if path.is_file():
        old = read_json(path)
        if old.get("fingerprint") == fp and old.get("test_ids") == test_ids:
            cached = dict(old.get("entries", {}))
    todo = [key for key in groups if key not in cached]
    per = seeds if setting == "fresh" else 1
    jobs = [
        tasks.retrain("all" if setting == "single" else "fresh", changes_of(groups[key]),
                      seed=None if setting == "single" else loaded.cfg.seed + FRESH_SEED_OFFSET + s,
                      measure="query", query=query, test_ids=test_ids)
        for key in todo
        for s in range(per)
    ]  # fmt: skip
    got: dict[int, list[float]] = {}

    def save() -> None:
        with loaded.run.lock("lds"):
            atomic_write_json(path, {"fingerprint": fp, "setting": setting, "query": query,
                                     "seeds": seeds, "test_ids": test_ids, "entries": cached})  # fmt: skip

    def finished(i: int, values: list[float]) -> None:
        """A retrain is done: a group whose seeds are all done goes in the cache (saved every
        10 groups, so a killed run keeps what it measured)."""
        got[i] = values
        first = i - i % per
        if all(x in got for x in range(first, first + per)):
            mean = np.mean([got[x] for x in range(first, first + per)], axis=0)
            cached[todo[first // per]] = [float(v) for v in mean]
            if len(cached) % 10 == 0:
                save()

    if jobs:
        current_executor().map(loaded.run.path, jobs, progress=progress, on_result=finished)
        save()
    return {key: np.array(cached[key]) for key in groups}, len(jobs)


def ground_truth(
    loaded: LoadedRun,
    fractions: Sequence[float],
    subsets: int,
    *,
    setting: str = "single",
    seeds: int = 1,
    query: str = "val",
    test_ids: list[str] | None = None,
    progress: Progress | None = None,
) -> tuple[dict[float, np.ndarray], int]:
    """({fraction: (subsets, Q) measured query values}, retrains run now (subsets x seeds for
    fresh)), cached in the run.

    The cache is per setting, query and seed count; entries made for another state of the run
    (its fingerprint) or for other test images are dropped.
    """
    groups = {f"{f!r}/{j}": subset(loaded, f, j) for f in fractions for j in range(subsets)}
    vals, n = measured_groups(
        loaded, groups, setting=setting, seeds=seeds, query=query, test_ids=test_ids or [],
        progress=progress,
    )  # fmt: skip
    return {f: np.stack([vals[f"{f!r}/{j}"] for j in range(subsets)]) for f in fractions}, n
