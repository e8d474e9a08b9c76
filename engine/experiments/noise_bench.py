"""Label-noise benchmark (HYDRA Table 3 protocol, plus detection metrics): inject noise, rank, clean, retrain.

Trains a run with `noise` of the training labels flipped (uniform or pair), runs every method,
and for each ranking reports:

- AUROC and average precision of detecting the flipped labels (sklearn), from a suspicion score:
  -score for the validation query and for query-free methods (negative = harmful = suspicious),
  +score for the self query (a large positive self-influence = memorised = suspicious);
- precision and recall at the true noise count n (flag the top n);
- test accuracy after removing the top n and retraining fresh (S new seeds; the same seeds for
  every row), with the no-filtering row (nothing removed) and the oracle row (exactly the flipped).
  The retrain keeps the noisy run's number of SGD steps (budget "steps", engine.retrain): with a
  fixed epoch count, removing 20% would also remove 20% of the updates and the oracle would lose
  to no filtering for that reason alone. Report mean ± std over the S seeds, and the paired gain
  over no filtering (same seeds). The CLI trains with a cosine schedule by default: with a
  constant learning rate the final iterate's test accuracy varies by ~0.05 between seeds on
  digits/lenet5 and even the oracle showed no gain (bench/results/issue5.md).

Trajectory methods (those in SELF_METHODS) also run with the self query; a combined ranking
(mean of the loss rank and the sgd-influence validation rank) is reported where both exist.

The ``recommended`` row is what the product would do without knowing which labels are wrong:
engine.recommend measures, on the validation split only, which of the benchmark's methods' top n
helps when removed (n the same noise count as every other row), and its ranking is cleaned like
the others; when no method's removal helps, nothing is removed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_auc_score

from engine import tasks
from engine.config import ConfigError, TrainConfig
from engine.data import DataSpec
from engine.executor import current_executor
from engine.experiments.cleanse import method_scores
from engine.experiments.report import (
    accuracy_markers,
    new_experiment_dir,
    save_result,
    write_figure,
    write_table,
)
from engine.fresh import BUDGETS
from engine.loading import LoadedRun, load_run
from engine.progress import Progress
from engine.recommend import RecommendResult, recommend
from engine.runs import RunDir
from engine.stats import summarize
from engine.tasks import changes_of
from engine.train import train

SELF_METHODS = ("hydra", "tracin")
COMBINED = ("loss", "sgd-influence")
DEFAULT_SEEDS = 5


def ranking_row(
    label: str, info: dict[str, dict[str, Any]], rankings: dict[str, np.ndarray], truth: np.ndarray
) -> dict[str, Any]:
    """A benchmark row's start: the method's info (method, query, seconds) and how well its
    ranking finds `truth` (bool (N,)); the oracle finds everything, a row without a ranking ("no
    filtering") gets NaN and recall 0."""
    row = dict(info.get(label, {"method": label, "query": "-", "seconds": 0.0}))
    if label in rankings:
        row.update(detection_metrics(rankings[label], truth))
    else:
        hit = 1.0 if label == "oracle" else float("nan")
        rec = 1.0 if label == "oracle" else 0.0
        row.update(auroc=hit, ap=hit, precision_at_n=hit, recall_at_n=rec)
    return row


def detection_metrics(suspicion: np.ndarray, flipped: np.ndarray) -> dict[str, float]:
    """AUROC, average precision, precision and recall at n = number flipped. suspicion: (N,), higher = flag."""
    n = int(flipped.sum())
    top = np.argsort(-suspicion, kind="stable")[:n]
    hits = int(flipped[top].sum())
    both = 0 < n < len(flipped)
    return {
        "auroc": float(roc_auc_score(flipped, suspicion)) if both else float("nan"),
        "ap": float(average_precision_score(flipped, suspicion)) if both else float("nan"),
        "precision_at_n": hits / n if n else float("nan"),
        "recall_at_n": hits / n if n else float("nan"),
    }


def ensure_run(
    run_dir: Path, data: DataSpec, cfg: TrainConfig, *, overwrite: bool
) -> tuple[LoadedRun, bool]:
    """Reuse run_dir if it was trained with exactly this data and config; else train it."""
    if (run_dir / "config.json").exists() and not overwrite:
        conf = RunDir.open(run_dir).config
        if conf.get("data") == _jsonish(data.to_dict()) and conf.get("train") == _jsonish(
            cfg.to_dict()
        ):
            try:
                return load_run(run_dir), True
            except Exception:  # noqa: BLE001 - an unfinished run: train it again
                pass
        raise ConfigError(f"{run_dir} holds another run; pass --overwrite or another --run-dir")
    train(run_dir, data, cfg, overwrite=True)
    return load_run(run_dir), False


def _jsonish(d: dict[str, Any]) -> Any:
    import json

    return json.loads(json.dumps(d))


def noise_bench(
    *,
    data: DataSpec,
    cfg: TrainConfig,
    run_dir: str | Path,
    methods: Sequence[str] | None = None,
    seeds: int = DEFAULT_SEEDS,
    budget: str = "steps",
    overwrite: bool = False,
    recommend: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the benchmark on a (re)used run at `run_dir`; returns the result (saved with table and figure).

    seeds: fresh retrains per row; budget: "steps" (the run's SGD step count) or "epochs".
    recommend: options of the recommended row's engine.recommend.recommend (mode, objective).
    """
    if data.noise <= 0:
        raise ConfigError("noise must be > 0 for a noise benchmark (e.g. 0.2)", param="noise")
    if seeds < 1:
        raise ConfigError("seeds must be at least 1", param="seeds")
    if budget not in BUDGETS:
        raise ConfigError(f"budget must be steps or epochs, got {budget!r}", param="budget")
    t0 = time.perf_counter()
    loaded, reused = ensure_run(Path(run_dir), data, cfg, overwrite=overwrite)
    train_s = time.perf_counter() - t0
    from engine.influence.methods import get_method, method_names

    names = list(methods) if methods else [m for m in method_names() if m != "random"] + ["random"]
    flipped = (
        loaded.bundle.manifest.set_index("sample_id")
        .loc[loaded.bundle.train.ids, "flipped"]
        .to_numpy(bool)
    )
    n_noise = int(flipped.sum())
    rankings: dict[str, np.ndarray] = {}
    info: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for name in names:
        variants = [("val", name)] + ([("self", f"{name} (self)")] if name in SELF_METHODS else [])
        for query, label in variants:
            t1 = time.perf_counter()
            try:
                if name == "random":
                    susp = np.random.default_rng([data.seed, 271828]).random(len(flipped))
                else:
                    sc = method_scores(loaded, name, query=query)
                    susp = sc if query == "self" else -sc
            except (ConfigError, NotImplementedError) as e:
                skipped[label] = str(e)
                continue
            rankings[label] = susp
            info[label] = {
                "method": label,
                "query": query if name != "random" and get_method(name).uses_query else "-",
                "seconds": time.perf_counter() - t1,
            }
    if all(c in rankings for c in COMBINED):
        label = f"rank-mean({', '.join(COMBINED)})"
        rankings[label] = np.mean([rankdata(rankings[c]) for c in COMBINED], axis=0)
        info[label] = {
            "method": label,
            "query": "val",
            "seconds": sum(info[c]["seconds"] for c in COMBINED),
        }
    rec = _recommended(loaded, rankings, n_noise, **(recommend or {}))
    if rec is not None:
        label = "recommended"
        rankings[label] = rankings[rec["method"]] if rec["method"] else np.zeros(len(flipped))
        info[label] = {"method": f"recommended ({rec['method'] or 'nothing'})", "query": "val",
                       "seconds": float(rec["seconds"])}  # fmt: skip
    fresh = [cfg.seed + 1 + i for i in range(seeds)]
    rows_to_train: list[tuple[str, np.ndarray | None]] = [
        ("no filtering", None),
        ("oracle", np.flatnonzero(flipped)),
    ]
    rows_to_train += [
        (k, None if k == "recommended" and rec and not rec["method"] else
         np.argsort(-v, kind="stable")[:n_noise])
        for k, v in rankings.items()
    ]  # fmt: skip
    changes = [None if drop is None else changes_of(drop) for _, drop in rows_to_train]
    jobs = [tasks.retrain("fresh", ch, seed=s, budget=budget) for ch in changes for s in fresh]
    got = current_executor().map(loaded.run.path, jobs, progress=progress)
    rows = []
    for r, (label, drop) in enumerate(rows_to_train):
        accs = [ev["test_acc"] for ev in got[r * len(fresh) : (r + 1) * len(fresh)]]
        acc = summarize(accs)
        row = ranking_row(label, info, rankings, flipped)
        row.update(
            removed=0 if drop is None else len(drop),
            test_acc=acc["mean"],
            test_acc_std=acc["std"],
            test_accs=accs,
        )
        rows.append(row)
    _paired_vs_none(rows)
    table = pd.DataFrame(rows).drop(columns="test_accs")
    folder = new_experiment_dir(loaded.run.path, "noise-bench")
    write_table(folder, "noise_bench", table)
    res: dict[str, Any] = {
        "kind": "noise-bench",
        "run_dir": str(loaded.run.path),
        "run_reused": reused,
        "data": data.to_dict(),
        "train": cfg.to_dict(),
        "n_train": len(flipped),
        "n_flipped": n_noise,
        "fresh_seeds": fresh,
        "budget": budget,
        "skipped": skipped,
        "recommend": {"options": dict(recommend or {}), "method": rec["method"] if rec else None},
        "rows": rows,
        "train_seconds": train_s,
    }
    res["figure"] = write_figure(
        folder,
        "noise_bench",
        bench_figure(
            table, title=f"{data.dataset} {cfg.model}, {data.noise:.0%} {data.noise_kind} noise"
        ),
    )
    res["seconds"] = time.perf_counter() - t0
    save_result(folder, res)
    return res


def _recommended(
    loaded: LoadedRun, rankings: dict[str, np.ndarray], n_noise: int, **options: Any
) -> RecommendResult | None:
    """engine.recommend over the benchmark's ranked validation-query methods at k = n_noise (None
    when fewer than two of them ran, or n_noise is 0)."""
    names = [m for m in rankings if "(" not in m and m != "random"]
    if len(names) < 2 or n_noise < 1:
        return None
    return recommend(loaded.run.path, methods=names, k=n_noise, save=False, **options)


def _paired_vs_none(rows: list[dict[str, Any]]) -> None:
    """Add gain_vs_none / gain_vs_none_std: per-seed test accuracy minus no filtering's, same seeds."""
    base = np.array(rows[0]["test_accs"])  # rows[0] is "no filtering"
    for r in rows:
        d = np.array(r["test_accs"]) - base
        r["gain_vs_none"] = float(d.mean())
        r["gain_vs_none_std"] = float(d.std(ddof=1)) if len(d) > 1 else 0.0


def format_table(rows: list[dict[str, Any]]) -> str:
    """The benchmark as a fixed-width text table (also valid Markdown); accuracy as mean ± std."""
    head = (
        "| method | query | AUROC | AP | prec@n | rec@n | test acc (cleaned, fresh) "
        "| gain vs no filtering (paired) | seconds |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    f = lambda x: "-" if x != x else f"{x:.3f}"  # noqa: E731 - NaN -> '-'
    for r in rows:
        gain = (
            f"{r['gain_vs_none']:+.4f} ± {r['gain_vs_none_std']:.4f}"
            if "gain_vs_none" in r
            else "-"
        )
        lines.append(
            f"| {r['method']} | {r['query']} | {f(r['auroc'])} | {f(r['ap'])} | {f(r['precision_at_n'])} | "
            f"{f(r['recall_at_n'])} | {r['test_acc']:.4f} ± {r['test_acc_std']:.4f} | {gain} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def bench_figure(table: pd.DataFrame, *, title: str = "") -> Any:
    """AUROC (bars) and cleaned test accuracy (markers, right axis) per method."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(go.Bar(x=table["method"], y=table["auroc"], name="AUROC (flipped labels)"))
    fig.add_trace(accuracy_markers(table, "test accuracy after cleaning"))
    fig.update_layout(
        title=title,
        yaxis={"title": "AUROC", "range": [0, 1]},
        yaxis2={"title": "test accuracy", "overlaying": "y", "side": "right"},
        template="plotly_white",
    )
    return fig
