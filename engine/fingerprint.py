"""A run's fingerprint: what identifies its final weights, size and checked labels.

Stored beside every derived artifact (scores, projected stores, recommendations) and compared
when they are read, so an artifact made for other weights or other checked labels is stale.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TypedDict

import pandas as pd

from engine.runs import RunError, read_json
from engine.trajectory import ckpt_name
from engine.trusted import trusted_hash

__all__ = ["Fingerprint", "run_fingerprint"]


class Fingerprint(TypedDict, total=False):
    """What identifies a finished run's weights, size and checked labels."""

    final_checkpoint_sha256: str
    n_train: int
    n_steps: int
    trusted: str  # a hash of the checked labels, only when a person checked any


_FP_CACHE: dict[tuple[str, int, int], Fingerprint] = {}


def run_fingerprint(run_dir: str | Path) -> Fingerprint:
    """{"final_checkpoint_sha256", "n_train", "n_steps"}: what identifies a finished run's weights,
    plus "trusted" (a hash of the checked labels, engine.trusted) when a person checked any."""
    run_dir = Path(run_dir)
    meta_path = run_dir / "trajectory" / "meta.json"
    if not meta_path.exists():
        raise RunError(f"{run_dir} holds no trajectory; train it first")
    meta = read_json(meta_path)
    n_steps = int(meta["n_steps"])
    ckpt = run_dir / "trajectory" / ckpt_name(n_steps)
    if not ckpt.exists():
        raise RunError(f"{run_dir} has no final checkpoint; finish training first")
    st = ckpt.stat()
    key = (str(ckpt.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _FP_CACHE:
        h = hashlib.sha256()
        with open(ckpt, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        manifest = pd.read_csv(run_dir / "manifest.csv", usecols=["split"])
        _FP_CACHE[key] = {
            "final_checkpoint_sha256": h.hexdigest(),
            "n_train": int((manifest["split"] == "train").sum()),
            "n_steps": n_steps,
        }
    out = Fingerprint(**_FP_CACHE[key])
    th = trusted_hash(run_dir)  # checked labels change the query: scores made before are stale
    if th is not None:
        out["trusted"] = th
    return out
