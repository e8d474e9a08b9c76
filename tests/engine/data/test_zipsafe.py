"""extract_zip_safely: normal archives come out; traversal, links, bombs and floods are refused."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from engine.data import DataError
from engine.data.zipsafe import extract_zip_safely


def make_zip(
    path: Path, entries: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED
) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


def nothing_left(tmp_path: Path, dest: Path) -> bool:
    """No destination and no partial folder next to it."""
    return not dest.exists() and not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_single_top_folder_is_the_root(tmp_path: Path) -> None:
    z = make_zip(
        tmp_path / "a.zip",
        {
            "pets/cat/1.png": b"c1",
            "pets/dog/2.png": b"d2",
            "__MACOSX/pets/._1.png": b"x",
            "pets/.DS_Store": b"x",
        },
    )
    root = extract_zip_safely(z, tmp_path / "out")
    assert root == tmp_path / "out" / "pets"
    assert (root / "cat" / "1.png").read_bytes() == b"c1" and (
        root / "dog" / "2.png"
    ).read_bytes() == b"d2"
    assert not (tmp_path / "out" / "__MACOSX").exists() and not (root / ".DS_Store").exists()


def test_several_top_entries_give_dest(tmp_path: Path) -> None:
    z = make_zip(
        tmp_path / "a.zip", {"cat/1.png": b"1", "dog/2.png": b"2", "labels.csv": b"path,label\n"}
    )
    assert extract_zip_safely(z, tmp_path / "out") == tmp_path / "out"
    assert (tmp_path / "out" / "labels.csv").is_file()


@pytest.mark.parametrize(
    "name",
    [
        "../evil.txt",
        "a/../../evil.txt",
        "/etc/evil.txt",
        "..\\evil.txt",
        "C:/evil.txt",
        "ok/../../x",
    ],
)
def test_path_traversal_is_refused(tmp_path: Path, name: str) -> None:
    z = make_zip(tmp_path / "a.zip", {"fine.txt": b"ok", name: b"pwned"})
    dest = tmp_path / "sub" / "out"
    with pytest.raises(DataError, match="zip entry.*(traversal|absolute)"):
        extract_zip_safely(z, dest)
    assert (
        not dest.exists()
        and not (tmp_path / "evil.txt").exists()
        and not (tmp_path / "sub" / "evil.txt").exists()
    )


def test_symlink_is_refused(tmp_path: Path) -> None:
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("data/ok.txt", b"ok")
        link = zipfile.ZipInfo("data/link")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(DataError, match="'data/link': symlink refused"):
        extract_zip_safely(z, tmp_path / "out")
    assert nothing_left(tmp_path, tmp_path / "out")


def test_zip_bomb_ratio_is_refused(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "bomb.zip", {"ok.txt": b"fine", "zeros.bin": b"\0" * (8 << 20)})
    with pytest.raises(DataError, match="'zeros.bin': compression ratio .* above 200:1"):
        extract_zip_safely(z, tmp_path / "out")
    assert nothing_left(tmp_path, tmp_path / "out")
    # Many medium entries that each stay under the per-entry floor still trip the total ratio.
    z = make_zip(tmp_path / "spread.zip", {f"p{i}.bin": b"\0" * (900 << 10) for i in range(4)})
    with pytest.raises(DataError, match="total compression ratio"):
        extract_zip_safely(z, tmp_path / "out2")
    # Small compressible files (text, blank images) are not bombs.
    z = make_zip(tmp_path / "small.zip", {"blank.txt": b"\0" * 50_000, "b.txt": b"x"})
    extract_zip_safely(z, tmp_path / "out3")


def test_too_many_files_and_too_many_bytes(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "many.zip", {f"d/{i}.txt": b"x" for i in range(5)})
    with pytest.raises(DataError, match="'d/3.txt': more than 3 files"):
        extract_zip_safely(z, tmp_path / "out", max_files=3)
    big = make_zip(
        tmp_path / "big.zip",
        {"a.bin": bytes(range(256)) * 40, "b.bin": bytes(range(256)) * 40},
        compression=zipfile.ZIP_STORED,
    )
    with pytest.raises(DataError, match="'b.bin': the archive unpacks to more than 15000 bytes"):
        extract_zip_safely(big, tmp_path / "out", max_bytes=15_000)
    assert nothing_left(tmp_path, tmp_path / "out")


def test_duplicates_bad_archives_and_busy_destinations(tmp_path: Path) -> None:
    z = tmp_path / "dup.zip"
    with zipfile.ZipFile(z, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("a.txt", b"1")
        zf.writestr("a.txt", b"2")
    with pytest.raises(DataError, match="'a.txt': appears twice"):
        extract_zip_safely(z, tmp_path / "out")
    (tmp_path / "junk.zip").write_bytes(b"this is no zip")
    with pytest.raises(DataError, match="not a readable zip"):
        extract_zip_safely(tmp_path / "junk.zip", tmp_path / "out")
    ok = make_zip(tmp_path / "ok.zip", {"a.txt": b"1"})
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(DataError, match="not an empty folder"):
        extract_zip_safely(ok, tmp_path / "busy")
    (tmp_path / "empty").mkdir()
    assert extract_zip_safely(ok, tmp_path / "empty") == tmp_path / "empty"
    with pytest.raises(DataError, match="holds no files"):
        extract_zip_safely(make_zip(tmp_path / "none.zip", {"d/": b""}), tmp_path / "out4")
