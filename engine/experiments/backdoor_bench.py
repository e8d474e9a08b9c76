"""Backdoor benchmark (the ITLM slides' poisoned-data table): find the poisoned images, remove them, retrain.

Trains (or reuses) a run whose data spec plants a backdoor (``DataSpec.backdoor = "a:b"``, see
engine.data.backdoor), then for every method ranks the training set by suspicion:

- query methods (sgd-influence, hydra, tracin, influence-function, ...) with the ``attack`` query
  (the mean loss of the watermarked test-2 images with their true labels: "what makes the model
  obey the trigger"); suspicion = -score (negative = harmful);
- query-free methods (itlm, loss, confident-learning, random): suspicion = -score.

For each ranking: AUROC / AP of finding the poisoned ids, and precision = recall at n (the top n
flagged, n = the number of poisoned images); then the top n are removed and the model retrained
fresh (S new seeds, the same seeds for every row, and the same number of SGD steps as the run: the
epoch loop continues until the run's step count, so removing images does not shorten training).
Each retrain reports clean test accuracy (test-1) and attack success (the fraction of test-2
predicted as b). Rows "no filtering" (nothing removed) and "oracle" (exactly the poisoned ids)
bracket the methods.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine import tasks
from engine.config import ConfigError, TrainConfig
from engine.data import DataSpec
from engine.executor import current_executor
from engine.experiments.cleanse import method_scores
from engine.experiments.noise_bench import ensure_run, ranking_row
from engine.experiments.report import (
    accuracy_markers,
    new_experiment_dir,
    save_result,
    write_figure,
    write_table,
)
from engine.loading import LoadedRun
from engine.progress import Progress
from engine.retrain import evaluate_theta
from engine.stats import summarize
from engine.tasks import changes_of

QUERY_FREE = ("itlm", "loss", "confident-learning")


def default_methods() -> list[str]:
    """ITLM, every influence method (the ones that take a query), loss, confident learning, random."""
    from engine.influence.methods import get_method, method_names

    names = method_names()
    influence = [m for m in names if get_method(m).uses_query]
    return (
        [m for m in ("itlm",) if m in names]
        + influence
        + [m for m in ("attack-votes",) if m in names]
        + [m for m in QUERY_FREE[1:] if m in names]
        + ["random"]
    )


def _suspicion(loaded: LoadedRun, name: str, seed: int) -> tuple[np.ndarray, str]:
    """(suspicion (N,), higher = flag first; the query used) for one method."""
    n = len(loaded.bundle.train)
    if name == "random":
        return np.random.default_rng([seed, 271828]).random(n), "-"
    from engine.influence.methods import get_method

    if name == "attack-votes":  # its own query: the successful attacks (engine.influence.votes)
        return -method_scores(loaded, name), "attacks sent to b"
    query = "attack" if get_method(name).uses_query else "val"
    return -method_scores(loaded, name, query=query), (query if query == "attack" else "-")


def backdoor_bench(
    *,
    data: DataSpec,
    cfg: TrainConfig,
    run_dir: str | Path,
    methods: Sequence[str] | None = None,
    seeds: int = 1,
    overwrite: bool = False,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark on a (re)used run at `run_dir`; returns the result (saved with table and figure).

    Result rows (one per method plus "no filtering" and "oracle"): method, query, seconds, auroc,
    ap, precision_at_n, recall_at_n, removed, poisoned_removed, test_acc (+_std), attack_success
    (+_std). Also "naive": the run's own final test accuracy and attack success, and "best".
    """
    if not data.backdoor:
        raise ConfigError(
            "backdoor a:b is needed for a backdoor benchmark (e.g. 1:7)", param="backdoor"
        )
    if seeds < 1:
        raise ConfigError("seeds must be at least 1", param="seeds")
    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    loaded, reused = ensure_run(Path(run_dir), data, cfg, overwrite=overwrite)
    train_s = time.perf_counter() - t0
    b = loaded.bundle
    poisoned_ids = set(b.poisoned_ids())
    poisoned = np.array([i in poisoned_ids for i in b.train.ids], dtype=bool)
    n_p = int(poisoned.sum())
    naive = evaluate_theta(loaded, loaded.final_theta)
    say(
        f"trained: {len(b.train)} training images, {n_p} poisoned; clean test accuracy "
        f"{naive['test_acc']:.4f}, attack success {naive['attack_success']:.4f}"
    )
    names = list(methods) if methods else default_methods()
    rankings: dict[str, np.ndarray] = {}
    info: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for name in names:
        t1 = time.perf_counter()
        try:
            susp, query = _suspicion(loaded, name, data.seed)
        except (ConfigError, NotImplementedError) as e:
            skipped[name] = str(e)
            say(f"{name}: skipped ({e})")
            continue
        rankings[name] = susp
        info[name] = {"method": name, "query": query, "seconds": time.perf_counter() - t1}
        say(f"{name}: ranked in {info[name]['seconds']:.1f}s")
    fresh = [cfg.seed + 1 + i for i in range(seeds)]
    to_train: list[tuple[str, np.ndarray | None]] = [
        ("no filtering", None),
        ("oracle", np.flatnonzero(poisoned)),
    ]
    to_train += [(k, np.argsort(-v, kind="stable")[:n_p]) for k, v in rankings.items()]
    jobs = [  # the run's own number of SGD steps (engine.fresh budget "steps")
        tasks.retrain("fresh", None if drop is None else changes_of(drop), seed=s)
        for _, drop in to_train
        for s in fresh
    ]
    got = current_executor().map(loaded.run.path, jobs, progress=progress)
    rows = []
    n = len(b.train)
    for r, (label, drop) in enumerate(to_train):
        evals = got[r * len(fresh) : (r + 1) * len(fresh)]
        acc = summarize([e["test_acc"] for e in evals])
        atk = summarize([e["attack_success"] for e in evals])
        row = ranking_row(label, info, rankings, poisoned)
        row.update(
            removed=0 if drop is None else len(drop),
            poisoned_removed=0 if drop is None else int(poisoned[drop].sum()),
            test_acc=acc["mean"],
            test_acc_std=acc["std"],
            attack_success=atk["mean"],
            attack_success_std=atk["std"],
        )
        rows.append(row)
        say(
            f"{label}: removed {row['removed']} ({row['poisoned_removed']} poisoned), clean acc "
            f"{row['test_acc']:.4f}, attack success {row['attack_success']:.4f}"
        )
    table = pd.DataFrame(rows)
    folder = new_experiment_dir(loaded.run.path, "backdoor-bench")
    write_table(folder, "backdoor_bench", table)
    methods_rows = [r for r in rows if r["method"] in rankings]
    best = (
        min(methods_rows, key=lambda r: (r["attack_success"], -r["test_acc"]))["method"]
        if methods_rows
        else None
    )
    res: dict[str, Any] = {
        "kind": "backdoor-bench",
        "run_dir": str(loaded.run.path),
        "run_reused": reused,
        "data": data.to_dict(),
        "train": cfg.to_dict(),
        "n_train": n,
        "n_poisoned": n_p,
        "n_attack": len(b.attack) if b.attack is not None else 0,
        "target_class": b.class_names[int(b.attack_target or 0)],
        "n_steps": loaded.traj.n_steps,
        "fresh_seeds": fresh,
        "naive": {k: naive[k] for k in ("test_acc", "attack_success", "attack_acc", "val_acc")},
        "naive_by_class": attack_success_by_class(loaded.run.path).to_dict(orient="records"),
        "best": best,
        "skipped": skipped,
        "rows": rows,
        "train_seconds": train_s,
    }
    title = (
        f"{data.dataset} {cfg.model}, backdoor {data.backdoor} trigger {data.trigger}, "
        f"{n_p} poisoned"
    )
    res["figure"] = write_figure(folder, "backdoor_bench", bench_figure(table, title=title))
    res["seconds"] = time.perf_counter() - t0
    save_result(folder, res)
    return res


def format_table(res: dict[str, Any]) -> str:
    """The benchmark as a Markdown table, with the naive model's line first."""
    f = lambda x: "-" if x != x else f"{x:.3f}"  # noqa: E731 - NaN -> '-'
    nv = res["naive"]
    lines = [
        f"naive model (the run): clean test accuracy {nv['test_acc']:.4f}, "
        f"attack success {nv['attack_success']:.4f}; {res['n_poisoned']} poisoned of {res['n_train']}",
    ]
    by_class = res.get("naive_by_class") or []
    if by_class:
        lines.append(
            "naive attack success by true class: "
            + ", ".join(f"{r['class']} {r['attack_success']:.2f}" for r in by_class)
        )
    lines += [
        "",
        "| method | query | AUROC | AP | prec@n = rec@n | removed (poisoned) | clean test acc | attack success | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['method']} | {r['query']} | {f(r['auroc'])} | {f(r['ap'])} | {f(r['precision_at_n'])} | "
            f"{r['removed']} ({r['poisoned_removed']}) | {r['test_acc']:.4f} ± {r['test_acc_std']:.4f} | "
            f"{r['attack_success']:.4f} ± {r['attack_success_std']:.4f} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def bench_figure(table: pd.DataFrame, *, title: str = "") -> Any:
    """Attack success after cleansing (bars) and clean test accuracy (markers, right axis) per row."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=table["method"],
            y=table["attack_success"],
            error_y={"type": "data", "array": table["attack_success_std"]},
            name="attack success after cleansing (test-2 sent to b)",
        )
    )
    fig.add_trace(
        go.Bar(x=table["method"], y=table["precision_at_n"], name="precision at n (poisoned found)")
    )
    fig.add_trace(accuracy_markers(table, "clean test accuracy after cleansing"))
    fig.update_layout(
        title=title,
        barmode="group",
        yaxis={"title": "attack success / precision", "range": [0, 1]},
        yaxis2={"title": "clean test accuracy", "overlaying": "y", "side": "right"},
        template="plotly_white",
    )
    return fig


def attack_success_by_class(run_dir: str | Path) -> pd.DataFrame:
    """Attack success of a backdoored run per true class of the watermarked test images.

    Columns: class (name), n (test-2 images of that class), attack_success (share predicted as
    the target class); sorted by attack success, highest first; empty without test-2. Shows
    whether the model learned the trigger for every class or mostly for the poisoned source.
    """
    from engine.data import DataBundle

    pred = attack_predictions(run_dir)
    cols = ["class", "n", "attack_success"]
    b = DataBundle.load(Path(run_dir))
    if pred.empty or b.attack_target is None:
        return pd.DataFrame(columns=cols)
    hit = pred["predicted"] == int(b.attack_target)
    g = hit.groupby(pred["label"]).agg(["size", "mean"])
    out = pd.DataFrame(
        {
            "class": [b.class_names[int(c)] for c in g.index],
            "n": g["size"].to_numpy(),
            "attack_success": g["mean"].to_numpy(),
        }
    )
    return out.sort_values("attack_success", ascending=False, kind="stable").reset_index(drop=True)


def attack_predictions(run_dir: str | Path) -> pd.DataFrame:
    """Predictions of a backdoored run's final weights on its watermarked test images (test-2).

    Columns: sample_id ("<test id>+wm"), label (true class), predicted, confidence (probability
    of the predicted class), prob_given (probability of the true class); empty without test-2.
    """
    from engine.loading import load_run
    from engine.models import probabilities
    from engine.problem import split_logits

    lr = load_run(run_dir)
    sp = lr.bundle.attack
    cols = ["sample_id", "label", "predicted", "confidence", "prob_given"]
    if sp is None:
        return pd.DataFrame(columns=cols)
    probs = probabilities(split_logits(lr.problem, lr.final_theta, sp)).detach().cpu().double()
    y = sp.labels.long()
    return pd.DataFrame(
        {
            "sample_id": sp.ids,
            "label": y.numpy(),
            "predicted": probs.argmax(dim=1).numpy(),
            "confidence": probs.max(dim=1).values.numpy(),
            "prob_given": probs.gather(1, y[:, None]).squeeze(1).numpy(),
        }
    )[cols]
