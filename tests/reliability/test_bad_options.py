"""Bad hyperparameters and influence-method options at every door (CLI, engine API, background
jobs): one clear message naming the value, and the existing run and its scores untouched.
The engine-API refusal before a new run is written is tested in tests/engine/test_train.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.config import ConfigError
from tests.reliability.conftest import error_line, snapshot

Cli = Callable[..., tuple[int, str, str]]
DIGITS = ["--dataset", "digits", "--classes", "1,7", "--n-train", "60", "--model", "logreg"]


@pytest.mark.parametrize(
    ("flags", "expect"),
    [
        (["--lr", "0"], "--lr must be a positive finite number, got 0.0"),
        (["--lr", "-0.5"], "--lr must be a positive finite number, got -0.5"),
        (["--lr", "nan"], "--lr must be a positive finite number, got nan"),
        (["--lr", "inf"], "--lr must be a positive finite number, got inf"),
        (["--momentum", "1"], "--momentum must be in [0, 1), got 1.0"),
        (["--momentum", "-0.1"], "--momentum must be in [0, 1), got -0.1"),
        (["--momentum", "nan"], "--momentum must be in [0, 1), got nan"),
        (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
        (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
        (["--batch-size", "1000"], "--batch-size 1000 is larger than the"),
        (["--weight-decay", "-1"], "--weight-decay must be >= 0, got -1.0"),
        (["--schedule", "wavy"], "--schedule must be one of"),
        (["--model", "resnet"], "--model must be one of"),
        (["--widths", "64,x"], "--widths must be comma-separated integers, got '64,x'"),
        (["--noise", "1.5"], "noise"),
    ],
)
def test_bad_hyperparameter_leaves_the_run_alone(
    cli: Cli, victim: Path, flags: list[str], expect: str
) -> None:
    before = snapshot(victim)
    rc, out, err = cli("train", *DIGITS, *flags, "--run-dir", victim, "--overwrite")
    assert rc == 2, (out, err)
    assert expect in error_line(err)
    assert snapshot(victim) == before


def test_bad_hyperparameters_in_a_background_job_fail_with_the_message(tmp_path: Path) -> None:
    from engine.job_worker import run_inline

    with pytest.raises(ConfigError, match=r"^momentum must be in \[0, 1\), got 1.5") as e:
        run_inline(
            "train",
            tmp_path / "r",
            {"data": {"dataset": "digits", "n_train": 60}, "train": {"momentum": 1.5}},
        )
    assert e.value.param == "momentum"  # the library names its parameter; the CLI says --momentum
    assert e.value.named("Momentum") == "Momentum must be in [0, 1), got 1.5"  # the app's label
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["influence", "--method", "nope"], "unknown method 'nope'; choose one of sgd-influence"),
        (["influence", "--method", "loss", "--last-epochs", "1"], "method 'loss' has no option 'last_epochs'"),
        (["influence", "--method", "hydra", "--last-epochs", "0"], "--last-epochs must be a positive integer, got 0"),
        (["influence", "--method", "sgd-influence", "--last-epochs", "-2"], "--last-epochs must be a positive integer, got -2"),
        (["influence", "--method", "hydra", "--query", "test:no-such-id"], "unknown test sample id(s): no-such-id"),
        (["influence", "--method", "hydra", "--query", "test:"], "--query test:ID needs at least one test sample id"),
        (["influence", "--method", "hydra", "--query", "everything"], "--query must be val, val-a, val-b, class, self"),
        (["influence", "--method", "tracin", "--last-epochs", "1"], "holds tracin scores made with other parameters"),
        (["influencers", "--test-id", "no-such-id"], "unknown test sample id 'no-such-id'"),
        (["influencers", "--test-id", "x", "--k", "0"], "--k must be positive, got 0"),
        (["influencers", "--test-id", "x", "--method", "influence-function"], "needs a Hessian-free adjoint method"),
    ],
)  # fmt: skip
def test_bad_method_option_leaves_the_scores_alone(
    cli: Cli, victim: Path, argv: list[str], expect: str
) -> None:
    if "--test-id" in argv and argv[argv.index("--test-id") + 1] == "x":
        import pandas as pd

        first_test = pd.read_csv(victim / "manifest.csv").query("split == 'test'")["sample_id"]
        argv = [first_test.iloc[0] if a == "x" else a for a in argv]
    before = snapshot(victim)
    rc, out, err = cli(*argv, "--run-dir", victim)
    assert rc == 2, (out, err)
    assert expect in error_line(err)
    assert snapshot(victim) == before


def test_unknown_option_through_the_api_and_a_job(victim: Path) -> None:
    from engine.influence.api import compute_influence
    from engine.job_worker import run_inline
    from engine.jobs import start_job

    before = snapshot(victim)
    with pytest.raises(ConfigError, match="method 'margin' has no option 'dampng'"):
        compute_influence(victim, "margin", dampng=0.1)
    with pytest.raises(
        ConfigError, match=r"'hydra' has no option 'dampng'; its options: curvature"
    ):
        compute_influence(victim, "hydra", dampng=0.1)
    with pytest.raises(ConfigError, match="'margin' has no option 'dampng'"):
        run_inline("influence", victim, {"method": "margin", "options": {"dampng": 0.1}})
    with pytest.raises(ConfigError, match="unknown job kind 'influnce'"):
        start_job("influnce", run_dir=victim, params={})
    assert snapshot(victim) == before
