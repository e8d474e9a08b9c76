"""A measured recommendation: which method's suggestions help *this* run, judged before any proof.

No method is right everywhere (DESIGN.md section 5), so the recommendation is a measurement on the
user's own run. For every candidate method and every k of a small grid (``default_ks``): take
its top k (most negative scores first), retrain
counterfactually without them (``all`` mode: the run's initial weights and logged batches,
deterministic, engine.retrain.counterfactual) and measure the change of validation loss and
accuracy; as controls, k random images, ``control_draws`` times for each k. The test split is never read: it
is kept for the proof (engine.retrain). Methods whose scores read the validation split are
cross-fitted: their top k by the scores of validation half A (query ``val-a``,
engine.influence.queries.val_halves) is judged on half B, the top k by half B's scores on half A,
and the two changes are pooled, so no method is rewarded for fitting the images it is judged on
and every validation image still counts; label-only methods and the random draws are judged on
the whole validation split. The retrains renormalise each logged batch over the samples that stay
(engine.retrain.counterfactual(renormalise=True)): a group removal then does not also shrink every
step, which would make any large removal look harmful.

Ranking: by ``objective`` ("acc", the default, as people judge a model: validation accuracy,
then loss to break ties; or "loss"), and a (method, k) is recommended only when its removal beats
the random control of the same k on that objective without making it worse than before. Its drop
list is the top k of its scores on the whole validation split (for label-only methods, the same
scores).

Results live in ``<run>/experiments/recommend-*/result.json`` with the parameters of the score
sets they used; ``latest_recommendation`` returns the newest one whose inputs are unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np
import torch

from engine.config import ConfigError
from engine.experiments.report import new_experiment_dir, save_result
from engine.influence.methods import get_method
from engine.influence.queries import val_halves
from engine.influence.scorestore import ScoreStore
from engine.loading import LoadedRun, load_run
from engine.progress import Progress
from engine.recommendations import input_stamp, latest_recommendation, table_frame, why_sentence
from engine.removals import Removals, random_picks, random_summary
from engine.trusted import trusted_counts

__all__ = [
    "RecommendResult",
    "OBJECTIVES",
    "default_candidates",
    "default_k",
    "latest_recommendation",
    "recommend",
    "reads_validation",
    "score_and_recommend",
    "table_frame",
]

OBJECTIVES = ("acc", "loss")
# label-only methods first: they stay valid when the validation labels are not trusted
CANDIDATES = ("margin", "loss", "confident-learning", "combined", "hydra", "sgd-influence")
EXACT_MAX_TRAIN = 20_000  # the exact pass is a default candidate up to this many training samples
MEASURE_MODES = ("all", "fresh")


GRID = (0.05, 0.1, 0.15, 0.2)  # shares of the training set measured when k is not given
GRID_MAX_TRAIN = 20_000  # above this, one k (each k costs len(methods) + draws retrains)


def default_k(n_train: int) -> int:
    """10% of the training set, at least 10 and at most 2,000, never more than half of it."""
    return _clip_k(round(0.1 * n_train), n_train, floor=10)


def _clip_k(k: float, n_train: int, *, floor: int = 1) -> int:
    return int(max(1, min(max(floor, round(k)), 2000, n_train // 2)))


def default_ks(n_train: int) -> list[int]:
    """The k grid: GRID shares of the training set (each clipped like default_k) up to
    GRID_MAX_TRAIN training images, else [default_k]."""
    if n_train > GRID_MAX_TRAIN:
        return [default_k(n_train)]
    return sorted({_clip_k(f * n_train, n_train) for f in GRID})


def reads_validation(method: str) -> bool:
    """Whether a method's scores depend on the validation split (its images or labels)."""
    return get_method(method).uses_query or method == "combined"


def default_candidates(loaded: LoadedRun) -> list[str]:
    """The methods worth measuring at this run's size (the exact pass up to EXACT_MAX_TRAIN)."""
    n = len(loaded.bundle.train)
    return [m for m in CANDIDATES if m != "sgd-influence" or n <= EXACT_MAX_TRAIN]


def _scores(
    run_dir: str | Path, method: str, query: str, *, progress: Progress | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Stored scores (N,) of method for query (whatever options made them: what the pages show),
    computed and stored if missing or made for another state of the run; with their params."""
    store = ScoreStore(run_dir)
    frame = store.get_or_compute(method, query, progress=progress)
    return frame.iloc[:, 1].to_numpy(np.float64), dict(store.params(method, query) or {})


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k most negative (most harmful) scores, most harmful first (stable)."""
    return np.argsort(scores, kind="stable")[:k]


def _key(row: dict[str, Any], objective: str) -> tuple[float, float]:
    """Sort key, larger = better: (objective gain, the other metric's gain)."""
    acc, loss = row["d_val_acc"], -row["d_val_loss"]
    return (acc, loss) if objective == "acc" else (loss, acc)


class RecommendResult(TypedDict, total=False):
    """What recommend returns and saves (``<run>/experiments/recommend-*/result.json``)."""

    kind: str  # "recommend"
    run_dir: str
    method: str | None  # the recommended method; None when no removal helped and beat random
    k: int  # the recommended k (else the grid's middle)
    ks: list[int]
    objective: str  # acc | loss
    drop: list[str]  # the recommended method's top k training ids (empty without one)
    table: list[dict[str, Any]]  # one row per (method, k): d_val_loss, d_val_acc, vs_random_*,
    #                              hurts, disagree, precision, seconds, query
    random: dict[str, Any]  # the random removals at k
    random_by_k: dict[str, dict[str, Any]]
    baseline: dict[str, float]  # val_loss / val_acc before any removal
    judged_on: dict[str, Any]  # split, n, halves, trusted
    mode: str  # all | fresh
    fresh_seeds: list[int]
    label_only: bool
    inputs: dict[
        str, Any
    ]  # the score sets it used ("method/query" -> stamp): stale when they change
    n_known_errors: int | None
    scores_sum: float  # the sum of the recommended top k's scores
    why: str  # one sentence for the pages
    seconds: float
    id: str
    path: str


def recommend(
    run_dir: str | Path,
    *,
    k: int | Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
    objective: str = "acc",
    control_draws: int = 3,
    label_only: bool = False,
    mode: str = "all",
    seeds: int = 2,
    progress: Progress | None = None,
    save: bool = True,
) -> RecommendResult:
    """Measure which method's top-k removal helps this run; see the module docstring.

    label_only: measure only methods that do not read the validation split (loss, margin,
    confident-learning, ...): for a run whose validation labels may share the training set's
    errors and that no person has checked yet (engine.trusted).

    mode: "all" (default: counterfactual retrains, same start and batches, deterministic) or
    "fresh": `seeds` fresh retrains per removal (seeds run seed + 1001.., none of the proof's),
    paired with fresh retrains on all the data; twice the cost per seed, closer to the proof.

    k: one k, several, or None for default_ks. Returns (and saves, if `save`) {"kind":
    "recommend", "method": name or None, "k" (the recommended k, else the grid's middle), "ks",
    "drop": [sample ids, most harmful first], "table": [one row per method and k: d_val_loss,
    d_val_acc (after - before, on validation images the method's scores did not see), vs_random_loss / vs_random_acc (minus the
    random draws' mean change at that k), hurts, disagree, seconds, query, precision (share of
    known label errors, when the run has them)], "random" (at the recommended k), "random_by_k",
    "baseline", "why": one sentence, ...}.
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective must be acc or loss, got {objective!r}")
    if control_draws < 1:
        raise ConfigError("control draws must be at least 1")
    if mode not in MEASURE_MODES:
        raise ConfigError(f"mode must be all or fresh, got {mode!r}")
    if seeds < 1:
        raise ConfigError("seeds must be at least 1")
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    loaded = load_run(run_dir)
    n = len(loaded.bundle.train)
    ks = (
        default_ks(n) if k is None else sorted({int(x) for x in ([k] if isinstance(k, int) else k)})
    )
    if not ks or not all(1 <= x < n for x in ks):
        raise ConfigError(f"k must be between 1 and {n - 1} (the run has {n} training images)")
    if len(loaded.bundle.val) < 2:
        raise ConfigError("a recommendation needs at least 2 validation images (two halves)")
    names = list(methods) if methods else default_candidates(loaded)
    for m in names:
        get_method(m)  # unknown names fail before any work
    if label_only:
        names = [m for m in names if not reads_validation(m)]
        if not names:
            raise ConfigError("label_only leaves no method: give at least one label-only method")
    checked = trusted_counts(run_dir)["val"]["checked"]
    halves = val_halves(len(loaded.bundle.val), seed=loaded.cfg.seed)
    every = torch.arange(len(loaded.bundle.val))
    ids = loaded.bundle.train.ids
    judges = {"a": halves[0], "b": halves[1], "all": every}
    fresh_seeds = [loaded.cfg.seed + 1001 + i for i in range(seeds)]
    plan = Removals(loaded, mode=mode, fresh_seeds=fresh_seeds, judges=judges)
    before = plan.ask(None)
    random_asked = {kk: [plan.ask(p) for p in random_picks(loaded, kk, control_draws)] for kk in ks}
    flipped = _known_errors(loaded)
    inputs, full_by_method, asked, t_scores = {}, {}, {}, {}
    for m in names:  # the scores, and the removals each (method, k) is judged by
        t1 = time.perf_counter()
        split = reads_validation(m)
        queries = ("val-a", "val-b") if split else ("val",)
        got = [_scores(run_dir, m, q) for q in queries]
        for q, (_, params) in zip(queries, got, strict=True):
            inputs[f"{m}/{q}"] = input_stamp(params)
        if flipped is not None:
            full_by_method[m] = _scores(run_dir, m, "val")[0] if split else got[0][0]
        t_scores[m] = time.perf_counter() - t1 + sum(float(p.get("seconds") or 0.0) for _, p in got)
        for kk in ks:  # top k by half A's scores judged on half B, and by B's on A
            asked[m, kk] = (
                [(plan.ask(_top(got[0][0], kk)), "b"), (plan.ask(_top(got[1][0], kk)), "a")]
                if split
                else [(plan.ask(_top(got[0][0], kk)), "all")]
            )
    t2 = time.perf_counter()
    plan.run(progress)
    per_task = (time.perf_counter() - t2) / max(plan.n_tasks, 1)
    base = {h: plan.judged(before, h) for h in judges}

    def change(handle: int, judge: str) -> dict[str, float]:
        after = plan.judged(handle, judge)
        return {"d_val_loss": after["val_loss"] - base[judge]["val_loss"],
                "d_val_acc": after["val_acc"] - base[judge]["val_acc"], **after}  # fmt: skip

    random_by_k = {kk: random_summary([change(h, "all") for h in hs])
                   for kk, hs in random_asked.items()}  # fmt: skip
    rows = []
    for m in names:
        for kk in ks:
            rand = random_by_k[kk]
            parts = [(change(h, judge), judge) for h, judge in asked[m, kk]]
            # cross-fitted: the two halves' changes pooled by the size of the half judged
            size = {"a": len(halves[0]), "b": len(halves[1]), "all": len(every)}
            total_w = sum(size[j] for _, j in parts)
            measured = (
                parts[0][0]
                if len(parts) == 1
                else {x: sum(size[j] * c[x] for c, j in parts) / total_w for x in parts[0][0]}
            )
            row: dict[str, Any] = {"method": m, "k": kk,
                                   "query": "val-a / val-b" if len(parts) == 2 else "val", **measured}  # fmt: skip
            row["vs_random_loss"] = row["d_val_loss"] - rand["d_val_loss"]
            row["vs_random_acc"] = row["d_val_acc"] - rand["d_val_acc"]
            # worse than before on the objective, or level on it and worse on the other metric
            row["hurts"] = bool(_key(row, objective) < (0.0, 0.0))
            row["disagree"] = bool(row["d_val_acc"] * -row["d_val_loss"] < 0)
            # the time to have this suggestion measured: its scores + its share of the retrains
            row["seconds"] = t_scores[m] + per_task * len(parts) * plan.per_removal
            if flipped is not None:
                row["precision"] = float(flipped[_top(full_by_method[m], kk)].mean())
            rows.append(row)
    best = choose(rows, random_by_k, objective)
    drop: list[str] = []
    full: dict[str, Any] = {}
    k_out = ks[len(ks) // 2]
    if best is not None:
        k_out = int(best["k"])
        full_scores, params = _scores(run_dir, best["method"], "val")
        inputs[f"{best['method']}/val"] = input_stamp(params)
        full = {"scores_sum": float(np.sort(full_scores)[:k_out].sum())}
        drop = [ids[i] for i in _top(full_scores, k_out)]
    res: dict[str, Any] = {
        "kind": "recommend",
        "run_dir": str(run_dir),
        "method": None if best is None else best["method"],
        "k": k_out,
        "ks": ks,
        "objective": objective,
        "drop": drop,
        "table": sorted(rows, key=lambda r: _key(r, objective), reverse=True),
        "random": random_by_k[k_out],
        "random_by_k": {str(kk): v for kk, v in random_by_k.items()},
        "baseline": base["all"],
        "judged_on": {
            "split": "val",
            "n": len(every),
            "halves": [len(h) for h in halves],
            "trusted": checked > 0,
        },  # fmt: skip
        "mode": mode,
        "fresh_seeds": fresh_seeds if mode == "fresh" else [],
        "label_only": label_only,
        "inputs": inputs,
        "n_known_errors": int(flipped.sum()) if flipped is not None else None,
        **full,
    }
    res["why"] = why_sentence(res)
    res["seconds"] = time.perf_counter() - t0
    if save:
        folder = new_experiment_dir(run_dir, "recommend")
        res["id"], res["path"] = folder.name, str(folder)
        save_result(folder, res)
    return cast(RecommendResult, res)


def score_and_recommend(
    run_dir: str | Path, *, k: int | Sequence[int] | None = None, progress: Progress | None = None
) -> RecommendResult:
    """The demo chain's last step: the validation scores of every default candidate (kept where
    already stored), then the recommendation. Returns recommend's result (saved)."""
    for m in default_candidates(load_run(run_dir)):
        _scores(run_dir, m, "val", progress=progress)
    return recommend(run_dir, k=k, progress=progress)


def choose(
    rows: list[dict[str, Any]], random_by_k: dict[int, dict[str, Any]], objective: str
) -> dict[str, Any] | None:
    """The best row by `objective` that helps, beats random removal of its k and does not hurt."""
    ok = [
        r for r in rows
        if not r["hurts"] and _key(r, objective) > (0.0, 0.0)  # it must help, not only beat random
        and _key(r, objective) > _key(random_by_k[int(r["k"])], objective)
    ]  # fmt: skip
    return max(ok, key=lambda r: _key(r, objective)) if ok else None


def _known_errors(loaded: LoadedRun) -> np.ndarray | None:
    """(N_train,) bool of the deliberate label errors the run knows of, or None when it knows none."""
    m = loaded.bundle.manifest
    if "flipped" not in m:
        return None
    f = m.set_index("sample_id").loc[loaded.bundle.train.ids, "flipped"].to_numpy(bool)
    return f if f.any() else None
