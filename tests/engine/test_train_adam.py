"""Adam and AdamW training: torch.optim semantics, bit-exact replay, resume, the CLI flags."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.cli import main
from engine.config import ConfigError, TrainConfig
from engine.data import DataSpec
from engine.loading import load_run
from engine.runs import load_tensors
from engine.sgd import SQ, STEP
from engine.train import resume, train
from engine.verify import verify_replay

SPEC = DataSpec(dataset="digits", classes=[1, 7], n_train=40, n_val=20, n_test=10)


def adam_config(optimizer: str, **kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        model="mlp",
        widths=[6],
        epochs=3,
        batch_size=8,
        lr=0.01,
        weight_decay=0.05,
        schedule="step",
        step_epochs=1,
        gamma=0.5,
        optimizer=optimizer,
        beta1=0.8,
        beta2=0.95,
        eps=1e-6,
        dtype="float64",
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_config_validates_the_optimizer() -> None:
    TrainConfig(optimizer="adamw").validate()
    for bad, match in (
        (dict(optimizer="rmsprop"), "optimizer"),
        (dict(optimizer="adam", beta1=1.0), "beta1"),
        (dict(optimizer="adam", beta2=-0.1), "beta2"),
        (dict(optimizer="adam", eps=0.0), "eps"),
    ):
        with pytest.raises(ConfigError, match=match):
            TrainConfig(**bad).validate()  # type: ignore[arg-type]
    # configs written before the option existed load as SGD
    old = {k: v for k, v in TrainConfig().to_dict().items() if k not in ("optimizer", "beta1")}
    assert TrainConfig.from_dict(old).optimizer == "sgd"


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_run_replays_bit_exactly_and_checkpoints_hold_the_state(
    tmp_path: Path, optimizer: str
) -> None:
    train(tmp_path / "r", SPEC, adam_config(optimizer, checkpoint_every=4))
    rep = verify_replay(tmp_path / "r")
    assert rep["exact"] and rep["max_abs_diff"] == 0.0
    loaded = load_run(tmp_path / "r")
    assert loaded.problem.optimizer == optimizer and loaded.problem.beta2 == 0.95
    c = loaded.traj.checkpoints[2]
    saved = load_tensors(loaded.traj.folder / f"ckpt-{c:08d}.safetensors")
    assert int(saved[f"v.{STEP}"]) == c
    assert {f"v.{k}{SQ}" for k in loaded.final_theta} <= set(saved)


def test_resume_of_an_interrupted_adam_run_is_bit_identical(tmp_path: Path) -> None:
    cfg = adam_config("adamw", checkpoint_every=3, epochs=4)
    train(tmp_path / "clean", SPEC, cfg)

    def stop(step: int, total: int, loss: float) -> None:
        if step == 11:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "cut", SPEC, cfg, progress=stop)
    assert not load_run(tmp_path / "cut", require_complete=False).traj.complete
    resume(tmp_path / "cut")
    a, b = load_run(tmp_path / "cut"), load_run(tmp_path / "clean")
    _, va = a.traj.load_checkpoint(a.traj.n_steps)
    _, vb = b.traj.load_checkpoint(b.traj.n_steps)
    assert all(torch.equal(a.final_theta[k], b.final_theta[k]) for k in a.final_theta)
    assert va.keys() == vb.keys() and all(torch.equal(va[k], vb[k]) for k in va)


def test_cli_trains_with_adamw(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = str(tmp_path / "cli")
    args = ["train", "--dataset", "digits", "--n-train", "60", "--epochs", "2", "--run-dir", run]
    adam = ["--optimizer", "adamw", "--lr", "0.005", "--beta1", "0.85", "--eps", "1e-7"]
    assert main([*args, *adam]) == 0
    cfg = load_run(run).cfg
    assert (cfg.optimizer, cfg.beta1, cfg.beta2, cfg.eps) == ("adamw", 0.85, 0.999, 1e-7)
    assert main(["verify", "--run-dir", run]) == 0
    assert "bit-exact" in capsys.readouterr().out
    assert main([*args, "--overwrite", "--optimizer", "adam", "--beta2", "1.5"]) == 2
    assert "--beta2 must be in [0, 1)" in capsys.readouterr().err


def test_fidelity_protocol_with_adam_changes_only_the_optimiser_and_lr() -> None:
    from engine.experiments.fidelity import ADAM_LR, protocol

    for model in ("logreg", "dnn"):
        sgd, adam = protocol(model, 2), protocol(model, 2, optimizer="adamw")
        assert (adam.optimizer, adam.lr, sgd.optimizer) == ("adamw", ADAM_LR, "sgd")
        assert {**adam.to_dict(), "optimizer": "sgd", "lr": sgd.lr} == sgd.to_dict()
    with pytest.raises(ConfigError, match="optimizer"):
        protocol("logreg", 0, optimizer="lbfgs")
