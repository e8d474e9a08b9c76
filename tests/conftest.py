"""Shared fixtures: tiny runs on the bundled digits, trained once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two cores: keep torch from oversubscribing when pytest and helpers run side by side.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch mlp on 200 digits with momentum, weight decay and a step schedule (float32)."""
    from engine.config import TrainConfig
    from engine.data import DataSpec
    from engine.train import train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    train(
        run_dir,
        DataSpec(dataset="digits", n_train=200, n_val=60, n_test=60, seed=0),
        TrainConfig(
            model="mlp",
            widths=[16],
            epochs=2,
            batch_size=16,
            lr=0.05,
            schedule="step",
            step_epochs=1,
        ),
    )
    return run_dir


@pytest.fixture
def tiny_copy(tiny_run: Path, tmp_path: Path) -> Path:
    """A private copy of tiny_run that a test may change (scores, selections, trusted labels)."""
    import shutil

    dst = tmp_path / "tiny-copy"
    shutil.copytree(tiny_run, dst)
    return dst
