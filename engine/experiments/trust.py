"""How far can you trust these scores on this model? Compare them with true leave-one-out retrains.

Picks k training samples: the k/3 most harmful (most negative scores), the k/3 most helpful (most
positive) and the rest at random from the others; retrains ``all`` (exact counterfactual: same
initial weights, batches and seeds) without each one; and compares the true change of the mean
validation loss, L_val(theta^{-i}) - L_val(theta_T), with the method's score for i (the score is
the method's estimate of exactly that change). Reports Kendall's tau, Spearman's rho, Pearson's r,
sign agreement and a scatter plot.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from engine import tasks
from engine.config import ConfigError
from engine.counterfactual import evaluate_theta
from engine.executor import current_executor
from engine.experiments.cleanse import harmful_first, method_scores
from engine.experiments.loo import loo_changes
from engine.experiments.report import new_experiment_dir, save_result, write_figure, write_table
from engine.influence.queries import Query
from engine.loading import LoadedRun, load_run
from engine.progress import Progress
from engine.tasks import changes_of


def pick_samples(scores: np.ndarray, k: int, *, seed: int = 0) -> list[tuple[int, str]]:
    """(index, group) for k samples: k//3 'harmful', k//3 'helpful', the rest 'random' from the others."""
    n = len(scores)
    k = min(k, n)
    third = k // 3
    order = harmful_first(scores)
    harmful = [int(i) for i in order[:third]]
    helpful = [int(i) for i in order[::-1][:third] if int(i) not in harmful]
    taken = set(harmful) | set(helpful)
    rest = np.array([i for i in range(n) if i not in taken])
    rng = np.random.default_rng([seed, 31337])
    rand = [int(i) for i in rng.choice(rest, size=min(k - len(taken), len(rest)), replace=False)]
    return (
        [(i, "harmful") for i in harmful]
        + [(i, "helpful") for i in helpful]
        + [(i, "random") for i in rand]
    )


def trust_level(tau: float, sign: float) -> str:
    if not math.isfinite(tau):
        return "cannot tell"
    if tau >= 0.6 and sign >= 0.8:
        return "high: the ranking and the direction can be trusted"
    if tau >= 0.3:
        return "medium: the ranking is informative, single scores are rough"
    return "low: the scores barely track the true effect on this model"


def trust(
    run_dir: str | Path | LoadedRun,
    *,
    method: str,
    k: int = 30,
    seed: int = 0,
    precision: str = "run",
    progress: Progress | None = None,
    save: bool = True,
) -> dict[str, Any]:
    """Compare `method`'s validation-loss scores with k exact leave-one-out retrains (mode all).

    precision: "run" retrains in the run's own dtype (what `retracer retrain` would give you);
    "float64" recomputes both the reference and the leave-one-out runs in float64 (via
    engine.experiments.loo), so float32 rounding cannot blur the tiny single-sample effects.
    """
    if precision not in ("run", "float64"):
        raise ConfigError(f"precision must be run or float64, got {precision!r}")
    if k < 3:
        raise ConfigError(
            f"k must be at least 3 (a third harmful, helpful, random), got {k}", param="k"
        )
    t0 = time.perf_counter()
    loaded = run_dir if isinstance(run_dir, LoadedRun) else load_run(run_dir)
    scores = method_scores(loaded, method, query="val")
    picks = pick_samples(scores, k, seed=seed)
    ids = loaded.bundle.train.ids
    base = evaluate_theta(loaded, loaded.final_theta)["val_loss"]
    if precision == "float64":  # reference and leave-one-out runs both replayed in float64
        actual = loo_changes(loaded, Query("val"), samples=[i for i, _ in picks],
                             progress=progress)[:, 0].tolist()  # fmt: skip
    else:
        jobs = [tasks.retrain("all", changes_of([i])) for i, _ in picks]
        got = current_executor().map(loaded.run.path, jobs, progress=progress)
        actual = [after["val_loss"] - base for after in got]
    rows = [
        {"sample_id": ids[i], "group": group, "predicted": float(scores[i]), "actual": a}
        for (i, group), a in zip(picks, actual, strict=True)
    ]
    df = pd.DataFrame(rows)
    pred, act = df["predicted"].to_numpy(), df["actual"].to_numpy()
    tau = sps.kendalltau(pred, act)
    rho = sps.spearmanr(pred, act)
    pear = sps.pearsonr(pred, act) if np.std(pred) > 0 and np.std(act) > 0 else None
    nz = act != 0
    sign = float(np.mean(np.sign(pred[nz]) == np.sign(act[nz]))) if nz.any() else math.nan
    harm = df[df["group"] == "harmful"]
    res: dict[str, Any] = {
        "kind": "trust",
        "run_dir": str(loaded.run.path),
        "method": method,
        "precision": precision,
        "k": len(df),
        "base_val_loss": base,
        "kendall_tau": float(tau.statistic),
        "kendall_p": float(tau.pvalue),
        "spearman": float(rho.statistic),
        "pearson": float(pear.statistic) if pear is not None else math.nan,
        "sign_agreement": sign,
        "harmful_confirmed": int((harm["actual"] < 0).sum()),
        "n_harmful": len(harm),
        "samples": rows,
    }
    res["trust"] = trust_level(res["kendall_tau"], sign)
    res["verdict"] = (
        f"On this model, {method}'s scores rank the true effect of removing one image with Kendall's tau = "
        f"{res['kendall_tau']:.2f} and get its direction right for {int(round(sign * nz.sum())) if nz.any() else 0} "
        f"of {int(nz.sum())} images; {res['harmful_confirmed']} of the {len(harm)} flagged most harmful really "
        f"lowered the validation loss when removed. Trust: {res['trust']}."
    )
    res["seconds"] = time.perf_counter() - t0
    if save:
        folder = new_experiment_dir(loaded.run.path, "trust")
        write_table(folder, "trust", df)
        res["figure"] = write_figure(
            folder, "trust", trust_figure(df, method=method, tau=res["kendall_tau"])
        )
        save_result(folder, res)
    return res


def trust_figure(df: pd.DataFrame, *, method: str, tau: float) -> Any:
    """Scatter of the true change of the validation loss against the method's score, y = x dashed."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for group, g in df.groupby("group", sort=False):
        fig.add_trace(
            go.Scatter(
                x=g["predicted"],
                y=g["actual"],
                mode="markers",
                name=str(group),
                text=g["sample_id"],
                hovertemplate="%{text}<br>score %{x:.3g}<br>true change %{y:.3g}<extra></extra>",
            )
        )
    lo = float(min(df["predicted"].min(), df["actual"].min()))
    hi = float(max(df["predicted"].max(), df["actual"].max()))
    fig.add_trace(
        go.Scatter(
            x=[lo, hi],
            y=[lo, hi],
            mode="lines",
            name="score = true change",
            line={"dash": "dash", "color": "gray"},
        )
    )
    fig.update_layout(
        title=f"{method}: estimated vs true change of the validation loss (Kendall's tau {tau:.2f})",
        xaxis={"title": f"{method} score (estimated change if removed)"},
        yaxis={"title": "true change after retraining without it"},
        template="plotly_white",
    )
    return fig
