"""Cleansing experiment end to end on a tiny digits run, and the retrain CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.cli import main
from engine.config import TrainConfig
from engine.data import DataSpec
from engine.experiments.cleanse import cleanse, harmful_first
from engine.loading import load_run
from engine.retrain import list_experiments
from engine.stats import holm
from engine.train import train


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cleanse") / "run"
    train(
        d,
        DataSpec(dataset="digits", n_train=120, n_val=40, n_test=50, seed=0),
        TrainConfig(model="mlp", widths=[12], epochs=2, batch_size=16, lr=0.05, seed=0),
    )
    return d


def test_harmful_first_orders_most_negative_first() -> None:
    assert harmful_first(np.array([0.5, -2.0, 0.0, -2.0, -0.1])).tolist() == [1, 3, 4, 2, 0]


@pytest.mark.slow
def test_cleanse_all_with_two_base_seeds(small_run: Path) -> None:
    res = cleanse(
        small_run,
        methods=["hydra", "no-such-method", "random"],
        remove=[1, 5, 500],
        seeds=2,
        random_draws=2,
    )
    assert (
        "no-such-method" in res["skipped"]
        and res["remove"] == [1, 5]
        and res["remove_skipped"] == [500]
    )
    assert (
        res["base_seeds"] == [0, 1]
        and Path(small_run, "experiments", res["id"], "base-seed1", "config.json").is_file()
    )
    rows = pd.DataFrame(res["rows"])
    assert set(rows["method"]) == {"hydra", "random"}
    # one exact retrain per (base seed, m) for hydra; random_draws per (base seed, m) for random
    assert (
        len(rows[rows["method"] == "hydra"]) == 2 * 2
        and len(rows[rows["method"] == "random"]) == 2 * 2 * 2
    )
    assert np.allclose(rows["test_error"], 1 - rows["test_acc"])
    summ = pd.DataFrame(res["summary"])
    h = summ[(summ["method"] == "hydra") & (summ["m"] == 5)].iloc[0]
    assert h["n"] == 2 and h["test_vs_random"] == "welch"
    assert res["before"]["n"] == 2
    folder = Path(res["path"])
    for f in ("result.json", "summary.csv", "retrains.csv", "cleanse.html"):
        assert (folder / f).is_file(), f
    assert list_experiments(small_run, kind="cleanse")[0]["id"] == res["id"]
    # the hydra clause says what the summary's Holm-adjusted p-values say (not only its name)
    hy = summ[summ["method"] == "hydra"]
    paired = hy["paired_p_vs_random"].notna()
    d = hy["paired_diff_vs_random"].where(paired, hy["diff_vs_random"])
    p = hy["paired_p_vs_random"].where(paired, hy["p_vs_random"])
    adj = holm([None if pd.isna(x) else float(x) for x in p])
    won = any(di < 0 and pi is not None and pi < 0.05 for di, pi in zip(d, adj, strict=True))
    (clause,) = [c for c in res["conclusion"].rstrip(".").split("; ") if c.startswith("hydra:")]
    assert ("never significantly better" in clause) is (not won), clause


def test_cleanse_fresh_one_seed(small_run: Path) -> None:
    res = cleanse(small_run, methods=["random"], remove=[3], mode="fresh", seeds=1)
    assert res["fresh_seeds"] == [1] and len(res["rows"]) == 1 and res["skipped"] == {}


def test_retrain_cli_prints_verdict_and_json(
    small_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = load_run(small_run).bundle.train.ids
    drop = tmp_path / "drop.csv"
    drop.write_text("sample_id,score\n" + "\n".join(f"{i},-1" for i in ids[:4]) + "\n")
    relabel = tmp_path / "relabel.csv"
    relabel.write_text(f"sample_id,label\n{ids[10]},3\n")
    assert (
        main(
            [
                "retrain",
                "--run-dir",
                str(small_run),
                "--drop",
                str(drop),
                "--relabel",
                str(relabel),
                "--mode",
                "last",
                "--control-draws",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "before" in out
        and "after" in out
        and "control" in out
        and "Removing 4 images and relabelling 1 image" in out
    )
    plain = tmp_path / "ids.txt"
    plain.write_text(ids[0] + "\n")
    assert (
        main(
            [
                "retrain",
                "--run-dir",
                str(small_run),
                "--drop",
                str(plain),
                "--control",
                "none",
                "--json",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["drop"] == [ids[0]] and res["control_runs"] is None
    plain.write_text("digits-9999x\n")
    assert main(["retrain", "--run-dir", str(small_run), "--drop", str(plain)]) == 2
    assert "digits-9999x" in capsys.readouterr().err


def test_summary_pairs_each_method_with_random_on_the_same_base_run() -> None:
    """The paired difference removes the base runs' own spread; Welch's does not."""
    from scipy.stats import ttest_1samp

    from engine.experiments.cleanse import summarize_removals

    base = np.array([0.30, 0.40, 0.50, 0.35])  # very different base runs
    gain = np.array([0.020, 0.025, 0.030, 0.022])  # the method always beats random a little
    rows = []
    for s, b in enumerate(base):
        rows += [
            {"seed": s, "method": "random", "draw": i, "m": 5, "test_error": b + e}
            for i, e in enumerate((-0.002, 0.002))
        ]
        rows.append({"seed": s, "method": "hydra", "draw": 0, "m": 5, "test_error": b - gain[s]})
    summ = summarize_removals(
        pd.DataFrame(rows), [{"seed": s, "test_error": b} for s, b in enumerate(base)]
    )
    h = summ[summ["method"] == "hydra"].iloc[0]
    assert h["paired_diff_vs_random"] == pytest.approx(-gain.mean())
    assert h["paired_p_vs_random"] == pytest.approx(ttest_1samp(-gain, 0.0).pvalue)
    assert h["paired_p_vs_random"] < 0.01 < h["p_vs_random"]


def test_a_win_at_one_of_several_m_is_holm_corrected() -> None:
    """Five m values with p just under 0.05 at one of them: no win once the family is adjusted."""
    from engine.experiments.cleanse import conclusion

    rows = [
        {"method": "hydra", "m": m, "diff_vs_random": -0.01, "p_vs_random": p,
         "paired_diff_vs_random": np.nan, "paired_p_vs_random": np.nan}
        for m, p in zip((5, 10, 20, 40, 80), (0.04, 0.3, 0.5, 0.6, 0.7), strict=True)
    ]  # fmt: skip
    rows.append({**rows[0], "method": "random", "p_vs_random": np.nan})
    assert "hydra: never significantly better" in conclusion(pd.DataFrame(rows))
    rows[0]["p_vs_random"] = 0.001  # 5 * 0.001 < 0.05 survives
    assert "hydra: lower test error than random removal at m = 5" in conclusion(pd.DataFrame(rows))
