"""App test fixtures: one tiny trained run (digits, logreg) with scores, copied per test into a
fresh workspace that RETRACER_WORKSPACE points at."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.config import TrainConfig
from engine.data import DataSpec

APP = Path(__file__).resolve().parents[2] / "app"
TINY_DATA = DataSpec(
    dataset="digits", classes=[1, 7, 3], n_train=90, n_val=30, n_test=30, noise=0.1, seed=0
)
TINY_TRAIN = TrainConfig(model="logreg", epochs=2, batch_size=10, lr=0.1, momentum=0.9)
TINY_METHOD = "tracin"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run with `TINY_METHOD` scores (built once per test session)."""
    from engine.job_worker import run_inline
    from engine.train import train

    run = tmp_path_factory.mktemp("tiny") / "tiny-run"
    train(run, TINY_DATA, TINY_TRAIN)
    run_inline("influence", run, {"method": TINY_METHOD, "query": "val"})
    return run


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty workspace that the app uses (RETRACER_WORKSPACE)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.setenv("RETRACER_WORKSPACE", str(ws))
    return ws


@pytest.fixture
def run_dir(trained_run: Path, workspace: Path) -> Path:
    """A private copy of the tiny run, made the current run of the test's workspace."""
    from engine.workspace import set_current_run

    dst = workspace / "tiny"
    shutil.copytree(trained_run, dst, ignore=shutil.ignore_patterns("selections.json", ".*.lock"))
    set_current_run(dst, workspace)
    return dst


def page(name: str) -> str:
    return str(APP / "views" / name)
