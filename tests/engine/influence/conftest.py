"""Tiny float64 runs shared by the influence tests (trained once per session, in seconds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.config import TrainConfig
from engine.data import DataSpec
from engine.loading import LoadedRun, load_run
from engine.train import train


def make_run(root: Path, name: str, *, data: dict[str, Any] | None = None, **cfg: Any) -> LoadedRun:
    """Train a tiny float64 run under root/name (digits 1 vs 7, 30 training samples) and load it."""
    sizes: dict[str, Any] = {"n_train": 30, "n_val": 20, "n_test": 12, **(data or {})}
    spec = DataSpec(dataset="digits", classes=[1, 7], **sizes)
    base: dict[str, Any] = dict(
        model="mlp",
        widths=[4],
        epochs=3,
        batch_size=5,
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-3,
        schedule="step",
        step_epochs=1,
        gamma=0.5,
        dtype="float64",
        seed=0,
        device="cpu",
    )
    base.update(cfg)
    train(root / name, spec, TrainConfig(**base))
    return load_run(root / name)


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("influence-runs")


@pytest.fixture(scope="session")
def tiny_run(runs_root: Path) -> LoadedRun:
    """mlp [4], softmax over 2 classes, momentum .9, weight decay 1e-3, step schedule, 3 epochs."""
    return make_run(runs_root, "tiny")


@pytest.fixture(scope="session")
def aug_run(runs_root: Path) -> LoadedRun:
    """Binary sigmoid mlp with shift + flip augmentation and an invsqrt schedule."""
    return make_run(
        runs_root,
        "aug",
        binary=True,
        schedule="invsqrt",
        lr=0.3,
        augment_shift=1,
        augment_flip=True,
    )


@pytest.fixture(scope="session")
def conv_run(runs_root: Path) -> LoadedRun:
    """lenet5 (convolutions + max-pooling) on 8x8 digits, 2 epochs, for the dot-product routes."""
    return make_run(runs_root, "conv", model="lenet5", epochs=2, lr=0.05)


@pytest.fixture(scope="session")
def resnet_run(runs_root: Path) -> LoadedRun:
    """resnet9-gn, 4 channels wide (residual blocks, GroupNorm, max pooling), 2 epochs."""
    return make_run(runs_root, "resnet", model="resnet9-gn", base_width=4, epochs=2, lr=0.05)


@pytest.fixture(scope="session")
def std_run(runs_root: Path) -> LoadedRun:
    """Binary sigmoid mlp on standardised inputs (the fidelity protocol's preprocessing)."""
    return make_run(runs_root, "std", binary=True, standardize=True, momentum=0.0)


@pytest.fixture(scope="session")
def wide_run(runs_root: Path) -> LoadedRun:
    """mlp [16] (P = 1074 > the projection dims used), 60 samples, for the projected store."""
    return make_run(
        runs_root, "wide", widths=[16], epochs=4, batch_size=10, data={"n_train": 60, "n_test": 20}
    )


@pytest.fixture
def tiny_copy_loaded(tiny_run: LoadedRun, tmp_path: Path) -> LoadedRun:
    """A private copy of tiny_run (a test may add to it: scores, ensemble runs), loaded."""
    import shutil

    shutil.copytree(tiny_run.run.path, tmp_path / "tiny")
    return load_run(tmp_path / "tiny")
