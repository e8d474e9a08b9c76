"""Trust check: scores against true leave-one-out retrains, end to end on a tiny run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.changes import Changes
from engine.cli import main
from engine.config import TrainConfig
from engine.data import DataSpec
from engine.experiments.trust import pick_samples, trust
from engine.loading import load_run
from engine.retrain import counterfactual, evaluate_theta
from engine.train import train


def test_pick_samples_thirds() -> None:
    scores = np.array([0.3, -5.0, 2.0, -1.0, 9.0, 0.0, 0.1, -0.2, 0.5, 4.0])
    picks = pick_samples(scores, 7, seed=1)
    groups = [g for _, g in picks]
    assert groups == ["harmful", "harmful", "helpful", "helpful", "random", "random", "random"]
    assert [i for i, _ in picks[:4]] == [1, 3, 4, 9]
    assert len({i for i, _ in picks}) == 7


@pytest.fixture(scope="module")
def run64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("trust") / "run"
    train(
        d,
        DataSpec(dataset="digits", n_train=100, n_val=40, n_test=40, seed=2),
        TrainConfig(
            model="mlp", widths=[10], epochs=2, batch_size=20, lr=0.05, dtype="float64", seed=1
        ),
    )
    return d


def test_trust_end_to_end(run64: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = trust(run64, method="sgd-influence", k=6)
    assert res["k"] == 6 and [s["group"] for s in res["samples"]].count("harmful") == 2
    # the true change is an independent retrain: check one of them here
    loaded = load_run(run64)
    s = res["samples"][0]
    i = loaded.bundle.train.ids.index(s["sample_id"])
    z = Changes(
        torch.tensor([i]), torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    )
    after = evaluate_theta(loaded, counterfactual(loaded, z))["val_loss"]
    assert s["actual"] == pytest.approx(
        after - evaluate_theta(loaded, loaded.final_theta)["val_loss"], abs=1e-12
    )
    # exact SGD-Influence on a float64 run with a small step: the estimate tracks the truth
    assert res["kendall_tau"] > 0.3 and res["sign_agreement"] >= 0.5
    assert Path(res["path"], "trust.html").is_file() and Path(res["path"], "trust.csv").is_file()
    assert "Kendall's tau" in res["verdict"]
    assert main(["trust", "--run-dir", str(run64), "--method", "nope", "--k", "3"]) == 2
    assert "nope" in capsys.readouterr().err


def test_trust_float64_truth_on_a_float32_run(tmp_path: Path) -> None:
    d = tmp_path / "run32"
    train(
        d,
        DataSpec(dataset="digits", n_train=80, n_val=30, n_test=30, seed=3),
        TrainConfig(model="mlp", widths=[8], epochs=2, batch_size=16, lr=0.05, seed=2),
    )
    own = trust(d, method="hydra", k=3, save=False)
    f64 = trust(d, method="hydra", k=3, precision="float64", save=False)
    assert [s["sample_id"] for s in own["samples"]] == [s["sample_id"] for s in f64["samples"]]
    for a, b in zip(
        own["samples"], f64["samples"], strict=True
    ):  # same effect, up to float32 rounding
        assert abs(a["actual"] - b["actual"]) <= 0.1 * abs(b["actual"]) + 1e-4


def test_trust_float64_truth_is_the_float64_leave_one_out(run32: Path, tmp_path: Path) -> None:
    """precision="float64" takes its truth from engine.experiments.loo (it once was ignored)."""
    import shutil

    from engine.experiments.loo import loo_changes
    from engine.influence.queries import Query
    from engine.loading import load_run

    run = Path(shutil.copytree(run32, tmp_path / "run"))  # the scores are stored in it
    res = trust(run, method="loss", k=3, precision="float64", save=False)
    loaded = load_run(run)
    pos = {sid: i for i, sid in enumerate(loaded.bundle.train.ids)}
    idx = [pos[s["sample_id"]] for s in res["samples"]]
    want = loo_changes(loaded, Query("val"), samples=idx)[:, 0]
    assert [s["actual"] for s in res["samples"]] == want.tolist()
