"""Predict, then prove: the predicted change of the validation loss for a set of removals, and how
far the run's predictions held in its retraining experiments.

The exact scores (``sgd-influence``) are first-order in the removal weights, so the predicted
change of the mean validation loss when a set is removed is the sum of its members' scores
(DESIGN.md section 1). Each retraining experiment stores that prediction beside the change it
measured (engine.retrain), and ``prediction_pairs`` lists them so a user sees how far predictions
hold on their own model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine.config import ConfigError
from engine.runs import RunError

__all__ = ["PREDICTOR", "prediction_agreement", "prediction_pairs", "predicted_change"]

PREDICTOR = "sgd-influence"


def predicted_change(run_dir: str | Path, drop: Sequence[str], *, method: str = PREDICTOR) -> float:
    """Predicted change of the mean validation loss if `drop` are removed: the sum of their stored
    `method` scores on the validation query. NaN when those scores are not stored (or are for
    another state of the run). Negative = the loss should fall. ConfigError for an unknown id."""
    from engine.influence.api import load_scores

    try:
        frame = load_scores(run_dir, method, "val")
    except RunError:
        return math.nan
    s = frame.set_index("sample_id")["score"]
    missing = [d for d in drop if d not in s.index]
    if missing:
        raise ConfigError(f"sample id {missing[0]!r} is not a training sample of this run")
    return float(s.loc[list(drop)].sum())


def prediction_pairs(run_dir: str | Path) -> pd.DataFrame:
    """One row per retraining experiment with a prediction, newest first: id, mode, n_drop,
    predicted and measured change of the mean validation loss (after - before)."""
    from engine.experiments.report import list_experiments

    rows = []
    for r in list_experiments(run_dir, kind="retrain"):
        p = r.get("predicted") or {}
        pred, meas = p.get("val_loss_change"), r.get("measured_val_loss_change")
        if pred is None or meas is None or not math.isfinite(float(pred)):
            continue
        rows.append({"id": r.get("id"), "mode": r.get("mode"), "n_drop": r.get("n_drop"),
                     "predicted": float(pred), "measured": float(meas)})  # fmt: skip
    return pd.DataFrame(rows, columns=["id", "mode", "n_drop", "predicted", "measured"])


def prediction_agreement(pairs: pd.DataFrame) -> dict[str, Any]:
    """{"n", "pearson", "spearman", "sign_agreement"} over the pairs (NaN where n < 3)."""
    n = len(pairs)
    out: dict[str, Any] = {"n": n, "pearson": math.nan, "spearman": math.nan,
                           "sign_agreement": math.nan}  # fmt: skip
    if n == 0:
        return out
    p, m = pairs["predicted"].to_numpy(float), pairs["measured"].to_numpy(float)
    out["sign_agreement"] = float(np.mean(np.sign(p) == np.sign(m)))
    if n >= 3 and np.ptp(p) > 0 and np.ptp(m) > 0:
        from scipy.stats import pearsonr, spearmanr

        out["pearson"] = float(pearsonr(p, m).statistic)
        out["spearman"] = float(spearmanr(p, m).statistic)
    return out
