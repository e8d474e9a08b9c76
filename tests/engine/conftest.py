"""Fixtures of the engine tests: small runs trained once per module, and weight comparisons."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.config import TrainConfig
from engine.data import DataSpec
from engine.train import train


@pytest.fixture(scope="module")
def run64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A float64 mlp with momentum, weight decay and a step schedule: 3 epochs on 150 digits."""
    d = tmp_path_factory.mktemp("retrain") / "run64"
    train(
        d,
        DataSpec(dataset="digits", n_train=150, n_val=50, n_test=50, seed=1),
        TrainConfig(
            model="mlp",
            widths=[12],
            epochs=3,
            batch_size=16,
            lr=0.05,
            momentum=0.9,
            weight_decay=1e-3,
            schedule="step",
            step_epochs=2,
            dtype="float64",
            seed=3,
        ),
    )
    return d


@pytest.fixture(scope="module")
def run32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("retrain") / "run32"
    train(
        d,
        DataSpec(dataset="digits", n_train=120, n_val=40, n_test=40, seed=0),
        TrainConfig(model="mlp", widths=[10], epochs=2, batch_size=16, lr=0.05, seed=0),
    )
    return d


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
