"""How additive is a run's response to group removals, and so how good can any LDS be?

If removing a group changed the query by the sum of per-sample effects, F(A u B) = F(A) + F(B)
for disjoint groups. ``ceilings`` retrains without the unions of paired LDS subsets (fractions up
to CEILING_MAX_FRACTION) and ``additive_ceiling`` turns the non-additive part into r_max, the best
correlation any sum of per-sample scores can reach on this run (`retracer lds --ceiling`).
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np

from engine.experiments.truth import measured_groups, subset
from engine.loading import LoadedRun
from engine.progress import Progress

__all__ = ["CEILING_MAX_FRACTION", "Ceiling", "additive_ceiling", "ceilings"]

CEILING_MAX_FRACTION = 0.2  # the union removes twice the fraction: above this it leaves the scale


class Ceiling(TypedDict):
    r_max: float  # the best correlation any sum of per-sample scores can reach (module docstring)
    ci: list[float]
    noise_share: float  # Var(non-additive part) / Var(F)
    pairs: int


def additive_ceiling(
    changes: np.ndarray, union: np.ndarray, *, draws: int = 1000, seed: int = 0
) -> Ceiling:
    """The additivity ceiling from changes F (2P, Q) of groups A_1..A_P, B_1..B_P and F (P, Q)
    of the unions A_j u B_j (all relative to the unchanged run; Q queries averaged).

    Model: F(D) = sum_{k in D} a_k + eps(D), eps independent between groups with variance s2.
    The non-additive part e = F(A u B) - F(A) - F(B) has variance 3 s2, so no additive predictor
    correlates with F better than r_max = sqrt(1 - s2 / Var F). Interval: bootstrap over pairs.
    """
    p = union.shape[0]
    fa, fb = changes[:p], changes[p : 2 * p]

    def one(pick: np.ndarray) -> tuple[float, float]:
        err = union[pick] - fa[pick] - fb[pick]
        var_f = np.var(np.concatenate([fa[pick], fb[pick]]), axis=0)
        share = np.where(var_f > 0, np.var(err, axis=0) / 3 / np.where(var_f > 0, var_f, 1), 1.0)
        return float(np.mean(np.sqrt(np.clip(1 - share, 0, 1)))), float(np.mean(share))

    r, share = one(np.arange(p))
    rng = np.random.default_rng([seed, 104_729])
    boot = [one(np.asarray(rng.integers(0, p, size=p)))[0] for _ in range(draws)]
    ci = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]
    return Ceiling(r_max=r, ci=ci, noise_share=share, pairs=p)


def ceilings(
    loaded: LoadedRun,
    truth: dict[float, np.ndarray],
    *,
    setting: str,
    seeds: int,
    query: str,
    test_ids: list[str],
    bootstrap: int,
    progress: Progress | None = None,
) -> tuple[dict[float, Ceiling], int]:
    """The additivity ceiling at each fraction of `truth` ({fraction: (M, Q)}) up to
    CEILING_MAX_FRACTION: the unions of subsets j and j + M // 2 retrained (cached like the truth)
    and additive_ceiling. Larger fractions get none: their unions (2f removed) measure how the
    effect bends between f and 2f, which a linearisation around f (group_fraction) does not need,
    so the bound would not hold there (measured: .32 at 50% on the demo, where a score centred at
    50% reaches .76)."""
    truth = {f: t for f, t in truth.items() if f <= CEILING_MAX_FRACTION}
    if not truth:
        return {}, 0
    m = next(iter(truth.values())).shape[0]
    p = m // 2
    groups: dict[str, np.ndarray] = {"base": np.zeros(0, dtype=np.int64)}
    for f in truth:
        for j in range(p):
            groups[f"{f!r}/{j}+{j + p}"] = np.union1d(
                subset(loaded, f, j), subset(loaded, f, j + p)
            )
    vals, n = measured_groups(
        loaded, groups, setting=setting, seeds=seeds, query=query, test_ids=test_ids,
        progress=progress,
    )  # fmt: skip
    base = vals["base"]
    out = {}
    for f, t in truth.items():
        union = np.stack([vals[f"{f!r}/{j}+{j + p}"] for j in range(p)]) - base
        out[f] = additive_ceiling(t[: 2 * p] - base, union, draws=bootstrap, seed=loaded.cfg.seed)
    return out, n
