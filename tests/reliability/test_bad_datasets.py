"""Bad datasets at the CLI door (`retracer train --overwrite` over an existing run): each is one
clear line naming the offending folder, file, row or value, exit code 2, and the existing run is
left byte-for-byte as it was. Unreadable image files are skipped and reported (default) or refused
(--refuse-bad-images). The source-level behaviour is tested in tests/engine/data/."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.runs import read_json
from tests.reliability.conftest import FAST_TRAIN, error_line, image_folder, png, snapshot

Cli = Callable[..., tuple[int, str, str]]


def _refused(cli: Cli, victim: Path, dataset: str, *extra: str) -> str:
    """Train over `victim` on a bad dataset: exit 2, one error line, victim untouched."""
    before = snapshot(victim)
    rc, out, err = cli(
        "train", "--dataset", dataset, *FAST_TRAIN, *extra, "--run-dir", victim, "--overwrite"
    )
    assert rc == 2, (out, err)
    assert snapshot(victim) == before, "an existing run was modified by a refused dataset"
    return error_line(err)


# -- folders ---------------------------------------------------------------------------------------
def test_missing_folder(cli: Cli, victim: Path, tmp_path: Path) -> None:
    line = _refused(cli, victim, f"imagefolder:{tmp_path / 'nope'}")
    assert "nope does not exist" in line


def test_a_file_is_not_an_image_folder(cli: Cli, victim: Path, tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    assert "notes.txt is not a folder" in _refused(cli, victim, f"imagefolder:{f}")


def test_loose_images_are_not_an_image_folder(cli: Cli, victim: Path, tmp_path: Path) -> None:
    for i in range(3):
        png(tmp_path / "flat" / f"{i}.png", i)
    line = _refused(cli, victim, f"imagefolder:{tmp_path / 'flat'}")
    assert "is not an ImageFolder" in line and "'0.png'" in line


def test_one_class_only(cli: Cli, victim: Path, tmp_path: Path) -> None:
    root = image_folder(tmp_path / "one", {"cat": 6})
    line = _refused(cli, victim, f"imagefolder:{root}")
    assert "only one class folder ('cat')" in line


def test_every_image_of_all_but_one_class_unreadable(
    cli: Cli, victim: Path, tmp_path: Path
) -> None:
    root = image_folder(tmp_path / "f", {"cat": 6})
    (root / "dog").mkdir()
    (root / "dog" / "a.png").write_bytes(b"")
    line = _refused(cli, victim, f"imagefolder:{root}")
    assert "at least two classes with readable images" in line and "['cat']" in line


def test_unknown_class_numbers(cli: Cli, victim: Path) -> None:
    line = _refused(cli, victim, "digits", "--classes", "1,12")
    assert "--classes [12] not in this dataset" in line


# -- files -----------------------------------------------------------------------------------------
def _bomb_png(path: Path, side: int = 30_000) -> Path:
    """A valid PNG header claiming side x side pixels (900 M): Pillow must refuse it unread."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def _bad_file(kind: str, path: Path) -> str:
    """Write a bad image file of `kind`; returns the reason the report must give."""
    good = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(noise).save(good, format="PNG")  # big enough to cut inside the pixel data
    data = good.getvalue()
    if kind == "zero-byte":
        path.write_bytes(b"")
        return "empty file (0 bytes)"
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
        return "truncated"
    if kind == "not-an-image":
        path.write_text("this is a text file named .png\n")
        return "not an image"
    if kind == "decompression-bomb":
        _bomb_png(path)
        return "decompression-bomb guard"
    raise AssertionError(kind)


BAD_KINDS = ["zero-byte", "truncated", "not-an-image", "decompression-bomb"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_image_is_refused_on_request(cli: Cli, victim: Path, tmp_path: Path, kind: str) -> None:
    root = image_folder(tmp_path / "f", {"cat": 10, "dog": 10})
    reason = _bad_file(kind, root / "dog" / "bad.png")
    line = _refused(cli, victim, f"imagefolder:{root}", "--refuse-bad-images")
    assert f"{root / 'dog' / 'bad.png'}: " in line and reason in line


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_image_is_skipped_and_reported_by_default(cli: Cli, tmp_path: Path, kind: str) -> None:
    root = image_folder(tmp_path / "f", {"cat": 10, "dog": 10})
    bad = root / "dog" / "bad.png"
    reason = _bad_file(kind, bad)
    run = tmp_path / "run"
    rc, out, err = cli("train", "--dataset", f"imagefolder:{root}", *FAST_TRAIN, "--run-dir", run)
    assert rc == 0, err
    assert f"skipped 1 (full list in {run}/skipped.json)" in out and reason in out
    skipped = read_json(run / "skipped.json")
    assert len(skipped) == 1 and skipped[0].startswith(f"{bad}: ") and reason in skipped[0]
    from engine.verify import run_info

    assert run_info(run)["skipped"] == skipped  # what the app's Runs page lists
    ids = set(_ids(run))
    assert "dog/bad.png" not in ids and len(ids) == 20


def _ids(run: Path) -> list[str]:
    import pandas as pd

    return list(pd.read_csv(run / "manifest.csv")["sample_id"])


def test_empty_class_folder_is_skipped_and_reported(cli: Cli, tmp_path: Path) -> None:
    root = image_folder(tmp_path / "f", {"cat": 10, "dog": 10})
    (root / "bird").mkdir()
    rc, out, err = cli(
        "train", "--dataset", f"imagefolder:{root}", *FAST_TRAIN, "--run-dir", tmp_path / "r"
    )
    assert rc == 0, err
    assert f"{root / 'bird'}: empty class folder; skipped" in out
    assert (tmp_path / "r" / "classes.txt").read_text().split() == ["cat", "dog"]


def test_odd_but_valid_images_are_converted_not_skipped(cli: Cli, tmp_path: Path) -> None:
    """CMYK JPEG, 16-bit PNG, animated GIF (first frame), palette, RGBA, and mixed sizes."""
    root = image_folder(tmp_path / "f", {"cat": 8, "dog": 8})
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(root / "cat" / "cmyk.jpg")
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(root / "cat" / "deep16.png")
    frames = [Image.new("L", (8, 8), v) for v in (10, 200, 90)]
    frames[0].save(root / "dog" / "anim.gif", save_all=True, append_images=frames[1:])
    Image.new("RGBA", (12, 10), (10, 20, 30, 255)).save(root / "dog" / "rgba_big.png")
    Image.new("RGB", (8, 8), (0, 0, 255)).convert("P").save(root / "dog" / "palette.png")
    run = tmp_path / "r"
    rc, out, err = cli("train", "--dataset", f"imagefolder:{root}", *FAST_TRAIN, "--run-dir", run)
    assert rc == 0, err
    assert not (run / "skipped.json").exists() and "skipped" not in out
    from engine.data import DataBundle

    b = DataBundle.load(run)
    all_ids = b.train.ids + b.val.ids + b.test.ids
    assert len(all_ids) == 21 and b.train.images.shape[1:] == (3, 8, 8)  # colour -> RGB, 8x8
    images = {i: s.images[s.ids.index(i)] for s in (b.train, b.val, b.test) for i in s.ids}
    assert images["dog/anim.gif"].unique().tolist() == [10]  # the first frame
    assert images["cat/deep16.png"].unique().tolist() == [round(40000 / 257)]
    assert images["cat/cmyk.jpg"].min() >= 250  # no ink = white


# -- csv -------------------------------------------------------------------------------------------
@pytest.fixture
def table(tmp_path: Path) -> Path:
    root = image_folder(tmp_path / "imgs", {"cat": 6, "dog": 6})
    return root


def _csv(root: Path, text: str) -> Path:
    f = root / "labels.csv"
    f.write_text(text)
    return f


GOOD_ROWS = "".join(f"cat/{i:03d}.png,cat\ndog/{i:03d}.png,dog\n" for i in range(5))


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("path,lbl\ncat/000.png,cat\n", "missing column(s) label"),
        ("file,label\ncat/000.png,cat\n", "missing column(s) path"),
        ("path,label\n" + GOOD_ROWS + "cat/005.png,cat,extra\n", "row 11: 3 fields, the header has 2"),
        ("path,label,split\ncat/000.png,cat,holdout\n", "row 1: unknown split 'holdout'"),
        ("path,label\n" + GOOD_ROWS + "../outside.png,cat\n", "row 11: path '../outside.png' is outside"),
        ("path,label\n" + GOOD_ROWS + "/etc/hostname,cat\n", "row 11: path '/etc/hostname' is outside"),
        ("path,label\n" + GOOD_ROWS + "cat/./000.png,dog\n", "row 11: 'cat/./000.png' is listed twice (also row 1)"),
        ("path,label\n" + GOOD_ROWS + "cat/999.png,cat\n", "row 11: file 'cat/999.png' not found"),
        ("path,label\n" + GOOD_ROWS + "cat/005.png,\n", "row 11: empty label for 'cat/005.png'"),
        ("path,label\ncat/000.png,cat\ncat/001.png,cat\n", "only one class ('cat')"),
        ("path,label\n", "no data rows below the header"),
        ("", "empty file"),
    ],
)  # fmt: skip
def test_bad_csv_names_the_row_and_value(
    cli: Cli, victim: Path, table: Path, text: str, expect: str
) -> None:
    (table.parent / "outside.png").write_bytes((table / "cat" / "000.png").read_bytes())
    f = _csv(table, text)
    line = _refused(cli, victim, f"csv:{f}")
    assert str(f) in line and expect in line


def test_csv_with_extra_columns_is_accepted(cli: Cli, table: Path, tmp_path: Path) -> None:
    f = _csv(
        table,
        "path,label,notes\n"
        + GOOD_ROWS.replace(",cat\n", ",cat,x\n").replace(",dog\n", ",dog,y\n"),
    )
    rc, _, err = cli("train", "--dataset", f"csv:{f}", *FAST_TRAIN, "--run-dir", tmp_path / "r")
    assert rc == 0, err
    assert (tmp_path / "r" / "classes.txt").read_text().split() == ["cat", "dog"]


def test_csv_file_missing(cli: Cli, victim: Path, tmp_path: Path) -> None:
    line = _refused(cli, victim, f"csv:{tmp_path / 'none.csv'}")
    assert "none.csv does not exist" in line


def test_bad_image_size_value(cli: Cli, victim: Path) -> None:
    line = _refused(cli, victim, "digits", "--image-size", "big")
    assert "--image-size must look like 28x28, got 'big'" in line
