"""The linear datamodeling score (LDS): do a method's scores predict what removing a *group* does?

For subsets D_j of the training set (a fraction f of it, drawn at random, j = 1..M): retrain
without D_j and measure the query, f_j; predict it as the sum of the scores of the removed
samples, g_j = sum_{k in D_j} score_k (score = estimated change of the query loss if k is
removed, so g_j is the predicted change). LDS = Spearman(f_j, g_j) over the M subsets (Park et al.
2023, TRAK). Queries:

- ``val``: the scalar mean validation loss (the query every estimator ranks by);
- ``test``: each of ``n_test`` test images' own loss (TRAK's definition), one LDS per test image,
  averaged.

Settings (the ground truth):

- ``single``: the counterfactual ``all`` retrain of this run (same initial weights, batches and
  augmentation; the removed samples weigh 0 in their batches and the logged 1/B_t stays, which is
  what the scores estimate): deterministic, the quantity of MAGIC / exact unrolling;
- ``fresh``: ``seeds`` new seeds per subset (new initial weights and batch order, the removed
  samples really gone; TRAK's alpha-subset protocol, alpha = 1 - f), the query averaged over seeds.

How much of a group's effect is additive at all (``ceiling``): if the truth were a sum of
per-sample effects, F(A u B) = F(A) + F(B) for disjoint groups. Retraining without the unions of
subsets j and j + M/2 (fractions up to 0.2) measures the non-additive part, and from it the best
correlation any sum of per-sample scores can reach on this run (engine.experiments.additivity).
On a chaotic run (large steps, heavy momentum) most of a group's effect is not additive, and no
estimator can predict it.

The ground truth (engine.experiments.truth) is cached in the run
(``<run>/lds/truth-<setting>-<query>-s<seeds>.json``, keyed by fraction and subset, tagged with
the run's fingerprint) and reused across methods and calls; a call that asks for more subsets
retrains only the new ones. Confidence intervals: a percentile
bootstrap over the subsets (the LDS's own sampling error; about +-0.18 at 30 subsets).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

import numpy as np

from engine.config import ConfigError
from engine.counterfactual import query_values
from engine.experiments.additivity import Ceiling, ceilings
from engine.experiments.truth import ground_truth, subset
from engine.influence.methods import check_method_options, get_method, parse_method_spec
from engine.influence.scorestore import ScoreStore
from engine.loading import LoadedRun, load_run
from engine.progress import Progress

__all__ = [
    "QUERIES",
    "SETTINGS",
    "LdsResult",
    "bootstrap_ci",
    "ground_truth",
    "lds",
    "lds_score",
    "query_values",
    "subset",
    "test_ids_for",
]

SETTINGS = ("single", "fresh")
QUERIES = ("val", "test")


class Cell(TypedDict):
    lds: float
    ci: list[float]
    n_subsets: int


class LdsResult(TypedDict, total=False):
    kind: str  # "lds"
    run_dir: str
    setting: str
    query: str
    seeds: int
    subsets: int
    fractions: list[str]  # as given
    test_ids: list[str]  # the test images of the "test" query ([] for "val")
    methods: dict[str, dict[str, Cell]]  # method -> fraction (as given) -> cell
    ceiling: dict[str, Ceiling]  # fraction (as given) -> the additivity ceiling (ceiling=True)
    retrains: int  # ground-truth retrains this call ran (0 when all were cached)
    seconds: float
    id: str
    path: str


def test_ids_for(loaded: LoadedRun, n_test: int | None) -> list[str]:
    """n_test test images spread evenly over the test split (all of them for None)."""
    ids = list(loaded.bundle.test.ids)
    if n_test is None or n_test >= len(ids):
        return ids
    if n_test < 1:
        raise ConfigError(f"n_test must be positive, got {n_test}", param="n_test")
    pick = np.linspace(0, len(ids) - 1, n_test).round().astype(int)
    return [ids[i] for i in dict.fromkeys(pick.tolist())]


def _spearman_columns(f: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Spearman correlation of each column pair of f and g (M, Q) over the M rows (NaN where a
    column is constant)."""
    from scipy.stats import rankdata

    rf = rankdata(f, axis=0) - (f.shape[0] + 1) / 2
    rg = rankdata(g, axis=0) - (g.shape[0] + 1) / 2
    den = np.sqrt((rf**2).sum(0) * (rg**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rf * rg).sum(0) / np.where(den > 0, den, 1.0), np.nan)


def lds_score(truth: np.ndarray, predicted: np.ndarray) -> float:
    """The LDS of predictions (M, Q) against measured values (M, Q): the mean over the Q queries
    of Spearman over the M subsets (NaN when every query is constant)."""
    rho = _spearman_columns(truth, predicted)
    return float(np.nanmean(rho)) if np.isfinite(rho).any() else float("nan")


def bootstrap_ci(truth: np.ndarray, predicted: np.ndarray, *, draws: int, seed: int) -> list[float]:
    rng = np.random.default_rng([seed, 6_700_417])
    m = truth.shape[0]
    vals = []
    for _ in range(draws):
        pick = rng.integers(0, m, size=m)
        vals.append(lds_score(truth[pick], predicted[pick]))
    v = np.array(vals)
    v = v[np.isfinite(v)]
    if not len(v):
        return [float("nan"), float("nan")]
    return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]


def _scores(
    store: ScoreStore, loaded: LoadedRun, method: str, query: str, test_ids: list[str]
) -> np.ndarray:
    """(N, Q) the method's scores for the query: its val scores, or one column per test image
    (a method that ignores the query has one column, used for every test image).

    method: a name (its stored scores, computed and stored when missing) or 'name:key=value...'
    (a variant: computed with those options, never stored, so the run's scores stay as they are).
    """
    name, opts = parse_method_spec(method)
    spec = get_method(name)
    q = "val" if query == "val" or not spec.uses_query else "test:" + ",".join(test_ids)
    cols = ["score"] if q == "val" else [f"test:{t}" for t in test_ids]
    if opts:  # run_method's columns come in the query's order
        vals = store.run(name, q, **opts)
    else:
        vals = store.get_or_compute(name, q)[cols].to_numpy(np.float64)
    if q == "val":
        return np.repeat(vals[:, :1], 1 if query == "val" else len(test_ids), axis=1)
    return vals


def lds(
    run_dir: str | Path,
    *,
    methods: Sequence[str],
    fractions: Sequence[float | str] = (0.01, 0.1, 0.5),
    subsets: int = 30,
    setting: str = "single",
    seeds: int = 1,
    query: str = "val",
    n_test: int | None = 50,
    bootstrap: int = 1000,
    progress: Progress | None = None,
    save: bool = True,
    ceiling: bool = False,
) -> LdsResult:
    """The LDS of each method at each fraction removed, with bootstrap 95% intervals (module
    docstring). fractions: floats in (0, 1) or their texts ("0.1"), reported as given. seeds: fresh
    retrains per subset (setting "fresh" only). n_test: test images of the "test" query.
    methods: names, or 'name:key=value...' variants (computed with those options, not stored).
    ceiling: also the additivity ceiling at each fraction up to CEILING_MAX_FRACTION
    (additive_ceiling; subsets // 2 more retrains per fraction, cached)."""
    if setting not in SETTINGS:
        raise ConfigError(f"setting must be single or fresh, got {setting!r}", param="setting")
    if query not in QUERIES:
        raise ConfigError(f"query must be val or test, got {query!r}", param="query")
    if subsets < 3:
        raise ConfigError(
            f"subsets must be at least 3 (a rank correlation), got {subsets}", param="subsets"
        )
    if seeds < 1:
        raise ConfigError(f"seeds must be at least 1, got {seeds}", param="seeds")
    if not methods:
        raise ConfigError("methods: name at least one method", param="methods")
    labels = [str(f) for f in fractions]
    try:
        values = [float(f) for f in fractions]
    except ValueError as e:
        raise ConfigError(
            f"fraction must be numbers in (0, 1), got {labels}", param="fraction"
        ) from e
    if not all(0 < v < 1 for v in values):
        raise ConfigError(f"fraction must be in (0, 1), got {labels}", param="fraction")
    for m in methods:  # unknown methods and options fail before any retrain
        name, opts = parse_method_spec(m)
        check_method_options(get_method(name), opts)
    t0 = time.perf_counter()
    loaded = load_run(run_dir)
    ids = test_ids_for(loaded, n_test) if query == "test" else []
    seeds = seeds if setting == "fresh" else 1
    truth, retrains = ground_truth(
        loaded, values, subsets, setting=setting, seeds=seeds, query=query, test_ids=ids,
        progress=progress,
    )  # fmt: skip
    ceil: dict[str, Ceiling] = {}
    if ceiling:
        got, more = ceilings(
            loaded, truth, setting=setting, seeds=seeds, query=query, test_ids=ids,
            bootstrap=bootstrap, progress=progress,
        )  # fmt: skip
        ceil = {label: got[v] for v, label in zip(values, labels, strict=True) if v in got}
        retrains += more
    store = ScoreStore(loaded.run.path)
    table: dict[str, dict[str, Cell]] = {}
    for m in methods:
        s = _scores(store, loaded, m, query, ids)  # (N, Q)
        table[m] = {}
        for v, label in zip(values, labels, strict=True):
            pred = np.stack([s[subset(loaded, v, j)].sum(0) for j in range(subsets)])  # (M, Q)
            table[m][label] = Cell(
                lds=lds_score(truth[v], pred),
                ci=bootstrap_ci(truth[v], pred, draws=bootstrap, seed=loaded.cfg.seed),
                n_subsets=subsets,
            )
    res = LdsResult(
        kind="lds", run_dir=str(loaded.run.path), setting=setting, query=query,
        seeds=seeds, subsets=subsets, fractions=labels, test_ids=ids,
        methods=table, retrains=retrains, seconds=time.perf_counter() - t0,
    )  # fmt: skip
    if ceiling:
        res["ceiling"] = ceil
    if save:
        from engine.experiments.report import new_experiment_dir, save_result

        folder = new_experiment_dir(loaded.run.path, "lds")
        res["id"], res["path"] = folder.name, str(folder)
        save_result(folder, dict(res))
    return res
