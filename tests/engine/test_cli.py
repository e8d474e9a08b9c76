from __future__ import annotations

import argparse
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


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    from engine.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_subcommand_takes_json() -> None:
    subs = _subcommands()
    assert len(subs) >= 15
    missing = [
        n
        for n, p in subs.items()
        if "--json" not in {o for a in p._actions for o in a.option_strings}
    ]
    assert not missing, f"subcommands without --json: {missing}"


def test_json_output_is_one_object_and_nothing_else(tiny_copy: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    run = str(tiny_copy)
    for argv in (
        ["verify", "--run-dir", run, "--json"],
        ["influence", "--run-dir", run, "--method", "loss", "--top", "3", "--json"],
        ["resume", "--run-dir", run, "--json"],
    ):
        assert main(argv) == 0, argv
        cap = capsys.readouterr()
        out = json.loads(cap.out)  # the whole of stdout parses: no text line, no bar
        assert isinstance(out, dict) and out, argv
    assert out["final"]["epoch"] == 2  # resume of a finished run reports its last epoch
    assert main(["influence", "--run-dir", run, "--method", "loss", "--top", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 200 and len(res["most_harmful"]) == 3
    scores = [r["score"] for r in res["most_harmful"]]
    assert scores == sorted(scores)  # most harmful (most negative) first


def test_an_empty_drop_file_is_refused_before_any_retraining(tiny_copy: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    empty = tiny_copy / "empty.txt"
    empty.write_text("\n\n")
    assert main(["retrain", "--run-dir", str(tiny_copy), "--drop", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "is empty" in err and "Removing these 0" not in err
    assert not (tiny_copy / "experiments").exists()  # nothing was retrained or saved
    header_only = tiny_copy / "header.csv"
    header_only.write_text("sample_id\n")
    assert main(["retrain", "--run-dir", str(tiny_copy), "--drop", str(header_only)]) == 2
    assert "no ids" in capsys.readouterr().err


def test_methods_lists_every_option_and_influence_takes_them(tiny_copy: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from engine.influence.methods import method_names

    assert main(["methods", "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)["methods"]}
    assert list(listed) == method_names()
    assert [o["name"] for o in listed["itlm"]["options"]] == ["rounds", "keep", "epochs"]
    assert listed["hydra"]["hessian_free"] and not listed["sgd-influence"]["hessian_free"]
    run = str(tiny_copy)
    argv = ["influence", "--run-dir", run, "--method", "random", "--top", "1", "--json"]
    assert main([*argv, "--option", "seed=3"]) == 0
    three = json.loads(capsys.readouterr().out)["most_harmful"]
    params = json.loads((tiny_copy / "influence/random/val/params.json").read_text())
    assert params["options"] == {"seed": 3}
    assert main([*argv, "--option", "seed=4", "--overwrite"]) == 0
    assert json.loads(capsys.readouterr().out)["most_harmful"] != three
    assert main([*argv, "--option", "sead=4"]) == 2
    assert "expected KEY=VALUE with KEY one of seed" in capsys.readouterr().err
    assert main([*argv, "--option", "seed=x", "--overwrite"]) == 2
    assert "seed='x': expected int" in capsys.readouterr().err
