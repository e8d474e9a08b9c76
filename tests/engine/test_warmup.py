"""engine.warmup: training leaves the predictions and the PCA map in the run, so the pages that
read them only read; a failure to compute them never fails the training."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cli import main
from engine.embedding import has_embedding, load_embedding
from engine.export import run_predictions
from engine.job_worker import run_inline
from engine.loading import load_run

ARGS = ["--dataset", "digits", "--n-train", "120", "--epochs", "1"]


def test_cli_train_leaves_predictions_and_the_pca_map(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "r"
    assert main(["train", *ARGS, "--run-dir", str(run)]) == 0
    assert (run / "predictions.csv").is_file() and has_embedding(run, "pca")
    import engine.export

    def no_forward_pass(_run: object) -> None:
        raise AssertionError("the predictions were computed again")

    monkeypatch.setattr(engine.export, "_compute_predictions", no_forward_pass)
    preds = run_predictions(run)  # read back: their key matches the trained run
    b = load_run(run).bundle
    assert len(preds) == len(b.train) + len(b.val) + len(b.test) and len(b.train) == 120
    assert list(load_embedding(run)["method"].unique()) == ["pca"]


def test_the_training_job_warms_the_run_too(tmp_path: Path) -> None:
    run = tmp_path / "j"
    run_inline("train", run, {"data": {"dataset": "digits", "n_train": 120},
                              "train": {"epochs": 1}})  # fmt: skip
    assert (run / "predictions.csv").is_file() and has_embedding(run, "pca")


def test_a_failure_to_warm_never_fails_the_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.export

    def broken(_run: object) -> None:
        raise RuntimeError("no forward pass today")

    monkeypatch.setattr(engine.export, "_compute_predictions", broken)
    run = tmp_path / "f"
    assert main(["train", *ARGS, "--run-dir", str(run)]) == 0
    assert not (run / "predictions.csv").exists()
    assert main(["verify", "--run-dir", str(run)]) == 0
