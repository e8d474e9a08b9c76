"""Saved recommendations (engine.recommend): when one is still current, and how it reads.

A recommendation is saved in ``<run>/experiments/recommend-*/result.json`` with a stamp of every
score set it used; ``latest_recommendation`` returns the newest one whose score sets are still the
stored ones, so a page never shows a recommendation made from scores that have changed since.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from engine.config import ConfigError
from engine.experiments.report import list_experiments
from engine.influence.scorestore import ScoreStore

__all__ = ["input_stamp", "latest_recommendation", "table_frame", "why_sentence"]


def input_stamp(params: dict[str, Any]) -> dict[str, Any]:
    """What identifies a stored score set (from its params.json)."""
    # "seconds" (a float timer) tells two score sets made within the same second apart
    return {k: params.get(k) for k in ("created", "seconds", "options", "fingerprint")}


def _loss_acc(d_loss: float, d_acc: float) -> str:
    return f"validation loss {d_loss:+.3f}, accuracy {d_acc * 100:+.1f} points"


def why_sentence(res: Mapping[str, Any]) -> str:
    """One line: what the recommended method's top k did on validation images its scores never saw
    (cross-fitted halves, or the whole split for label-only methods), against random removal."""
    rand, k, n = res["random"], res["k"], res["judged_on"]["n"]
    n = f"{n} person-checked" if res["judged_on"].get("trusted") else n
    n = f"{n} validation images its scores never saw"
    r_txt = _loss_acc(rand["d_val_loss"], rand["d_val_acc"])
    if res["method"] is None:
        return (
            f"No method's top {k} helped more than {k} random images on {n} "
            f"(random removal: {r_txt}), so nothing is recommended."
        )
    row = next(r for r in res["table"] if r["method"] == res["method"] and r["k"] == k)
    text = (
        f"Removing {res['method']}'s top {k} changed {_loss_acc(row['d_val_loss'], row['d_val_acc'])}"
        f" on {n}; {k} random images: {r_txt}."
    )
    if row["disagree"]:
        text += " Loss and accuracy moved in opposite directions."
    return text


def latest_recommendation(run_dir: str | Path) -> dict[str, Any] | None:
    """The newest saved recommendation whose score sets are still the stored ones, else None."""
    run_dir = Path(run_dir)
    for res in list_experiments(run_dir, kind="recommend"):
        if _inputs_unchanged(run_dir, res.get("inputs") or {}):
            return res
    return None


def _inputs_unchanged(run_dir: Path, inputs: dict[str, Any]) -> bool:
    for key, stamp in inputs.items():
        method, _, query = key.rpartition("/")
        try:
            params = ScoreStore(run_dir).params(method, query)
        except ConfigError:
            return False
        if params is None or input_stamp(dict(params)) != stamp:
            return False
    return bool(inputs)


def table_frame(res: Mapping[str, Any]) -> pd.DataFrame:
    """The result's table with one random row per k, for printing and the app (changes on half B)."""
    rows = list(res["table"]) + [
        {"method": "random (mean)", "k": int(kk), "d_val_loss": r["d_val_loss"],
         "d_val_acc": r["d_val_acc"], "vs_random_loss": 0.0, "vs_random_acc": 0.0}
        for kk, r in (res.get("random_by_k") or {str(res["k"]): res["random"]}).items()
    ]  # fmt: skip
    cols = ["method", "k", "d_val_loss", "d_val_acc", "vs_random_loss", "vs_random_acc", "hurts",
            "disagree", "precision", "seconds", "query"]  # fmt: skip
    df = pd.DataFrame(rows)
    return df[[c for c in cols if c in df]]
