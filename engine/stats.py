"""Statistics for retraining experiments: summaries, comparisons and a verdict in words.

Conventions: accuracies are fractions in [0, 1]; sentences speak in percentage points; losses are
mean cross-entropies. One rule decides every verdict (``metric_kind`` per metric, ``overall_kind``
across them); the sentence and the colour the app gives it both come from it.

How two groups of values are compared (``compare``):

- both groups are single fixed values (an exact counterfactual retrain against the run itself):
  the difference is exact, there is no p-value ("exact");
- one fixed value against several control draws: is it outside what a *new* draw would give? A
  prediction-interval t-test, t = (x - mean) / (s * sqrt(1 + 1/m)) with m - 1 degrees of freedom
  ("prediction"). Unlike a one-sample t-test on the draws' mean it does not become significant just
  because more draws were added;
- ``paired=True`` with equal group sizes: value i of both groups share a seed (fresh retrains:
  seed i trains before, after and control draw i), so the per-seed differences are tested
  (paired t-test, "paired");
- otherwise Welch's unequal-variance t-test ("welch");
- no spread at all: no p-value ("constant"), p = 1 when the means are equal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict, cast

import numpy as np
from scipy import stats as sps

ALPHA = 0.05

VERDICT_KINDS = ("improved", "mixed", "inconclusive", "worse", "unchanged")
# metric -> (words, higher is better, tolerance below which a change is no change)
METRICS: dict[str, tuple[str, bool, float]] = {
    "test_acc": ("test accuracy", True, 0.0005),
    "test_loss": ("test loss", False, 0.0005),
    "val_acc": ("validation accuracy", True, 0.0005),
    "val_loss": ("validation loss", False, 0.0005),
}


class Summary(TypedDict):
    """summarize's result."""

    mean: float
    std: float  # sample std (ddof=1); 0 for one value
    n: int
    values: list[float]


class Comparison(TypedDict):
    """compare's result: group a against group b."""

    diff: float  # mean(a) - mean(b)
    t: float | None
    p: float | None  # two-sided; None when no test applies (constant groups that differ, empty)
    test: str  # exact | prediction | paired | welch | constant | empty
    n: int


def summarize(values: Sequence[float]) -> Summary:
    """{"mean", "std" (sample std, ddof=1; 0 for one value), "n", "values"}."""
    a = np.asarray(list(values), dtype=np.float64)
    if a.size == 0:
        return Summary(mean=math.nan, std=math.nan, n=0, values=[])
    return Summary(
        mean=float(a.mean()),
        std=float(a.std(ddof=1)) if a.size > 1 else 0.0,
        n=int(a.size),
        values=[float(x) for x in a],
    )


def compare(a: Sequence[float], b: Sequence[float], *, paired: bool = False) -> Comparison:
    """Group a against group b: {"diff": mean(a) - mean(b), "t", "p" (two-sided), "test", "n"}.

    test: "exact", "prediction", "paired", "welch", "constant" or "empty" (module docstring).
    paired=True needs equal sizes (ValueError otherwise): value i of a and of b share a seed.
    """
    return cast(Comparison, _compare(a, b, paired=paired))


def _compare(a: Sequence[float], b: Sequence[float], *, paired: bool) -> dict[str, Any]:
    x = np.asarray(list(a), dtype=np.float64)
    y = np.asarray(list(b), dtype=np.float64)
    out: dict[str, Any] = {"diff": math.nan, "t": None, "p": None, "test": "empty", "n": 0}
    if x.size == 0 or y.size == 0:
        return out
    diff = float(x.mean() - y.mean())
    out.update(diff=diff, n=int(max(x.size, y.size)))
    if x.size == 1 and y.size == 1:
        out["test"] = "exact"
        return out
    if paired and x.size == y.size:
        d = x - y
        if np.ptp(d) == 0:
            out.update(test="constant", p=1.0 if diff == 0 else None)
            return out
        r = sps.ttest_rel(x, y)
        out.update(test="paired", t=float(r.statistic), p=float(r.pvalue))
        return out
    if paired:
        raise ValueError(f"paired groups need equal sizes, got {x.size} and {y.size}")
    if x.size == 1 or y.size == 1:
        fixed, draws, sign = (float(x[0]), y, 1.0) if x.size == 1 else (float(y[0]), x, -1.0)
        s = float(draws.std(ddof=1))
        if s == 0:
            out.update(test="constant", p=1.0 if diff == 0 else None)
            return out
        m = draws.size
        t = (fixed - float(draws.mean())) / (s * math.sqrt(1.0 + 1.0 / m))
        p = float(2.0 * sps.t.sf(abs(t), df=m - 1))
        out.update(test="prediction", t=sign * t, p=p)
        return out
    if x.std() == 0 and y.std() == 0:
        out.update(test="constant", p=1.0 if diff == 0 else None)
        return out
    r = sps.ttest_ind(x, y, equal_var=False)
    out.update(test="welch", t=float(r.statistic), p=float(r.pvalue))
    return out


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (same order; None stays None): a family of tests where
    "any of them below ALPHA" is the claim, e.g. a method that wins at any of several m."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and math.isfinite(p)]
    order = sorted(idx, key=lambda i: float(pvalues[i]))  # type: ignore[arg-type]
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * float(pvalues[i])))  # type: ignore[arg-type]
        out[i] = running
    return out


def fmt_p(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return ""
    # three decimals near the 0.05 threshold, so 0.053 never reads as "p = 0.05"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"


def _sig(c: Mapping[str, Any] | None) -> bool:
    return c is not None and c.get("p") is not None and float(c["p"]) < ALPHA


def metric_kind(
    *,
    after: Sequence[float],
    before: Sequence[float],
    control: Sequence[float] | None,
    higher_is_better: bool = True,
    paired: bool = False,
    tolerance: float = 0.0005,
) -> str:
    """The outcome for one metric, one of VERDICT_KINDS except "mixed".

    improved: the metric got better than before AND better than the random control, both
    significantly. "Significantly better than before" is a p-value when there is one; for an exact
    counterfactual (single values) the control draws decide, and with neither, the exact change
    counts. worse: it got worse than before, significantly in the same sense. unchanged: it moved
    less than `tolerance`. inconclusive: anything else (it moved, but chance or any random removal
    could explain it), and empty groups.
    """
    after, before = list(after), list(before)
    if not after or not before:
        return "inconclusive"
    sign = 1.0 if higher_is_better else -1.0
    ab = compare(after, before, paired=paired)
    gain = sign * ab["diff"]
    if abs(gain) < tolerance:
        return "unchanged"
    ac = compare(after, list(control), paired=paired) if control else None
    gain_c = sign * ac["diff"] if ac is not None else math.nan
    # an exact change has no p-value: the control draws tell whether it is more than chance
    vs_before = (ac is None or _sig(ac)) if ab["test"] == "exact" else _sig(ab)
    if gain > 0:
        beats_control = ac is None or (_sig(ac) and gain_c > 0)
        return "improved" if vs_before and beats_control else "inconclusive"
    if ab["test"] == "exact" and ac is not None:
        vs_before = _sig(ac) and gain_c < 0  # below what random removal does, not only below before
    return "worse" if vs_before else "inconclusive"


def overall_kind(kinds: Mapping[str, str]) -> str:
    """One outcome from the per-metric ones: improved / worse if some metric moved that way and
    none the other way, mixed if both happened, unchanged if all were, else inconclusive."""
    vals = set(kinds.values())
    if "improved" in vals and "worse" in vals:
        return "mixed"
    if "improved" in vals:
        return "improved"
    if "worse" in vals:
        return "worse"
    if vals and vals == {"unchanged"}:
        return "unchanged"
    return "inconclusive"


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


def _change(metric: str, d: float) -> str:
    """'raised test accuracy by 1.3 points' / 'lowered test loss by 0.041'."""
    words, _, tol = METRICS[metric]
    if abs(d) < tol:
        return f"left {words} unchanged"
    size = f"{_points(abs(d))} points" if metric.endswith("_acc") else f"{abs(d):.3f}"
    return f"{'raised' if d > 0 else 'lowered'} {words} by {size}"


def resolution(n_test: int, acc: float) -> dict[str, float]:
    """What n_test images can show about accuracy: one image's share, and the 95% sampling margin
    of one accuracy, 1.96 * sqrt(acc (1 - acc) / n) (fractions)."""
    if n_test <= 0 or not math.isfinite(acc):
        return {"one_image": math.nan, "margin": math.nan}
    a = min(max(acc, 0.0), 1.0)
    return {"one_image": 1.0 / n_test, "margin": 1.96 * math.sqrt(max(a * (1 - a), 1e-12) / n_test)}


def outcome(
    groups: Mapping[str, Mapping[str, Sequence[float]] | None],
    *,
    paired: bool,
    metrics: Sequence[str] = ("test_acc", "test_loss"),
) -> dict[str, Any]:
    """Per metric: {"kind", "vs_before", "vs_control"}; plus "kind" (overall_kind).

    groups: {"after": {metric: values}, "before": {...}, "control": {...} or None}.
    """
    after, before, control = groups["after"], groups["before"], groups.get("control")
    if after is None or before is None:
        raise ValueError("outcome needs the after and before groups")
    per: dict[str, Any] = {}
    for m in metrics:
        _, higher, tol = METRICS[m]
        ctrl = list(control[m]) if control else None
        per[m] = {
            "kind": metric_kind(
                after=after[m],
                before=before[m],
                control=ctrl,
                higher_is_better=higher,
                paired=paired,
                tolerance=tol,
            ),
            "vs_before": compare(after[m], before[m], paired=paired),
            "vs_control": compare(after[m], ctrl, paired=paired) if ctrl else None,
        }
    return {"metrics": per, "kind": overall_kind({m: v["kind"] for m, v in per.items()})}


def verdict(
    groups: Mapping[str, Mapping[str, Sequence[float]] | None],
    *,
    n_drop: int,
    n_relabel: int = 0,
    n_test: int = 0,
    n_test_checked: int = 0,
    paired: bool = False,
) -> tuple[str, str]:
    """(sentence, kind) for a retraining experiment, judged on test accuracy and test loss.

    groups: {"after" / "before" / "control" (None without a control): {"test_acc": values,
    "test_loss": values}}, values over seeds (fresh, paired by seed) or one value (exact retrain).
    The sentence says how each metric moved, against the control with its p-values, which of
    them is proven, and (n_test > 0) how many test images it rests on (and how many of their
    labels a person checked, engine.trusted).
    """
    act, ctrl_act = _action(n_drop, n_relabel, these=True)
    after, before, control = groups["after"], groups["before"], groups.get("control")
    if not after or not before or not after.get("test_acc") or not before.get("test_acc"):
        return "No retraining results to compare.", "inconclusive"
    res = outcome(groups, paired=paired)
    kind = res["kind"]
    per = res["metrics"]
    moves = [_change(m, per[m]["vs_before"]["diff"]) for m in ("test_acc", "test_loss")]
    first = f"{act} {moves[0]} and {moves[1].replace(' test ', ' ', 1)}"
    parts = [first]
    what = f"removing any {_images(n_drop)}" if not n_relabel else "changing any images"
    if control:
        cd = {m: float(np.mean(control[m])) - float(np.mean(before[m])) for m in per}
        avg = " on average" if len(list(control["test_acc"])) > 1 else ""
        parts.append(
            f"{ctrl_act} changed accuracy by {_points(cd['test_acc'])} points and loss by "
            f"{cd['test_loss']:+.3f}{avg}"
        )
    else:
        ps = [fmt_p(per[m]["vs_before"]["p"]) for m in ("test_acc", "test_loss")]
        if any(ps):
            parts.append(f"against before: accuracy {ps[0] or 'n/a'}, loss {ps[1] or 'n/a'}")
    if control:
        pa, pl = (fmt_p(per[m]["vs_control"]["p"]) for m in ("test_acc", "test_loss"))
        test = "paired by seed" if paired else per["test_acc"]["vs_control"]["test"]
        vs = f" (against the random control: accuracy {pa or 'n/a'}, loss {pl or 'n/a'}; {test})"
    else:
        vs = ""
    proven = [METRICS[m][0] for m in ("test_acc", "test_loss") if per[m]["kind"] == "improved"]
    if kind == "improved":
        tail = f"proven on {' and '.join(proven)} — the improvement is not a matter of {what}{vs}"
    elif kind == "mixed":
        tail = f"the metrics disagree, so this is no proof either way{vs}"
    elif kind == "worse":
        hurt = [METRICS[m][0] for m in ("test_acc", "test_loss") if per[m]["kind"] == "worse"]
        tail = f"{' and '.join(hurt)} got worse: these images were helping the model{vs}"
    elif kind == "unchanged":
        tail = "these images were not hurting the model"
    else:
        tail = (
            f"{what} might do as well, so this is no proof these images were the problem{vs}"
            if control
            else "the change could be chance (not significant)"
        )
    text = "; ".join(parts) + ": " + tail + "."
    if n_test:
        r = resolution(n_test, float(np.mean(before["test_acc"])))
        text += (
            f" It rests on {n_test} test images"
            + (f" ({n_test_checked} of their labels checked by a person)" if n_test_checked else "")
            + f": one image is {r['one_image'] * 100:.2f} points, "
            f"and an accuracy measured on them is uncertain by about ±{r['margin'] * 100:.1f} points."
        )
    return text, kind
