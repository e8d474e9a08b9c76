"""The score store: one object in front of a run directory's influence scores.

``ScoreStore(run_dir)`` answers what the pages, the CLI and the experiments ask of stored scores:
which are there (``stored``), how new they are (``version``: a cache key), read one (``scores``,
``series``), compute and store one (``compute``), or either (``get_or_compute``), and the run's
per-epoch metrics. Nothing outside this module and engine.influence.store builds a path under
``<run>/influence``. Layout and sign convention: engine.influence.store (NEGATIVE = HARMFUL).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from engine.fingerprint import run_fingerprint
from engine.influence.methods import check_method_options, get_method, run_method
from engine.influence.queries import Query
from engine.influence.store import (
    as_query,
    check_json_options,
    existing_params,
    list_params,
    query_text,
    read_scores,
    same_request,
    scores_dir,
    write_scores,
)
from engine.loading import open_run
from engine.progress import Progress
from engine.runs import ENGINE_VERSION, RunError, read_json

__all__ = ["ScoreParams", "ScoreStore"]


class ScoreParams(TypedDict, total=False):
    """params.json beside a score set: what made it."""

    method: str
    query: str  # the CLI spelling: val, class, self, test:ID[,ID...]
    options: dict[str, Any]  # the estimator's options (its defaults updated by the request)
    fingerprint: dict[str, Any]  # engine.fingerprint.run_fingerprint of the run it was made for
    engine_version: str
    seconds: float
    created: str
    n: int  # rows (= training samples)
    columns: list[str]
    query_tag: str


class ScoreStore:
    """The influence scores of one run directory."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    # -- what is there -----------------------------------------------------------------------
    def version(self, method: str | None = None) -> float:
        """Newest modification time of anything stored (for `method`, or for any): 0 when none.
        Changes whenever a score set or projected store is written: a cache key."""
        folder = self.run_dir / "influence" / (method or "")
        if not folder.is_dir():
            return 0.0
        return max((p.stat().st_mtime for p in folder.rglob("*") if p.is_file()), default=0.0)

    def stored(self) -> list[ScoreParams]:
        """The params of every stored score set (whatever run state they were made for)."""
        return [ScoreParams(**p) for p in list_params(self.run_dir)]  # type: ignore[typeddict-item]

    def params(self, method: str, query: str | Query = "val") -> ScoreParams | None:
        """What made the stored scores of `method` for `query` (None when there are none)."""
        p = existing_params(scores_dir(self.run_dir, method, as_query(query)))
        return None if p is None else ScoreParams(**p)  # type: ignore[typeddict-item]

    def methods(self, query: str = "val") -> list[str]:
        """Methods with stored scores for `query`, sorted by name."""
        return sorted({str(p["method"]) for p in self.stored() if p.get("query") == query})

    def metrics(self) -> list[dict[str, Any]]:
        """The run's per-epoch metrics (train / val / test loss and accuracy): [] before the first
        epoch ends."""
        f = self.run_dir / "metrics.json"
        return list(read_json(f)) if f.is_file() else []

    # -- reading -----------------------------------------------------------------------------
    def scores(self, method: str, query: str | Query = "val") -> pd.DataFrame:
        """The stored frame (sample_id + one column per query column); RunError if absent or made
        for another state of the run."""
        return read_scores(self.run_dir, method, as_query(query))[0]

    def series(self, method: str, query: str | Query = "val") -> pd.Series:
        """The scores of a one-column query (val, self) as floats indexed by sample_id."""
        df = self.scores(method, query)
        col = "score" if "score" in df.columns else df.columns[1]
        return pd.Series(
            df[col].to_numpy(dtype=np.float64), index=df["sample_id"].astype(str), name=method
        )

    # -- computing ---------------------------------------------------------------------------
    def compute(
        self,
        method: str,
        *,
        query: str | Query = "val",
        progress: Progress | None = None,
        overwrite: bool = False,
        skip_existing: bool = False,
        **options: Any,
    ) -> pd.DataFrame:
        """Run `method` for `query`, store and return the scores (engine.influence.api.compute_influence)."""
        q = as_query(query)
        spec = get_method(method)
        check_method_options(spec, options)
        opts = check_json_options({**spec.defaults, **options})
        loaded = open_run(self.run_dir)
        folder = scores_dir(self.run_dir, method, q)
        params: dict[str, Any] = {
            "method": method,
            "query": query_text(q),
            "options": opts,
            "fingerprint": run_fingerprint(self.run_dir),
            "engine_version": ENGINE_VERSION,
        }
        old = existing_params(folder)
        if old is not None and not overwrite and not same_request(old, params):
            raise RunError(
                f"{folder} holds {method} scores made with other parameters "
                f"(options {old.get('options')}, query {old.get('query')!r}); "
                "pass --overwrite (overwrite=True) to replace them"
            )
        if skip_existing and old is not None and same_request(old, params):
            try:
                return self.scores(method, q)
            except (RunError, ValueError, OSError):
                pass  # unreadable or incomplete: compute them again
        with loaded.run.lock(shared=True, blocking=False):
            t0 = time.perf_counter()
            frame = self._frame(method, q, self.run(method, q, progress=progress, **options))
            seconds = time.perf_counter() - t0
            cols = list(frame.columns[1:])
            params.update(
                seconds=seconds,
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                n=len(frame),
                columns=cols,
                query_tag=q.tag,
            )
            with loaded.run.lock(f"influence-{method}-{q.tag}"):
                write_scores(folder, frame, params)
        return frame

    def run(
        self, method: str, query: str | Query = "val", *, progress: Progress | None = None,
        **options: Any,
    ) -> np.ndarray:  # fmt: skip
        """Scores (N_train, Q) of `method` for `query`, computed and not stored; a composite
        method's components come from this store (``components``)."""
        return run_method(
            method, open_run(self.run_dir), as_query(query), progress=progress,
            components=self.components, **options,
        )  # fmt: skip

    def get_or_compute(
        self,
        method: str,
        query: str | Query = "val",
        *,
        options: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> pd.DataFrame:
        """The scores of `method` for `query`, computed (and stored) when there are none.

        options=None: whatever is stored for this state of the run, whatever options made it
        (what the pages show); absent or stale: computed with the defaults, replacing them.
        options given (e.g. {} for the defaults): only scores made with exactly those are reused;
        when the run holds scores made with others, these are computed and not stored, so a
        user's stored choice is never replaced behind their back.
        """
        q = as_query(query)
        if options is None:
            try:
                return self.scores(method, q)
            except RunError:
                return self.compute(method, query=q, overwrite=True, progress=progress)
        try:
            return self.compute(method, query=q, progress=progress, skip_existing=True, **options)
        except RunError:  # stored with other options
            return self._frame(method, q, self.run(method, q, progress=progress, **options))

    def _frame(self, method: str, query: Query, scores: np.ndarray) -> pd.DataFrame:
        """sample_id + one column per query column ("score" for a method that ignores the query)."""
        loaded = open_run(self.run_dir)
        cols = query.column_names(loaded) if get_method(method).uses_query else ["score"]
        if scores.shape[1] != len(cols):
            if scores.shape[1] != 1:
                raise RuntimeError(
                    f"{method} returned {scores.shape[1]} columns for {len(cols)} query columns"
                )
            cols = ["score"]
        frame = pd.DataFrame(scores, columns=cols)
        frame.insert(0, "sample_id", list(loaded.bundle.train.ids))
        return frame

    def components(self, method: str, query: str, progress: Progress | None = None) -> np.ndarray:
        """Scores (N_train,) of `method` for a one-column query with its default options (the
        parts a composite method merges)."""
        frame = self.get_or_compute(method, query, options={}, progress=progress)
        return frame["score"].to_numpy(np.float64)
