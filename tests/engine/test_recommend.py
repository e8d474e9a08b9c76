"""The measured recommendation: validation halves, no test data read, stored and refreshed with its scores."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.cli import main
from engine.config import ConfigError, TrainConfig
from engine.data import DataSpec
from engine.influence.api import compute_influence
from engine.influence.queries import val_halves
from engine.loading import LoadedRun
from engine.recommend import (
    choose,
    default_k,
    default_ks,
    latest_recommendation,
    reads_validation,
    recommend,
)
from engine.train import train

METHODS = ("loss", "margin", "hydra", "sgd-influence")


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An mlp on 300 digits with 15% pair-flipped training labels."""
    run = tmp_path_factory.mktemp("rec") / "noisy"
    train(
        run,
        DataSpec(dataset="digits", n_train=300, n_val=80, n_test=60, noise=0.15,
                 noise_kind="pair", seed=0),
        TrainConfig(model="mlp", widths=[16], epochs=3, batch_size=32, lr=0.1, momentum=0.9),
    )  # fmt: skip
    return run


@pytest.fixture
def run(noisy_run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(noisy_run, dst)
    return dst


def test_default_k_follows_the_run_size() -> None:
    assert default_k(997) == 100 and default_k(60) == 10 and default_k(51_000) == 2000
    assert default_k(12) == 6  # never more than half
    assert default_ks(997) == [50, 100, 150, 199] and default_ks(51_000) == [2000]


def test_validation_halves_are_disjoint_and_their_queries_average_to_the_whole(run: Path) -> None:
    a, b = val_halves(80, seed=0)
    assert len(a) == len(b) == 40 and not set(a.tolist()) & set(b.tolist())
    assert torch.equal(torch.cat([a, b]).sort().values, torch.arange(80))
    for m in ("hydra", "sgd-influence"):
        whole = compute_influence(run, m).score.to_numpy()
        ha = compute_influence(run, m, query="val-a").score.to_numpy()
        hb = compute_influence(run, m, query="val-b").score.to_numpy()
        # equal halves: the mean validation loss is the mean of the halves' means, and scores are
        # linear in the query gradient
        np.testing.assert_allclose((ha + hb) / 2, whole, rtol=1e-4, atol=1e-9)
        assert not np.allclose(ha, hb)


def test_recommendation_table_and_choice(run: Path) -> None:
    res = recommend(run, methods=METHODS, control_draws=2)
    assert res["ks"] == [15, 30, 45, 60] and res["judged_on"] == {
        "split": "val",
        "n": 80,
        "halves": [40, 40],
        "trusted": False,
    }
    assert {(r["method"], r["k"]) for r in res["table"]} == {
        (m, k) for m in METHODS for k in res["ks"]
    }
    rows = {r["method"]: r for r in res["table"] if r["k"] == res["k"]}
    assert set(rows) == set(METHODS)
    assert rows["hydra"]["query"] == "val-a / val-b" and rows["loss"]["query"] == "val"
    assert reads_validation("combined") and not reads_validation("margin")
    for r in res["table"]:
        rand = res["random_by_k"][str(r["k"])]
        assert r["vs_random_loss"] == pytest.approx(r["d_val_loss"] - rand["d_val_loss"])
        assert 0 <= r["precision"] <= 1
    assert res["method"] is not None  # 15% pair noise: removing the label-error ranking helps
    best = rows[res["method"]]
    assert not best["hurts"] and best["d_val_acc"] >= 0
    k = res["k"]
    assert len(res["drop"]) == k and len(set(res["drop"])) == k
    assert res["method"] in res["why"] and "validation images its scores never saw" in res["why"]
    # the best measured (method, k) of the table
    assert (best["d_val_acc"], -best["d_val_loss"]) == max(
        (r["d_val_acc"], -r["d_val_loss"]) for r in res["table"] if not r["hurts"]
    )
    # the drop list is the top k of the method's scores on the whole validation split
    s = compute_influence(run, res["method"], skip_existing=True)
    assert res["drop"] == s.sort_values("score", kind="stable").sample_id.tolist()[:k]
    assert latest_recommendation(run)["id"] == res["id"]


def test_validation_reading_methods_are_cross_fitted_over_the_halves(run: Path) -> None:
    """hydra's top k by half A's scores is judged on half B and by B's on A, pooled by size;
    a label-only method and the random draws on the whole validation split; batches renormalised."""
    from engine.changes import resolve_changes
    from engine.loading import load_run
    from engine.models import per_sample_loss
    from engine.problem import split_logits
    from engine.retrain import counterfactual

    res = recommend(run, methods=["hydra", "loss"], k=20, control_draws=1, save=False)
    loaded = load_run(run)
    ids, val = loaded.bundle.train.ids, loaded.bundle.val
    a, b = val_halves(len(val), seed=loaded.cfg.seed)

    def loss_on(theta: dict, idx: torch.Tensor) -> float:  # type: ignore[type-arg]
        with torch.no_grad():
            return float(
                per_sample_loss(
                    split_logits(loaded.problem, theta, val)[idx], val.labels[idx]
                ).mean()
            )

    def without(scores: np.ndarray) -> dict:  # type: ignore[type-arg]
        top = np.argsort(scores, kind="stable")[:20]
        ch = resolve_changes(loaded, [ids[i] for i in top])
        return counterfactual(loaded, ch, mode="all", renormalise=True)

    base = loaded.final_theta
    sa = compute_influence(run, "hydra", query="val-a", skip_existing=True).score.to_numpy()
    sb = compute_influence(run, "hydra", query="val-b", skip_existing=True).score.to_numpy()
    d_b = loss_on(without(sa), b) - loss_on(base, b)
    d_a = loss_on(without(sb), a) - loss_on(base, a)
    row = next(r for r in res["table"] if r["method"] == "hydra")
    assert row["d_val_loss"] == pytest.approx((len(a) * d_a + len(b) * d_b) / len(val), rel=1e-6)
    every = torch.arange(len(val))
    sl = compute_influence(run, "loss", skip_existing=True).score.to_numpy()
    row = next(r for r in res["table"] if r["method"] == "loss")
    assert row["d_val_loss"] == pytest.approx(
        loss_on(without(sl), every) - loss_on(base, every), rel=1e-6
    )


def test_the_recommendation_reads_no_test_data(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.loading as lo
    import engine.recommend as rec

    before = recommend(run, methods=METHODS, control_draws=2, save=False)
    real = lo.load_run

    def scrambled(*a: object, **kw: object) -> LoadedRun:
        loaded = real(*a, **kw)  # type: ignore[arg-type]
        t = loaded.bundle.test
        g = torch.Generator().manual_seed(1)
        new = replace(t, labels=(t.labels + 1) % loaded.bundle.n_classes,
                      images=t.images[torch.randperm(len(t), generator=g)])  # fmt: skip
        return replace(loaded, bundle=replace(loaded.bundle, test=new))

    assert not torch.equal(scrambled(run).bundle.test.labels, real(run).bundle.test.labels)
    monkeypatch.setattr(lo, "load_run", scrambled)
    monkeypatch.setattr(rec, "load_run", scrambled)
    lo.clear_open_runs()
    for m in METHODS:  # recompute every score set with the scrambled test split
        for q in ("val", "val-a", "val-b"):
            compute_influence(run, m, query=q, overwrite=True)
    after = recommend(run, methods=METHODS, control_draws=2, save=False)
    lo.clear_open_runs()
    strip = lambda res: [{k: v for k, v in r.items() if k != "seconds"} for r in res["table"]]  # noqa: E731
    assert strip(after) == strip(before)
    assert after["drop"] == before["drop"] and after["method"] == before["method"]


def test_a_changed_score_set_makes_the_stored_recommendation_stale(run: Path) -> None:
    res = recommend(run, methods=("loss", "hydra"), control_draws=1)
    assert latest_recommendation(run)["id"] == res["id"]
    compute_influence(run, "hydra", query="val-a", overwrite=True)  # new scores, new timestamp
    assert latest_recommendation(run) is None


def test_nothing_is_recommended_when_no_method_beats_random() -> None:
    rand = {5: {"d_val_acc": 0.01, "d_val_loss": -0.02}, 9: {"d_val_acc": 0.05, "d_val_loss": 0}}
    rows = [
        {"method": "a", "k": 5, "d_val_acc": 0.0, "d_val_loss": -0.01, "hurts": False},
        {"method": "b", "k": 5, "d_val_acc": -0.02, "d_val_loss": -0.05, "hurts": True},
        {"method": "d", "k": 9, "d_val_acc": 0.03, "d_val_loss": -0.1, "hurts": False},
    ]
    assert choose(rows, rand, "acc") is None  # d helps, but random removal of 9 helps more
    assert choose(rows, rand, "loss")["method"] == "d"
    rows[1]["hurts"] = False
    rows[2]["d_val_loss"] = 0.1
    assert choose(rows, rand, "loss")["method"] == "b"  # beats random of its own k on loss
    rows.append({"method": "c", "k": 5, "d_val_acc": 0.02, "d_val_loss": 0.01, "hurts": False})
    assert choose(rows, rand, "acc")["method"] == "c"


def test_cli_json(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["recommend", "--run-dir", str(run), "--methods", "loss,margin", "--k", "12"]
    assert main([*args, "--json", "--control-draws", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"method", "k", "drop", "table"} <= set(out) and out["k"] == 12
    assert [r["method"] for r in out["table"]] != [] and len(out["drop"]) in (0, 12)
    assert main([*args, "--control-draws", "1"]) == 0
    text = capsys.readouterr().out
    assert "random (mean)" in text and "never saw" in text and "same start and batches" in text
    assert main(["recommend", "--run-dir", str(run), "--k", "0"]) == 2
    assert "k must be between 1" in capsys.readouterr().err
    assert main(["recommend", "--run-dir", str(run), "--k", "5,x"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err
    assert main([*args[:-1], "6,12", "--json", "--control-draws", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["ks"] == [6, 12]


def test_fresh_mode_measures_with_fresh_seeds_paired_with_the_unchanged_data(run: Path) -> None:
    from engine.changes import resolve_changes
    from engine.loading import load_run
    from engine.models import per_sample_loss
    from engine.problem import split_logits
    from engine.retrain import train_fresh

    res = recommend(run, methods=["loss"], k=10, control_draws=1, mode="fresh", seeds=1,
                    save=False)  # fmt: skip
    loaded = load_run(run)
    assert res["mode"] == "fresh" and res["fresh_seeds"] == [loaded.cfg.seed + 1001]
    val = loaded.bundle.val

    def loss(theta: dict) -> float:  # type: ignore[type-arg]
        with torch.no_grad():
            return float(
                per_sample_loss(split_logits(loaded.problem, theta, val), val.labels).mean()
            )

    s = compute_influence(run, "loss", skip_existing=True).score.to_numpy()
    top = np.argsort(s, kind="stable")[:10]
    ch = resolve_changes(loaded, [loaded.bundle.train.ids[i] for i in top])
    seed = loaded.cfg.seed + 1001
    want = loss(train_fresh(loaded, seed=seed, changes=ch)) - loss(train_fresh(loaded, seed=seed))
    assert res["table"][0]["d_val_loss"] == pytest.approx(want, rel=1e-6)
    with pytest.raises(ConfigError, match="mode must be all or fresh"):
        recommend(run, methods=["loss"], k=10, mode="exact")
