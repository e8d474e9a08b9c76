"""`retracer cluster` and `retracer agreement` on a tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli import main


def test_cluster_cli_json(noisy_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cluster", "--run-dir", str(noisy_run), "--m", "20", "--exact", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["kind"] == "cluster" and res["m"] == 20
    assert res["known_errors"] is True
    assert len(res["classes"]) == 4


@pytest.mark.slow
def test_cluster_cli_table(noisy_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["cluster", "--run-dir", str(noisy_run), "--m", "20", "--method", "tracin", "--exact"])
        == 0
    )
    out = capsys.readouterr().out
    assert "J(flagged,flipped)" in out and "overall" in out


def test_agreement_cli(noisy_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "agreement",
                "--run-dir",
                str(noisy_run),
                "--fast",
                "tracin",
                "--exact",
                "hydra",
                "--samples",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "sign errors" in out and "Spearman" in out and "saved ->" in out
    assert (
        main(
            [
                "agreement",
                "--run-dir",
                str(noisy_run),
                "--fast",
                "hydra",
                "--exact",
                "hydra",
                "--samples",
                "0",
                "--json",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["sign_error_rate"] == 0.0 and res["spearman"] == 1.0


def test_bad_input_exits_2(noisy_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cluster", "--run-dir", str(noisy_run), "--method", "loss"]) == 2
    assert main(["agreement", "--run-dir", str(noisy_run), "--fast", "nope"]) == 2
    assert "error" in capsys.readouterr().err
