"""csv:FILE (path,label[,split]) on small files written by the test."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from image_fixtures import pattern, write_image

from engine.data import DataError, DataSpec, SourceOptions, load_source, prepare_data


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """tmp_path/data/img/<i>.png for i in 0..11 and a CSV folder at tmp_path/data."""
    for i in range(12):
        write_image(tmp_path / "data" / "img" / f"{i}.png", pattern(i, (10, 10)))
    return tmp_path / "data"


def test_string_labels_sorted_with_splits(images: Path) -> None:
    rows = [
        [f"img/{i}.png", ["zebra", "ant", "moth"][i % 3], ["train", "val", "TEST"][i % 3]]
        for i in range(12)
    ]
    f = write_csv(images / "labels.csv", ["path", "label", "split"], rows)
    s = load_source(f"csv:{f}")
    assert s.class_names == ["ant", "moth", "zebra"]
    assert s.ids == [f"img/{i}.png" for i in range(12)]
    assert [s.class_names[y] for y in s.labels.tolist()] == [r[1] for r in rows]
    assert s.split == ["train", "val", "test"] * 4
    assert s.paths[0] == str((images / "img" / "0.png").absolute())
    assert np.array_equal(s.images[5, 0].numpy(), pattern(5, (10, 10)))


def test_int_labels_sort_numerically_and_extra_columns_are_ignored(images: Path) -> None:
    rows = [[str(i), f"./img/{i}.png", ["10", "2", "9"][i % 3]] for i in range(6)]
    f = write_csv(images / "sub" / ".." / "l.csv", ["note", " Path ", "LABEL"], rows)
    s = load_source(f"csv:{f}")
    assert s.class_names == ["2", "9", "10"]
    assert s.labels.tolist() == [2, 0, 1, 2, 0, 1]
    assert s.ids[0] == "img/0.png" and set(s.split) == {""}


def test_csv_skips_unreadable_images_and_reports_them(images: Path) -> None:
    (images / "img" / "bad.png").write_bytes(b"not a png")
    rows = [[f"img/{i}.png", str(i % 2)] for i in range(6)] + [["img/bad.png", "1"]]
    f = write_csv(images / "l.csv", ["path", "label"], rows)
    s = load_source(f"csv:{f}")
    assert len(s.ids) == 6 and len(s.skipped) == 1 and "bad.png" in s.skipped[0]
    with pytest.raises(DataError, match="bad.png"):
        load_source(f"csv:{f}", SourceOptions(skip_bad=False))


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        (["path", "lbl"], [["img/0.png", "a"]], "missing column.*label"),
        (["file", "label"], [["img/0.png", "a"]], "missing column.*path"),
        (
            ["path", "label", "split"],
            [["img/0.png", "a", "train"], ["img/1.png", "b", "holdout"]],
            "row 2.*unknown split 'holdout'",
        ),
        (["path", "label"], [["img/0.png", "a"], ["../outside.png", "b"]], "row 2.*outside"),
        (["path", "label"], [["img/0.png", "a"], ["/etc/hostname", "b"]], "row 2.*outside"),
        (
            ["path", "label"],
            [["img/0.png", "a"], ["img/missing.png", "b"]],
            "row 2.*missing.png.*not found",
        ),
        (["path", "label"], [["img/0.png", "a"], ["img/0.png", "b"]], "row 2.*listed twice.*row 1"),
        (["path", "label"], [["img/0.png", "a"], ["img/1.png", ""]], "row 2.*empty label"),
        (["path", "label"], [["img/0.png", "a"], ["", "b"]], "row 2.*empty path"),
        (["path", "label"], [["img/0.png", "a"], ["img/1.png", "a"]], "only one class"),
        (["path", "label"], [["img/0.png", "a", "x"]], "row 1.*3 fields"),
        (["path", "label"], [], "no data rows"),
        (["path", "label", "Path"], [["img/0.png", "a", "x"]], "more than once"),
    ],
)
def test_bad_tables_name_the_problem(
    images: Path, header: list[str], rows: list[list[str]], message: str
) -> None:
    (images.parent / "outside.png").write_bytes((images / "img" / "0.png").read_bytes())
    f = write_csv(images / "l.csv", header, rows)
    with pytest.raises(DataError, match=message):
        load_source(f"csv:{f}")


def test_missing_or_empty_csv(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_source(f"csv:{tmp_path / 'nope.csv'}")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty file"):
        load_source(f"csv:{tmp_path / 'empty.csv'}")
    (tmp_path / "latin.csv").write_bytes(b"path,label\n\xff\xfe.png,a\n")
    with pytest.raises(DataError, match="UTF-8"):
        load_source(f"csv:{tmp_path / 'latin.csv'}")
    with pytest.raises(DataError, match="needs a file"):
        load_source("csv:")


def test_symlink_escaping_the_folder_is_refused(images: Path, tmp_path: Path) -> None:
    secret = write_image(tmp_path / "secret" / "s.png", pattern(0, (10, 10)))
    os.symlink(secret, images / "img" / "link.png")
    f = write_csv(images / "l.csv", ["path", "label"], [["img/0.png", "a"], ["img/link.png", "b"]])
    with pytest.raises(DataError, match="row 2.*outside"):
        load_source(f"csv:{f}")


def test_csv_splits_drive_prepare_data(images: Path) -> None:
    for i in range(12, 40):
        write_image(images / "img" / f"{i}.png", pattern(i, (10, 10)))
    rows = [[f"img/{i}.png", "ab"[i % 2], "test" if i < 8 else "train"] for i in range(40)]
    f = write_csv(images / "l.csv", ["path", "label", "split"], rows)
    b = prepare_data(DataSpec(dataset=f"csv:{f}", val_fraction=0.25))
    assert sorted(b.test.ids) == sorted(f"img/{i}.png" for i in range(8))
    assert len(b.val) == 8 and len(b.train) == 24  # validation carved out of train, per class
    assert set(b.val.ids).isdisjoint(b.train.ids)
    m = b.manifest.set_index("sample_id")
    assert m.loc["img/3.png", "path"] == str((images / "img" / "3.png").absolute())
    assert torch.equal(b.test.labels, torch.tensor([i % 2 for i in range(8)])[_order(b.test.ids)])


def _order(ids: list[str]) -> list[int]:
    return [int(i.split("/")[1].split(".")[0]) for i in ids]
