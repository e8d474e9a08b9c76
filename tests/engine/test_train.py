from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from engine.config import ConfigError, TrainConfig, learning_rate
from engine.data import DataSpec
from engine.loading import load_run
from engine.runs import RunDir, RunError
from engine.sgd import TrainingDiverged, augment
from engine.train import train
from engine.trajectory import Trajectory
from engine.verify import verify_replay


def test_replay_is_bit_exact_with_momentum_decay_schedule_and_augmentation(tmp_path: Path) -> None:
    cfg = TrainConfig(
        model="lenet5",
        epochs=2,
        batch_size=20,
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-3,
        schedule="cosine",
        augment_shift=1,
        augment_flip=True,
        checkpoint_every=7,
    )
    train(tmp_path / "r", DataSpec(n_train=100, n_val=30, n_test=30), cfg)
    rep = verify_replay(tmp_path / "r")
    assert rep["exact"] and rep["max_abs_diff"] == 0.0
    traj = Trajectory(tmp_path / "r" / "trajectory")
    assert traj.complete and traj.n_steps == 10
    assert {0, 5, 7, 10} <= set(traj.checkpoints)  # epoch starts, every 7 steps, and the end
    assert len({traj.aug_seed(t) for t in range(traj.n_steps)}) == traj.n_steps


def test_schedules() -> None:
    cfg = TrainConfig(lr=1.0, epochs=4, schedule="invsqrt")
    assert learning_rate(cfg, 3, 10) == pytest.approx(0.5)
    cfg.schedule = "exp"
    cfg.gamma = 0.5
    assert learning_rate(cfg, 25, 10) == pytest.approx(0.25)
    cfg.schedule = "cosine"
    assert learning_rate(cfg, 20, 10) == pytest.approx(0.5)
    assert math.isclose(learning_rate(cfg, 0, 10), 1.0)


def test_mlp_on_digits_reaches_90_percent(tmp_path: Path) -> None:
    res = train(tmp_path / "r", DataSpec(), TrainConfig(model="mlp", epochs=10))
    assert res.final["test_acc"] >= 0.90


def test_diverging_run_fails_with_a_message_and_keeps_what_was_saved(tmp_path: Path) -> None:
    with pytest.raises(TrainingDiverged, match="lower --lr"):
        train(tmp_path / "r", DataSpec(n_train=100), TrainConfig(lr=1e5, epochs=3))
    run = RunDir.open(tmp_path / "r")
    assert run.status["state"] == "failed"
    assert "diverged" in run.status["message"]
    assert Trajectory(run.file("trajectory")).checkpoints[0] == 0
    with pytest.raises(ConfigError, match="incomplete trajectory"):
        load_run(tmp_path / "r")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lr", float("nan"), "^lr must"),
        ("lr", -1.0, "^lr must"),
        ("momentum", 1.0, "^momentum must"),
        ("epochs", 0, "^epochs must"),
        ("batch_size", 10_000, "larger than"),
        ("model", "resnet", "^model must"),
    ],
)
def test_impossible_hyperparameters_are_refused_before_anything_is_written(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    cfg = TrainConfig(epochs=1)
    setattr(cfg, field, value)
    with pytest.raises(ConfigError, match=message) as e:
        train(tmp_path / "r", DataSpec(n_train=100), cfg)
    assert e.value.param == field  # the CLI shows it as its flag, the app as its label
    assert not (tmp_path / "r").exists()


def test_existing_run_is_not_overwritten_unless_asked(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="already exists"):
        train(tiny_run, DataSpec(n_train=100), TrainConfig(epochs=1))
    assert load_run(tiny_run).traj.complete


def test_augmentation_is_per_sample_and_deterministic() -> None:
    x = torch.rand(6, 1, 8, 8)
    a = augment(x, seed=3, shift=2, flip=True)
    assert torch.equal(a, augment(x, seed=3, shift=2, flip=True))
    # Sample i's transform does not depend on the other samples' pixels.
    y = x.clone()
    y[0] = 0
    assert torch.equal(augment(y, seed=3, shift=2, flip=True)[1:], a[1:])


def test_float64_training(tmp_path: Path) -> None:
    train(
        tmp_path / "r",
        DataSpec(classes=[1, 7], n_train=50),
        TrainConfig(model="logreg", binary=True, dtype="float64", epochs=1),
    )
    lr = load_run(tmp_path / "r")
    assert lr.final_theta["1.weight"].dtype == torch.float64
    assert lr.final_theta["1.weight"].shape == (1, 64)


def test_replay_is_bit_exact_for_a_one_output_linear_model(tmp_path: Path) -> None:
    # Regression: safetensors hands back tensors at unaligned offsets, and a 1-output Linear then
    # rounded differently from training (5.96e-08 off) until checkpoints were copied on load.
    cfg = TrainConfig(model="logreg", binary=True, epochs=4, batch_size=10)
    train(tmp_path / "r", DataSpec(classes=[1, 7], n_train=80), cfg)
    rep = verify_replay(tmp_path / "r")
    assert rep["exact"], rep


def test_standardized_run_uses_training_statistics_and_replays_bit_exact(tmp_path: Path) -> None:
    from engine.models import Standardize

    cfg = TrainConfig(model="mlp", widths=[8], epochs=3, batch_size=10, standardize=True)
    train(tmp_path / "r", DataSpec(classes=[1, 7], n_train=80), cfg)
    assert verify_replay(tmp_path / "r")["exact"]
    run = load_run(tmp_path / "r")
    assert run.cfg.standardize
    layer = run.problem.model[0]
    assert isinstance(layer, Standardize)
    x = run.bundle.train.x(torch.float64)
    assert torch.allclose(layer.mean.double(), x.mean(0, keepdim=True))
    assert set(run.final_theta) == {"2.weight", "2.bias", "4.weight", "4.bias"}
