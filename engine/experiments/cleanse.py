"""Data cleansing by influence (Hara et al. 2019, Sec. 7.2, Fig. 2): remove the top-m harmful, retrain.

For each method the m training samples with the most negative scores (estimated to raise the
validation loss the most: the most harmful) are removed and the model retrained; the test
misclassification rate is plotted against m, one line per method, with the before-removal line.

Seeds: in modes ``all`` and ``last`` each retrain is an exact counterfactual of one base run, so
seeds are separate base runs: seed 0 is the given run, seed s > 0 is the same data and config
trained with seed (run seed + s) into the experiment folder; every method's scores are computed on
each base run and every retrain replays that base run's trajectory (Hara's protocol). In mode
``fresh`` the scores come from the given run and each (method, m) is retrained with S fresh seeds,
each retrain keeping the run's number of SGD steps (budget "steps", engine.retrain) unless
budget="epochs".

``random`` is always computed here (not from the registry): ``random_draws`` independent random
removals per base run (mode fresh: one per fresh seed), the control every method is tested
against with Welch's t-test at each m.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine import tasks
from engine.config import ConfigError
from engine.counterfactual import evaluate_theta
from engine.executor import Task, current_executor
from engine.experiments.report import new_experiment_dir, save_result, write_figure, write_table
from engine.fresh import BUDGETS
from engine.loading import LoadedRun, load_run
from engine.progress import Progress
from engine.stats import compare, fmt_p, holm, summarize
from engine.tasks import changes_of
from engine.train import train

DEFAULT_METHODS = (
    "sgd-influence",
    "sgd-influence-last",
    "hydra",
    "influence-function",
    "loss",
    "random",
)
DEFAULT_REMOVE = (1, 3, 10, 30, 100, 300)


def method_scores(
    loaded: LoadedRun, method: str, *, query: str = "val", progress: Progress | None = None
) -> np.ndarray:
    """Scores (N_train,) of `method` for `query`, in training-split order; negative = harmful.

    The method's default options: stored scores made with them are reused, else computed and
    stored; when the run holds scores made with other options, these are computed and not
    stored (engine.influence.scorestore.ScoreStore.get_or_compute). Raises ConfigError for an
    unknown method or an unsupported query.
    """
    from engine.influence.scorestore import ScoreStore

    df = ScoreStore(loaded.run.path).get_or_compute(method, query, options={}, progress=progress)
    col = "score" if "score" in df.columns else [c for c in df.columns if c != "sample_id"][0]
    s = df.set_index("sample_id")[col].reindex(loaded.bundle.train.ids)
    if s.isna().any():
        raise ConfigError(f"{method} returned no score for {int(s.isna().sum())} training samples")
    return s.to_numpy(np.float64)


def harmful_first(scores: np.ndarray) -> np.ndarray:
    """Training indices ordered most harmful (most negative score) first; ties by index."""
    return np.argsort(scores, kind="stable")


def _base_runs(loaded: LoadedRun, folder: Path, seeds: int, mode: str) -> list[LoadedRun]:
    if mode == "fresh":
        return [loaded]
    bases = [loaded]
    for s in range(1, seeds):
        d = folder / f"base-seed{loaded.cfg.seed + s}"
        train(d, loaded.data, replace(loaded.cfg, seed=loaded.cfg.seed + s), overwrite=True)
        bases.append(load_run(d))
    return bases


def _removal_tasks(
    drop: np.ndarray, mode: str, fresh_seeds: Sequence[int], budget: str = "steps"
) -> list[Task]:
    """The retrains of one removal: one per fresh seed, or one counterfactual (all / last)."""
    ch = changes_of(drop)
    if mode == "fresh":
        return [tasks.retrain("fresh", ch, seed=s, budget=budget) for s in fresh_seeds]
    return [tasks.retrain(mode, ch)]


def cleanse(
    run_dir: str | Path,
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    remove: Sequence[int] = DEFAULT_REMOVE,
    mode: str = "all",
    seeds: int = 1,
    random_draws: int = 3,
    query: str = "val",
    budget: str = "steps",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the cleansing experiment; returns the result dict (also saved with a CSV and a figure).

    result["rows"]: one row per retrain (seed, method, draw, m, test_error, test_acc, test_loss,
    val_loss, val_acc); result["summary"]: per (method, m) the mean / std / n of the test
    misclassification rate and Welch's p against random; result["skipped"]: methods not run, why.
    """
    if mode not in ("all", "last", "fresh"):
        raise ConfigError(f"mode must be all, last or fresh, got {mode!r}", param="mode")
    if seeds < 1 or random_draws < 1:
        raise ConfigError("seeds and random draws must be at least 1", param="seeds")
    if budget not in BUDGETS:
        raise ConfigError(f"budget must be steps or epochs, got {budget!r}", param="budget")
    t0 = time.perf_counter()
    loaded = load_run(run_dir)
    n = len(loaded.bundle.train)
    ms = sorted({int(m) for m in remove})
    if not ms or ms[0] < 1:
        raise ConfigError(f"remove needs positive counts, got {list(remove)}", param="remove")
    too_big = [m for m in ms if m >= n]
    ms = [m for m in ms if m < n]
    if not ms:
        raise ConfigError(f"every --remove count is >= the {n} training samples")
    folder = new_experiment_dir(loaded.run.path, "cleanse")
    bases = _base_runs(loaded, folder, seeds, mode)
    fresh_seeds = [loaded.cfg.seed + 1 + i for i in range(seeds)] if mode == "fresh" else []
    per_retrain = len(fresh_seeds) or 1
    n_rand = seeds if mode == "fresh" else random_draws
    names = list(dict.fromkeys(methods))
    total = (
        len(bases)
        * len(ms)
        * (sum(m != "random" for m in names) * per_retrain + n_rand * per_retrain)
    ) + len(bases) * len(fresh_seeds)  # fresh: the seeds on all the data, before
    done = [0]
    rows: list[dict[str, Any]] = []
    before_rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}

    def record(seed: int, method: str, draw: int, m: int, evs: list[dict[str, Any]]) -> None:
        for j, ev in enumerate(evs):
            rows.append(
                {
                    "seed": seed,
                    "method": method,
                    "draw": draw if method == "random" else j,
                    "m": m,
                    "test_error": 1 - ev["test_acc"],
                    **{k: ev[k] for k in ("test_acc", "test_loss", "val_acc", "val_loss")},
                }
            )

    def tick(d: int, _total: int, _v: float | None) -> None:
        if progress is not None:
            progress(done[0] + d, total, None)

    for base in bases:
        s = base.cfg.seed
        jobs = (
            [tasks.retrain("fresh", None, seed=fs, budget=budget) for fs in fresh_seeds]
            if mode == "fresh"
            else []
        )
        rankings: dict[str, list[np.ndarray]] = {}
        for name in names:
            if name == "random" or name in skipped:
                continue
            try:
                rankings[name] = [harmful_first(method_scores(base, name, query=query))]
            except (ConfigError, NotImplementedError) as e:
                skipped[name] = str(e)
                total -= len(bases) * len(ms) * per_retrain
        rng = np.random.default_rng([s, 104729])  # the random control is always computed
        rankings["random"] = [rng.permutation(n) for _ in range(n_rand)]
        plan: list[tuple[str, int, int, int]] = []  # (method, draw, m, retrains)
        for name, ranks in rankings.items():
            for m in ms:
                for i, r in enumerate(ranks):
                    # fresh random draw i is trained with fresh seed i only
                    seeds_i = (
                        [fresh_seeds[i]] if name == "random" and mode == "fresh" else fresh_seeds
                    )
                    more = _removal_tasks(r[:m], mode, seeds_i, budget)
                    plan.append((name, i, m, len(more)))
                    jobs += more
        got = current_executor().map(base.run.path, jobs, progress=tick)
        done[0] += len(jobs)
        k = len(fresh_seeds) if mode == "fresh" else 0
        evs = got[:k] if mode == "fresh" else [evaluate_theta(base, base.final_theta)]
        before_rows += [{"seed": s, "test_error": 1 - ev["test_acc"]} for ev in evs]
        for name, i, m, count in plan:
            record(s, name, i, m, got[k : k + count])
            k += count
    table = pd.DataFrame(rows)
    summary = summarize_removals(table, before_rows, pair_key="draw" if mode == "fresh" else "seed")
    res: dict[str, Any] = {
        "kind": "cleanse",
        "run_dir": str(loaded.run.path),
        "mode": mode,
        "seeds": seeds,
        "base_seeds": [b.cfg.seed for b in bases],
        "fresh_seeds": fresh_seeds,
        "budget": budget if mode == "fresh" else None,
        "query": query,
        "methods": [m for m in names if m not in skipped]
        + ([] if "random" in names else ["random"]),
        "remove": ms,
        "remove_skipped": too_big,
        "skipped": skipped,
        "random_draws": n_rand,
        "n_train": n,
        "before": summarize([r["test_error"] for r in before_rows]),
        "summary": summary.to_dict(orient="records"),
        "rows": rows,
        "conclusion": conclusion(summary),
    }
    write_table(folder, "retrains", table)
    write_table(folder, "summary", summary)
    res["figure"] = write_figure(
        folder,
        "cleanse",
        cleanse_figure(
            summary, res["before"], title=f"{loaded.run.path.name}: mode {mode}, {seeds} seed(s)"
        ),
    )
    res["seconds"] = time.perf_counter() - t0
    save_result(folder, res)
    return res


def _paired(g: pd.DataFrame, rand: pd.DataFrame, key: str) -> dict[str, Any]:
    """Per pair key (base seed, or fresh seed in mode fresh): the method's error against random's there.

    The paired test of engine.stats.compare over the keys both sides have (the same base run /
    fresh seed on both sides removes its own variance): {"diff", "p"} (p None for < 2 pairs or
    no spread).
    """
    both = pd.concat(
        [g.groupby(key)["test_error"].mean(), rand.groupby(key)["test_error"].mean()], axis=1
    ).dropna()
    c = compare(both.iloc[:, 0].tolist(), both.iloc[:, 1].tolist(), paired=True)
    return {"diff": c["diff"], "p": c["p"] if c["test"] == "paired" else None}


def summarize_removals(
    table: pd.DataFrame, before_rows: list[dict[str, Any]], *, pair_key: str = "seed"
) -> pd.DataFrame:
    out = []
    before = [r["test_error"] for r in before_rows]
    for (method, m), g in table.groupby(["method", "m"], sort=False):
        vals = g["test_error"].tolist()
        rand_g = table[(table["method"] == "random") & (table["m"] == m)]
        rand = rand_g["test_error"].tolist()
        vs_r = compare(vals, rand) if method != "random" else {"diff": 0.0, "p": None, "test": ""}
        pr = _paired(g, rand_g, pair_key) if method != "random" else {"diff": 0.0, "p": None}
        vs_b = compare(vals, before)
        s = summarize(vals)
        out.append(
            {
                "method": method,
                "m": int(m),
                "test_error_mean": s["mean"],
                "test_error_std": s["std"],
                "n": s["n"],
                "diff_vs_random": vs_r["diff"],
                "p_vs_random": vs_r["p"],
                "test_vs_random": vs_r["test"],
                "paired_diff_vs_random": pr["diff"],
                "paired_p_vs_random": pr["p"],
                "diff_vs_before": vs_b["diff"],
                "p_vs_before": vs_b["p"],
            }
        )
    return pd.DataFrame(out)


def conclusion(summary: pd.DataFrame) -> str:
    """One sentence per method: where removing its top-m lowered test error significantly more than random.

    Uses the paired test (same base run / fresh seed on both sides) where it has a p-value, else
    Welch's; a method's p-values over its m values are one family ("it wins at some m"), so they
    are Holm-adjusted before they are compared with 0.05.
    """
    parts = []
    s = summary.copy()
    paired = s["paired_p_vs_random"].notna() if "paired_p_vs_random" in s else False
    s["d"] = s["diff_vs_random"].where(~paired, s.get("paired_diff_vs_random"))
    s["p"] = s["p_vs_random"].where(~paired, s.get("paired_p_vs_random"))
    for method, g in s[s["method"] != "random"].groupby("method", sort=False):
        raw = [None if pd.isna(p) else float(p) for p in g["p"]]
        g = g.assign(p=[1.0 if p is None else p for p in holm(raw)])
        wins = g[(g["d"] < 0) & (g["p"] < 0.05)]
        if len(wins):
            best = wins.loc[wins["d"].idxmin()]
            parts.append(
                f"{method}: lower test error than random removal at m = {', '.join(map(str, wins['m']))} "
                f"(best m = {best['m']}: {-best['d'] * 100:.2f} points, {fmt_p(best['p'])})"
            )
        else:
            parts.append(f"{method}: never significantly better than random removal")
    return "; ".join(parts) + "." if parts else "No method was run."


def cleanse_figure(summary: pd.DataFrame, before: dict[str, Any], *, title: str = "") -> Any:
    """Test misclassification (%) against the number removed (log x), mean +- std, one line per method."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for method, g in summary.groupby("method", sort=False):
        fig.add_trace(
            go.Scatter(
                x=g["m"],
                y=g["test_error_mean"] * 100,
                error_y={"type": "data", "array": g["test_error_std"] * 100},
                mode="lines+markers",
                name=str(method),
                line={"dash": "dot"} if method == "random" else {},
            )
        )
    xs = [summary["m"].min(), summary["m"].max()]
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=[before["mean"] * 100] * 2,
            mode="lines",
            name="before removal",
            line={"color": "black", "dash": "dash"},
        )
    )
    fig.update_layout(
        title=title or "Test error after removing the top-m harmful training samples",
        xaxis={"title": "number of training samples removed (m)", "type": "log"},
        yaxis={"title": "test misclassification (%)"},
        template="plotly_white",
    )
    return fig
