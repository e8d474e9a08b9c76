"""A tiny noisy run for the analysis tests: 4 digit classes, 40% pair noise (class c labelled c+1)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def noisy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mlp [16] on 200 digits of classes 0, 1, 4, 7 with 40% pair noise, 8 epochs, float64."""
    from engine.config import TrainConfig
    from engine.data import DataSpec
    from engine.train import train

    run_dir = tmp_path_factory.mktemp("analysis-runs") / "noisy"
    train(
        run_dir,
        DataSpec(
            dataset="digits",
            classes=[0, 1, 4, 7],
            n_train=200,
            n_val=80,
            n_test=20,
            noise=0.4,
            noise_kind="pair",
            seed=0,
        ),
        TrainConfig(
            model="mlp",
            widths=[16],
            epochs=8,
            batch_size=10,
            lr=0.1,
            momentum=0.9,
            dtype="float64",
            device="cpu",
        ),
    )
    return run_dir
