"""Scores on disk: one folder per method and query, beside the JSON of what made them.

Layout under a run directory::

    influence/<method>/<query.tag>/scores.csv    sample_id + one column per query column
    influence/<method>/<query.tag>/params.json   method, query, options, seconds, created,
                                                 engine_version, fingerprint, n

Columns: ``score`` for the val and self queries, ``class:<name>`` per test class, ``test:<id>`` per
test sample. Sign convention: score = estimated change of the query loss if the sample is
removed; NEGATIVE = HARMFUL. Every file is written atomically; a run's fingerprint (hash of its
final checkpoint, n_train, n_steps) is stored with the scores and checked when they are loaded.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd

from engine.fingerprint import run_fingerprint
from engine.influence.queries import Query
from engine.runs import RunError, atomic_write_json, atomic_write_text, read_json

SCORES_FILE = "scores.csv"
PARAMS_FILE = "params.json"


def query_text(query: Query) -> str:
    """The CLI spelling of a query: 'val', 'class', 'self' or 'test:ID[,ID...]'."""
    return query.kind if query.kind != "test" else "test:" + ",".join(query.test_ids)


def as_query(query: str | Query) -> Query:
    return query if isinstance(query, Query) else Query.parse(query)


def scores_dir(run_dir: str | Path, method: str, query: Query) -> Path:
    return Path(run_dir) / "influence" / method / query.tag


def check_json_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options as JSON values; raises ConfigError for anything that would not round-trip."""
    from engine.config import ConfigError

    try:
        out = json.loads(json.dumps(options))
    except TypeError as e:
        raise ConfigError(f"method options must be plain JSON values: {e}") from e
    return dict(out)


def existing_params(folder: Path) -> dict[str, Any] | None:
    p = folder / PARAMS_FILE
    return dict(read_json(p)) if p.exists() else None


def same_request(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when two params.json describe the same computation (method, query, options, run)."""
    keys = ("method", "query", "options", "fingerprint")
    return all(old.get(k) == new.get(k) for k in keys)


def write_scores(folder: Path, frame: pd.DataFrame, params: dict[str, Any]) -> None:
    """scores.csv, then params.json (so params never describe scores that are not there yet)."""
    buf = io.StringIO()
    frame.to_csv(buf, index=False, float_format="%.17g")
    atomic_write_text(folder / SCORES_FILE, buf.getvalue())
    atomic_write_json(folder / PARAMS_FILE, params)


def read_scores(
    run_dir: str | Path, method: str, query: Query
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(scores frame, params); RunError if absent, incomplete or made from another run."""
    folder = scores_dir(run_dir, method, query)
    params = existing_params(folder)
    if params is None or not (folder / SCORES_FILE).exists():
        raise RunError(
            f"no {method} scores for query {query_text(query)!r} in {run_dir}; compute them first"
        )
    fp = run_fingerprint(run_dir)
    if params.get("fingerprint") != fp:
        raise RunError(
            f"{folder} was computed for another run (fingerprint {params.get('fingerprint')} != {fp}); "
            "recompute with overwrite=True"
        )
    frame = pd.read_csv(folder / SCORES_FILE, dtype={"sample_id": str})
    if len(frame) != fp["n_train"] or len(frame) != params.get("n"):
        raise RunError(f"{folder / SCORES_FILE} has {len(frame)} rows, expected {fp['n_train']}")
    return frame, params


def list_params(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every stored params.json under run_dir/influence, as dicts."""
    root = Path(run_dir) / "influence"
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.glob(f"*/*/{PARAMS_FILE}")):
        if (p.parent / SCORES_FILE).exists():
            out.append(dict(read_json(p)))
    return out
