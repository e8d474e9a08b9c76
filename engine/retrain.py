"""Counterfactual retraining: prove an influence finding by retraining without (or relabelling) samples.

Modes (Hara et al. 2019 Sec. 7.2 names in brackets):

- ``all`` ["Retrain All"]: the run's initial weights, the same logged batches, learning rates and
  augmentation seeds; dropped samples get weight 0 in their batches (the 1/B_t normalisation and
  everyone else's augmentation stay as logged), relabelled samples use their new label. With
  nothing changed it reproduces the run's final weights bit for bit. Deterministic: one retrain.
- ``last`` ["Retrain Last"]: the same, starting from the checkpoint at the start of the last epoch.
- ``fresh``: S new seeds (new initial weights and batch order), training on the cleaned data (the
  dropped samples really removed, batches re-cut), against S fresh seeds on the uncleaned data.
  ``budget="steps"`` (default) keeps the run's number of SGD steps; see engine.fresh.

Controls: the same number of other training samples, drawn at random, removed (and relabelled to a
random other class, for relabel changes). For ``all`` / ``last`` each of ``control_draws`` draws is
one retrain; for ``fresh`` there are S draws, draw i trained with seed i.

Every retrain of a comparison is a task of the current executor (engine.executor: inline, local
processes or Ray; the same results on each); progress counts finished retrains. Results are saved
to ``<run>/experiments/retrain-<timestamp>-<hex>/result.json``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch

from engine import tasks
from engine.changes import Changes, resolve_changes
from engine.config import ConfigError
from engine.counterfactual import counterfactual, evaluate_theta
from engine.executor import current_executor
from engine.experiments.report import list_experiments, new_experiment_dir, save_result
from engine.fresh import BUDGETS, train_fresh
from engine.loading import LoadedRun, load_run
from engine.progress import Progress
from engine.stats import Comparison, compare, summarize, verdict
from engine.trusted import trusted_counts

__all__ = [
    "BUDGETS",
    "MODES",
    "RetrainResult",
    "Changes",
    "counterfactual",
    "evaluate_theta",
    "list_experiments",
    "resolve_changes",
    "retrain",
    "train_fresh",
]

MODES = ("all", "last", "fresh")
CONTROLS = ("random", None)
SCALARS = ("val_acc", "val_loss", "test_acc", "test_loss")
ATTACK_SCALARS = ("attack_success", "attack_acc")  # backdoored runs only


def _group(runs: list[dict[str, Any]]) -> Group:
    summ: dict[str, Any] = {m: summarize([r[m] for r in runs]) for m in SCALARS}
    for m in ATTACK_SCALARS:
        if runs and all(m in r for r in runs):
            summ[m] = summarize([r[m] for r in runs])
    if runs:
        pc = np.array([r["per_class_acc"] for r in runs])
        summ["per_class_acc"] = {
            "mean": pc.mean(0).tolist(),
            "std": (pc.std(0, ddof=1) if len(runs) > 1 else 0 * pc[0]).tolist(),
        }
    return Group(runs=runs, summary=summ)


def _control_changes(loaded: LoadedRun, changes: Changes, draw: int) -> Changes:
    """Random changes of the same size: other samples dropped; others relabelled to a random other class."""
    n, k = len(loaded.bundle.train), loaded.bundle.n_classes
    rng = np.random.default_rng([loaded.cfg.seed, 7919, draw])
    taken = set(changes.drop.tolist()) | set(changes.relabel_idx.tolist())
    pool = np.array([i for i in range(n) if i not in taken])
    need = changes.n_drop + changes.n_relabel
    if len(pool) < need:
        pool = np.arange(n)
    pick = rng.choice(pool, size=need, replace=False)
    d, r = np.sort(pick[: changes.n_drop]), pick[changes.n_drop :]
    y = loaded.problem.y.cpu().numpy()
    new = (y[r] + rng.integers(1, k, size=len(r))) % k
    return Changes(*(torch.as_tensor(a, dtype=torch.int64) for a in (d, r, new)))


def _prediction(loaded: LoadedRun, drop: list[str], changes: Changes) -> dict[str, Any] | None:
    """What the exact scores predicted for this removal (engine.prediction), None for relabels or
    when the exact scores are not stored."""
    from engine.prediction import PREDICTOR, predicted_change

    if changes.n_relabel or not drop:
        return None
    v = predicted_change(loaded.run.path, drop)
    return None if not np.isfinite(v) else {"method": PREDICTOR, "val_loss_change": v}


class Group(TypedDict):
    """One side of a comparison: every retrain's metrics (evaluate_theta) and their summary
    ({metric: engine.stats.summarize}; per_class_acc: {"mean", "std"} lists of C)."""

    runs: list[dict[str, Any]]
    summary: dict[str, Any]


class MetricStats(TypedDict):
    after_vs_before: Comparison
    after_vs_control: Comparison | None


class RetrainResult(TypedDict, total=False):
    """What retrain returns and saves (``<run>/experiments/retrain-*/result.json``); the one
    description of its shape (the app's experiment view and the CLI read these keys)."""

    kind: str  # "retrain"
    run_dir: str
    mode: str  # all | last | fresh
    seeds: int  # fresh seeds S (1 for all / last)
    fresh_seeds: list[int]
    budget: str | None  # steps | epochs (fresh only)
    control: str  # random | none
    drop: list[str]  # training ids removed
    relabel: dict[str, int]  # training id -> new class index
    n_drop: int
    n_relabel: int
    class_names: list[str]
    before: Group  # the run itself (all / last), or S fresh seeds on the uncleaned data
    after: Group  # with the changes
    control_runs: Group | None  # the same number of random changes (None without a control)
    control_drops: list[list[str]]
    stats: dict[str, MetricStats]  # per scalar metric (val/test loss and accuracy, attack ones)
    paired: bool  # fresh: seed i trains before, after and control draw i
    n_test: int
    n_test_checked: int
    verdict: str  # engine.stats.verdict on test accuracy and test loss
    verdict_kind: str  # improved | mixed | inconclusive | worse | unchanged
    predicted: dict[str, Any] | None  # what the exact scores predicted (engine.prediction)
    measured_val_loss_change: float
    seconds: float
    id: str  # with save=True
    path: str


def _check_options(mode: str, control: str | None, seeds: int, draws: int, budget: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}", param="mode")
    if control not in CONTROLS:
        raise ConfigError(f"control must be random or none, got {control!r}", param="control")
    if seeds < 1 or draws < 1:
        raise ConfigError("seeds and control draws must be at least 1", param="seeds")
    if budget not in BUDGETS:
        raise ConfigError(f"budget must be steps or epochs, got {budget!r}", param="budget")


def _retrain_groups(
    loaded: LoadedRun,
    changes: Changes,
    ctrl: list[Changes],
    *,
    mode: str,
    fresh_seeds: list[int],
    budget: str,
    progress: Progress | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(before, after, controls): evaluate_theta of every retrain, run on the current executor
    (engine.executor); in mode fresh seed i trains before, after and control draw i."""
    if mode == "fresh":
        s = len(fresh_seeds)
        jobs = [tasks.retrain("fresh", None, seed=x, budget=budget) for x in fresh_seeds]
        jobs += [tasks.retrain("fresh", changes, seed=x, budget=budget) for x in fresh_seeds]
        jobs += [tasks.retrain("fresh", c, seed=x, budget=budget)
                 for x, c in zip(fresh_seeds, ctrl, strict=True)]  # fmt: skip
        got = current_executor().map(loaded.run.path, jobs, progress=progress)
        return got[:s], got[s : 2 * s], got[2 * s :]
    jobs = [tasks.retrain(mode, c) for c in [changes, *ctrl]]
    got = current_executor().map(loaded.run.path, jobs, progress=progress)
    return [evaluate_theta(loaded, loaded.final_theta)], got[:1], got[1:]


def _stats(
    loaded: LoadedRun,
    after: list[dict[str, Any]],
    before: list[dict[str, Any]],
    controls: list[dict[str, Any]],
    *,
    paired: bool,
) -> dict[str, MetricStats]:
    def values(runs: list[dict[str, Any]], m: str) -> list[float]:
        return [r[m] for r in runs]

    metrics = SCALARS + (ATTACK_SCALARS if loaded.bundle.attack is not None else ())
    return {
        m: MetricStats(
            after_vs_before=compare(values(after, m), values(before, m), paired=paired),
            after_vs_control=compare(values(after, m), values(controls, m), paired=paired)
            if controls
            else None,
        )
        for m in metrics
    }


def retrain(
    run_dir: str | Path | LoadedRun,
    *,
    drop: Sequence[str] = (),
    relabel: Mapping[str, int] | None = None,
    mode: str = "all",
    seeds: int = 1,
    control: str | None = "random",
    control_draws: int = 3,
    budget: str = "steps",
    progress: Progress | None = None,
    save: bool = True,
) -> RetrainResult:
    """Retrain without `drop` / with `relabel`, against the run itself and a random control.

    seeds: fresh seeds S (mode "fresh" only; "all" and "last" are deterministic, one retrain).
    budget: mode "fresh" only: "steps" (the run's number of SGD steps, default) or "epochs".
    Returns (and saves under <run>/experiments/, if `save`) a RetrainResult: before / after /
    control groups, per-metric stats (paired by seed in mode fresh), the verdict on test accuracy
    and test loss (engine.stats.verdict), and what the exact scores predicted.
    """
    _check_options(mode, control, seeds, control_draws, budget)
    t0 = time.perf_counter()
    loaded = run_dir if isinstance(run_dir, LoadedRun) else load_run(run_dir)
    changes = resolve_changes(loaded, drop, relabel)
    n_ctrl = 0 if control is None else (seeds if mode == "fresh" else control_draws)
    ctrl = [_control_changes(loaded, changes, d) for d in range(n_ctrl)]
    fresh_seeds = [loaded.cfg.seed + 1 + s for s in range(seeds)] if mode == "fresh" else []
    before, after, controls = _retrain_groups(
        loaded, changes, ctrl, mode=mode, fresh_seeds=fresh_seeds, budget=budget,
        progress=progress,
    )  # fmt: skip
    ids = loaded.bundle.train.ids
    paired = mode == "fresh"  # seed i trains before, after and control draw i
    metric_values = {
        name: {m: [r[m] for r in runs] for m in SCALARS} if runs else None
        for name, runs in (("after", after), ("before", before), ("control", controls))
    }
    checked = trusted_counts(loaded.run.path)["test"]["checked"]
    text, kind = verdict(
        metric_values, n_drop=changes.n_drop, n_relabel=changes.n_relabel,
        n_test=len(loaded.bundle.test), n_test_checked=checked, paired=paired,
    )  # fmt: skip
    drop_ids = [ids[i] for i in changes.drop.tolist()]
    pairs = zip(changes.relabel_idx.tolist(), changes.relabel_to.tolist(), strict=True)
    res = RetrainResult(
        kind="retrain",
        run_dir=str(loaded.run.path),
        mode=mode,
        seeds=seeds if mode == "fresh" else 1,
        fresh_seeds=fresh_seeds,
        budget=budget if mode == "fresh" else None,
        control=control or "none",
        drop=drop_ids,
        relabel={ids[i]: int(c) for i, c in pairs},
        n_drop=changes.n_drop,
        n_relabel=changes.n_relabel,
        class_names=loaded.bundle.class_names,
        before=_group(before),
        after=_group(after),
        control_runs=_group(controls) if controls else None,
        control_drops=[[ids[i] for i in c.drop.tolist()] for c in ctrl],
        stats=_stats(loaded, after, before, controls, paired=paired),
        paired=paired,
        n_test=len(loaded.bundle.test),
        n_test_checked=checked,
        verdict=text,
        verdict_kind=kind,
        predicted=_prediction(loaded, drop_ids, changes),
        measured_val_loss_change=float(
            np.mean([r["val_loss"] for r in after]) - np.mean([r["val_loss"] for r in before])
        ),
        seconds=time.perf_counter() - t0,
    )
    if save:
        folder = new_experiment_dir(loaded.run.path, "retrain")
        res["id"], res["path"] = folder.name, str(folder)
        save_result(folder, dict(res))
    return res
