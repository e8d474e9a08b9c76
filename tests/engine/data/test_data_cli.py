"""`retracer train` on file sources: an ImageFolder and a CSV written by the test."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from image_fixtures import make_folder

from engine.cli import main


def test_train_on_an_imagefolder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_folder(tmp_path / "pets", {"cat": 20, "dog": 20}, size=(8, 8))
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG broken")
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--dataset",
            f"imagefolder:{root}",
            "--model",
            "logreg",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--run-dir",
            str(run),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "test accuracy" in capsys.readouterr().out
    m = pd.read_csv(run / "manifest.csv")
    assert len(m) == 40 and set(m["sample_id"].str.split("/").str[0]) == {"cat", "dog"}
    assert all(Path(p).is_file() for p in m["path"])
    skipped = json.loads((run / "skipped.json").read_text())
    assert len(skipped) == 1 and "broken.png" in skipped[0]
    assert (run / "classes.txt").read_text().split() == ["cat", "dog"]


def test_train_on_a_csv_with_a_size_and_a_class_subset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_folder(tmp_path / "d", {"a": 15, "b": 15, "c": 15}, size=(10, 10))
    rows = [
        f"{p.relative_to(root).as_posix()},{p.parent.name}" for p in sorted(root.rglob("*.png"))
    ]
    (root / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    run = tmp_path / "run"
    argv = [
        "train",
        "--dataset",
        f"csv:{root / 'labels.csv'}",
        "--image-size",
        "6x6",
        "--classes",
        "0,2",
    ]
    argv += ["--model", "logreg", "--epochs", "1", "--batch-size", "8", "--run-dir", str(run)]
    assert main(argv) == 0, capsys.readouterr().err
    assert (run / "classes.txt").read_text().split() == ["a", "c"]


def test_bad_dataset_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train",
            "--dataset",
            f"imagefolder:{tmp_path / 'nope'}",
            "--model",
            "logreg",
            "--run-dir",
            str(tmp_path / "r"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "does not exist" in err
    assert not (tmp_path / "r").exists()
