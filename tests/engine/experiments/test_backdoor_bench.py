"""Backdoor runs: attack metrics while training, the attack query, retraining, and the bench end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.cli import main
from engine.config import ConfigError, TrainConfig
from engine.data import DataSpec
from engine.influence.queries import Query, query_inputs, query_losses
from engine.loading import load_run
from engine.retrain import evaluate_theta, retrain
from engine.train import train

SPEC = DataSpec(
    dataset="digits", classes=[1, 7, 3], n_train=240, n_val=60, n_test=75, backdoor="1:7"
)
CFG = TrainConfig(model="mlp", widths=[16], epochs=4, batch_size=16, lr=0.1)


@pytest.fixture(scope="module")
def bd_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("bd") / "run"
    train(run, SPEC, CFG)
    return run


def test_metrics_report_attack_success_per_epoch(bd_run: Path) -> None:
    metrics = json.loads((bd_run / "metrics.json").read_text())
    assert len(metrics) == CFG.epochs
    loaded = load_run(bd_run)
    ev = evaluate_theta(loaded, loaded.final_theta)
    assert metrics[-1]["attack_success"] == pytest.approx(ev["attack_success"])
    assert metrics[-1]["test_acc"] == pytest.approx(ev["test_acc"])
    for m in metrics:
        assert 0.0 <= m["attack_success"] <= 1.0


def test_attack_success_by_class_counts_each_class_of_test2(bd_run: Path) -> None:
    from engine.experiments.backdoor_bench import attack_predictions, attack_success_by_class

    pred = attack_predictions(bd_run)
    t = attack_success_by_class(bd_run)
    assert list(t.columns) == ["class", "n", "attack_success"]
    assert int(t["n"].sum()) == len(pred)
    assert list(t["attack_success"]) == sorted(t["attack_success"], reverse=True)
    bundle = load_run(bd_run).bundle
    for _, r in t.iterrows():
        rows = pred[pred["label"] == bundle.class_names.index(r["class"])]
        hits = rows["predicted"] == bundle.attack_target
        assert r["attack_success"] == pytest.approx(float(hits.mean()))


def test_attack_query_is_the_mean_test2_loss(bd_run: Path) -> None:
    loaded = load_run(bd_run)
    q = Query.parse("attack")
    x, y, col = query_inputs(loaded, q)
    b = loaded.bundle
    assert b.attack is not None and x.shape[0] == len(b.attack)
    assert torch.equal(y.cpu(), b.attack.labels) and (col == 0).all()
    theta = loaded.final_theta
    f = query_losses(loaded, q, theta)
    per = query_losses(loaded, Query("test", tuple(b.attack.ids)), theta)  # watermarked ids
    assert f.shape == (1,)
    assert float(f[0]) == pytest.approx(float(per.mean()), rel=1e-5)
    plain = bd_run.parent / "plain"
    train(plain, DataSpec(dataset="digits", n_train=100, n_val=30, n_test=30), CFG)
    with pytest.raises(ConfigError, match="backdoored run"):
        query_inputs(load_run(plain), q)


@pytest.mark.slow
def test_poisoned_images_lead_the_attack_query(bd_run: Path) -> None:
    from engine.influence.api import compute_influence, test_influencers

    loaded = load_run(bd_run)
    poisoned = set(loaded.bundle.poisoned_ids())
    s = compute_influence(bd_run, "hydra", query="attack").set_index("sample_id")["score"]
    top = list(s.sort_values(kind="stable").index[: len(poisoned)])
    assert len(poisoned & set(top)) >= len(poisoned) // 2  # negative = harmful: poisoned first
    wm = loaded.bundle.attack.ids[0]  # type: ignore[union-attr]
    inf = test_influencers(bd_run, wm, method="hydra", k=3, exact=True)
    assert len(inf) == 6 and (inf["kind"] == "harmful").sum() == 3


def test_retrain_reports_attack_success(bd_run: Path) -> None:
    loaded = load_run(bd_run)
    res = retrain(loaded, drop=loaded.bundle.poisoned_ids(), mode="all", control=None, save=False)
    for g in ("before", "after"):
        assert "attack_success" in res[g]["summary"]
    assert "attack_success" in res["stats"]
    before = res["before"]["summary"]["attack_success"]["mean"]
    assert before == pytest.approx(evaluate_theta(loaded, loaded.final_theta)["attack_success"])


@pytest.mark.slow
def test_backdoor_bench_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "bench"
    data = [
        "backdoor-bench",
        "--dataset", "digits",
        "--classes", "1,7,3",
        "--n-train", "240", "--n-val", "60", "--n-test", "75",
        "--model", "mlp", "--widths", "16", "--epochs", "4", "--batch-size", "16",
        "--backdoor", "1:7", "--trigger", "x", "--backdoor-rate", "0.2",
        "--seeds", "1", "--run-dir", str(run), "--quiet",
    ]  # fmt: skip
    assert main([*data, "--methods", "hydra,loss,random"]) == 0
    out = capsys.readouterr().out
    assert "attack success" in out and "| hydra | attack |" in out
    folder = next((run / "experiments").glob("backdoor-bench-*"))
    res = json.loads((folder / "result.json").read_text())
    assert (folder / "backdoor_bench.csv").is_file() and (folder / "backdoor_bench.html").is_file()
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"no filtering", "oracle", "hydra", "loss", "random"}
    assert rows["oracle"]["poisoned_removed"] == res["n_poisoned"] > 0
    assert rows["oracle"]["precision_at_n"] == 1.0
    for r in rows.values():
        assert 0 <= r["attack_success"] <= 1 and 0 <= r["test_acc"] <= 1
        assert r["removed"] in (0, res["n_poisoned"])
    assert res["best"] in {"hydra", "loss", "random"}
    by_class = res["naive_by_class"]  # test-2 holds every class but the target 7
    assert sorted(r["class"] for r in by_class) == ["1", "3"]
    assert "naive attack success by true class: " in out
    # the per-class shares weigh back to the overall attack success
    overall = sum(r["n"] * r["attack_success"] for r in by_class) / sum(r["n"] for r in by_class)
    assert overall == pytest.approx(res["naive"]["attack_success"])
    # a second call reuses the run
    assert main([*data, "--methods", "loss"]) == 0
    assert "(reused)" in capsys.readouterr().out


def test_bench_needs_a_backdoor(tmp_path: Path) -> None:
    from engine.experiments.backdoor_bench import backdoor_bench

    with pytest.raises(ConfigError, match="^backdoor"):
        backdoor_bench(data=DataSpec(dataset="digits"), cfg=CFG, run_dir=tmp_path / "x")
