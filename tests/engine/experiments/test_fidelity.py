"""The fidelity experiment (Hara et al. Sec. 7.1): metrics, protocol, and one seed end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main
from engine.config import ConfigError
from engine.data import prepare_data
from engine.experiments.fidelity import (
    N_TEST,
    N_TRAIN,
    N_VAL,
    data_spec,
    default_methods,
    extremes,
    jaccard,
    kendall,
    protocol,
    run_fidelity,
)
from engine.influence.methods import get_method, parse_method_spec


def test_extremes_and_jaccard() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(50)
    top = extremes(x, 3)
    assert top == set(np.argsort(x)[:3]) | set(np.argsort(x)[-3:])
    assert jaccard(x, x, 3) == 1.0
    assert jaccard(x, 2 * x + 1, 3) == 1.0  # a monotone map keeps both ends
    y = x.copy()
    y[np.argsort(x)[-3:]] = 0.0  # the three largest move to the middle
    assert jaccard(y, x, 3) == len(extremes(y, 3) & top) / len(extremes(y, 3) | top)
    assert jaccard(y, x, 3) < 1.0
    assert kendall(x, x) == pytest.approx(1.0)
    assert kendall(x, -x) == pytest.approx(-1.0)


@pytest.mark.parametrize("seed", [0, 7])
def test_split_is_200_train_and_the_rest_validation(seed: int) -> None:
    b = prepare_data(data_spec(seed))
    assert (len(b.train), len(b.val), len(b.test)) == (N_TRAIN, N_VAL, N_TEST)
    assert N_TRAIN + N_VAL + N_TEST == 361  # every 1 and 7 of the bundled digits
    assert set(b.train.labels.tolist()) == {0, 1}


def test_protocols() -> None:
    lr, dnn = protocol("logreg", 3), protocol("dnn", 3)
    assert (lr.model, lr.batch_size, lr.schedule, lr.epochs, lr.weight_decay) == (
        "logreg",
        5,
        "invsqrt",
        5,
        1e-2,
    )
    assert (dnn.model, dnn.widths, dnn.batch_size, dnn.lr, dnn.epochs, dnn.weight_decay) == (
        "mlp",
        [8, 8],
        20,
        0.1,
        10,
        1e-3,
    )
    for c in (lr, dnn):
        assert c.binary and c.dtype == "float64" and c.momentum == 0 and c.seed == 3
        assert c.standardize  # StandardScaler inputs, as the authors' Sec. 7.1 code
    assert not protocol("dnn", 3, standardize=False).standardize
    with pytest.raises(ConfigError):
        protocol("cnn", 0)
    assert "influence-function" in default_methods()
    assert all(get_method(m).uses_query for m in default_methods())


def test_unknown_method_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fidelity", "--model", "logreg", "--seeds", "1", "--methods", "nope"]) == 2
    assert "unknown method" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        run_fidelity("logreg", seeds=[])
    with pytest.raises(ConfigError):
        run_fidelity("logreg", seeds=1, methods=["nope:damping=1"])


def test_method_specs() -> None:
    assert parse_method_spec("tracin") == ("tracin", {})
    assert parse_method_spec("influence-function:damping=0.5:solver=lissa:depth=20") == (
        "influence-function",
        {"damping": 0.5, "solver": "lissa", "depth": 20},
    )
    with pytest.raises(ConfigError):
        parse_method_spec("influence-function:damping")


@pytest.mark.slow
def test_one_seed_logreg_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    methods = ["sgd-influence", "influence-function", "influence-function:damping=1", "loss"]
    rc = main(
        [
            "fidelity",
            "--model",
            "logreg",
            "--seeds",
            "1",
            "--json",
            "--methods",
            ",".join(methods),
            "--work-dir",
            str(tmp_path),
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == methods
    for row in out.values():
        assert set(row) == {"kendall", "kendall_std", "jaccard", "jaccard_std"}
        assert row["kendall_std"] == 0.0  # one seed
    assert out["sgd-influence"]["kendall"] >= 0.9
    assert out["sgd-influence"]["jaccard"] >= 0.8
    assert out["influence-function"]["kendall"] > 0  # positively related, far weaker off-optimum
    assert out["influence-function:damping=1"]["kendall"] != out["influence-function"]["kendall"]
    assert (tmp_path / "logreg-seed0" / "trajectory").is_dir()


@pytest.mark.slow
def test_dnn_meets_the_issue_target_over_ten_seeds() -> None:
    # Hara et al. Table 1 asks tau >= .65 and Jaccard >= .40 for the 8-8 DNN. Float64 on the CPU
    # is deterministic, so this pins the measured 0.687 / 0.426 against regressions.
    res = run_fidelity("dnn", seeds=10, methods=["sgd-influence"]).summary()["sgd-influence"]
    assert res["kendall"] >= 0.65
    assert res["jaccard"] >= 0.40
