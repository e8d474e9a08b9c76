from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from engine.cli import main


def test_train_verify_info(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    run = str(tmp_path / "r")
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--n-train",
                "150",
                "--epochs",
                "2",
                "--noise",
                "0.1",
                "--run-dir",
                run,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "test accuracy" in out
    assert main(["verify", "--run-dir", run]) == 0
    assert "bit-exact" in capsys.readouterr().out
    assert main(["info", "--run-dir", run, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["status"]["state"] == "done"
    assert info["sizes"]["train"] == 150 and info["n_flipped"] == 15


def test_bad_input_is_one_line_without_traceback(tmp_path: Path) -> None:
    cases = [
        ["train", "--dataset", "nope", "--run-dir", str(tmp_path / "a")],
        ["train", "--lr", "-1", "--run-dir", str(tmp_path / "b")],
        ["train", "--classes", "1,x", "--run-dir", str(tmp_path / "c")],
        ["verify", "--run-dir", str(tmp_path / "missing")],
        ["info", "--run-dir", str(tmp_path)],
    ]
    for argv in cases:
        p = subprocess.run(
            [sys.executable, "-m", "engine.cli", *argv], capture_output=True, text=True, timeout=120
        )
        assert p.returncode == 2, (argv, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("retracer: error:"), p.stderr
        assert "Traceback" not in p.stderr
