"""Statistics for retraining experiments: summaries, Welch's t-test, and a one-sentence verdict.

Conventions: accuracies are fractions in [0, 1]; sentences speak in percentage points. A group of
one value (an exact counterfactual retrain, or the run's own final weights) is a fixed number, not
a sample: comparing it with a group of several values uses a one-sample t-test; two fixed numbers
have no p-value (their difference is exact, not an estimate).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

ALPHA = 0.05


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """{"mean", "std" (sample std, ddof=1; 0 for one value), "n", "values"}."""
    a = np.asarray(list(values), dtype=np.float64)
    if a.size == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0, "values": []}
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "n": int(a.size),
        "values": [float(x) for x in a],
    }


def welch(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Compare group a with group b: mean difference (a - b), t statistic and two-sided p-value.

    test: "welch" (both groups >= 2 values), "one-sample" (one group is a single fixed value),
    "exact" (both are single values: no p-value), "constant" (no spread at all: p is 0 if the
    means differ, 1 if not), "empty".
    """
    x = np.asarray(list(a), dtype=np.float64)
    y = np.asarray(list(b), dtype=np.float64)
    out: dict[str, Any] = {"diff": math.nan, "t": None, "p": None, "test": "empty"}
    if x.size == 0 or y.size == 0:
        return out
    diff = float(x.mean() - y.mean())
    out["diff"] = diff
    spread = (x.size > 1 and x.std() > 0) or (y.size > 1 and y.std() > 0)
    if x.size == 1 and y.size == 1:
        out["test"] = "exact"
        return out
    if not spread:
        out.update(test="constant", p=0.0 if diff != 0 else 1.0)
        return out
    if x.size == 1 or y.size == 1:
        fixed, sample, sign = (float(x[0]), y, 1.0) if x.size == 1 else (float(y[0]), x, -1.0)
        r = sps.ttest_1samp(sample, fixed)
        out.update(test="one-sample", t=float(-sign * r.statistic), p=float(r.pvalue))
        return out
    r = sps.ttest_ind(x, y, equal_var=False)
    out.update(test="welch", t=float(r.statistic), p=float(r.pvalue))
    return out


def fmt_p(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return ""
    # three decimals near the 0.05 threshold, so 0.053 never reads as "p = 0.05"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"


def _points(x: float) -> str:
    return f"{x * 100:+.1f}".replace("+", "") if x < 0 else f"{x * 100:.1f}"


def _images(n: int, *, these: bool = False, random: bool = False) -> str:
    """'these 30 images', 'this image', '30 random images', '1 random image'."""
    noun = ("random " if random else "") + ("image" if n == 1 else "images")
    if these:
        return "this image" if n == 1 else f"these {n} {noun}"
    return f"{n} {noun}"


def _action(n_drop: int, n_relabel: int, *, these: bool) -> tuple[str, str]:
    """("Removing these 30 images", "removing 30 random images")."""
    if n_drop and n_relabel:
        return (
            f"Removing {_images(n_drop)} and relabelling {_images(n_relabel)}",
            f"removing {n_drop} and relabelling {n_relabel} random images",
        )
    if n_relabel:
        return (
            f"Relabelling {_images(n_relabel, these=these)}",
            f"relabelling {_images(n_relabel, random=True)}",
        )
    return f"Removing {_images(n_drop, these=these)}", f"removing {_images(n_drop, random=True)}"


VERDICT_KINDS = ("improved", "inconclusive", "worse", "unchanged")


def verdict_kind(
    *,
    after: Sequence[float],
    before: Sequence[float],
    control: Sequence[float] | None,
    tolerance: float = 0.0005,
) -> str:
    """The outcome `verdict` puts in words, as one of VERDICT_KINDS (higher metric = better).

    improved: the metric rose, and significantly beat the random control (or, with no control,
    significantly beat `before`; an exact single-run counterfactual with no control counts as
    improved when it rose). worse: it fell by more than `tolerance`. unchanged: it moved less
    than `tolerance`. inconclusive: it rose, but not significantly against the control.
    """
    ab = welch(after, before)
    d = ab["diff"]
    if abs(d) < tolerance:
        return "unchanged"
    if d < 0:
        return "worse"
    if control is None:
        return "improved" if ab["p"] is None or ab["p"] < ALPHA else "inconclusive"
    ac = welch(after, control)
    cd = float(np.mean(list(control))) - float(np.mean(list(before)))
    sig = ac["p"] is not None and ac["p"] < ALPHA
    return "improved" if sig and d > cd else "inconclusive"


def verdict(
    *,
    after: Sequence[float],
    before: Sequence[float],
    control: Sequence[float] | None,
    n_drop: int,
    n_relabel: int = 0,
    metric: str = "test accuracy",
    tolerance: float = 0.0005,
) -> str:
    """One sentence a non-expert understands about an accuracy metric (higher = better).

    after / before / control: the metric's values over seeds or draws (a single value for an
    exact counterfactual). tolerance: changes smaller than this (a fraction) count as no change.
    """
    ab, ac = welch(after, before), welch(after, control) if control else None
    act, ctrl_act = _action(n_drop, n_relabel, these=True)
    d = ab["diff"]
    p_ab = fmt_p(ab["p"])
    if abs(d) < tolerance:
        first = f"{act} did not change {metric} (it moved {_points(d)} points)"
    else:
        first = f"{act} {'raised' if d > 0 else 'lowered'} {metric} by {_points(abs(d))} points"
    if p_ab:
        first += f" ({p_ab})"
    if control is None or ac is None:
        if abs(d) < tolerance:
            return first + "."
        sig = ab["p"] is not None and ab["p"] < ALPHA
        tail = (
            ""
            if ab["p"] is None
            else (
                ": the change is statistically significant"
                if sig
                else ": the change could be chance (not significant)"
            )
        )
        return first + tail + "."
    cd = float(np.mean(list(control))) - float(np.mean(list(before)))
    n_ctrl = len(list(control))
    avg = " on average" if n_ctrl > 1 else ""
    second = f"{ctrl_act} changed it by {_points(cd)} points{avg}"
    p_ac = ac["p"]
    sig = p_ac is not None and p_ac < ALPHA
    what = f"removing any {_images(n_drop)}" if not n_relabel else "changing any images"
    vs = f" ({fmt_p(p_ac)} against the random control)" if fmt_p(p_ac) else ""
    if d >= tolerance:
        kind = verdict_kind(after=after, before=before, control=control, tolerance=tolerance)
        proven = kind == "improved"
        tail = (
            f"the improvement is not a matter of {what}{vs}"
            if proven
            else f"{what} might do as well, so this is no proof these images were the problem{vs}"
        )
    elif d <= -tolerance:
        tail = (
            "these images were helping the model, more than random ones" + vs
            if sig and d < cd
            else "these images were not hurting the model"
        )
    else:
        tail = "these images were not hurting the model"
    return f"{first}; {second}: {tail}."
