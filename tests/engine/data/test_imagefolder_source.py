"""imagefolder:PATH on small folders written by the test: layout, sizes, colour modes, bad files."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from image_fixtures import make_folder, pattern, png_bytes, write_image
from PIL import Image

from engine.data import DataError, SourceOptions, load_source


def load(path: Path, **opts: object) -> object:
    return load_source(f"imagefolder:{path}", SourceOptions(**opts))  # type: ignore[arg-type]


def test_layout_ids_paths_and_sorted_classes(folder: Path) -> None:
    s = load(folder)
    assert s.class_names == ["cat", "dog"]
    assert s.images.shape == (10, 1, 12, 12) and s.images.dtype == torch.uint8
    assert s.ids[:2] == ["cat/000.png", "cat/001.png"] and s.ids[-1] == "dog/003.png"
    assert s.labels.tolist() == [0] * 6 + [1] * 4
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in s.paths)
    assert [Path(p).relative_to(folder.absolute()).as_posix() for p in s.paths] == s.ids
    assert s.skipped == [] and set(s.split) == {""}
    # pixels are the files' pixels: dog/000.png is the 7th pattern written (seed 0..3 = dog)
    assert np.array_equal(s.images[s.ids.index("dog/000.png"), 0].numpy(), pattern(0))


def test_nested_hidden_and_loose_files(folder: Path) -> None:
    write_image(folder / "cat" / "sub" / "deep.png", pattern(99))
    (folder / "cat" / ".DS_Store").write_bytes(b"\x00junk")
    (folder / ".hidden_class").mkdir()
    write_image(folder / ".hidden_class" / "x.png", pattern(1))
    (folder / "README.md").write_text("not a class")
    s = load(folder)
    assert s.class_names == ["cat", "dog"]
    assert "cat/sub/deep.png" in s.ids
    assert s.skipped == []


def test_mixed_sizes_are_resized_to_the_most_common(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "f", {"a": 3, "b": 3}, size=(12, 12))
    write_image(root / "a" / "big.png", pattern(7, (30, 20)))
    write_image(root / "b" / "wide.png", pattern(8, (6, 40)))
    s = load(root)
    assert s.images.shape == (8, 1, 12, 12)
    sized = load(root, image_size=(9, 7))
    assert sized.images.shape == (8, 1, 9, 7)
    with pytest.raises(DataError, match="positive"):
        load(root, image_size=(0, 7))


def test_one_rgb_image_makes_every_image_three_channels(folder: Path) -> None:
    rgb = np.zeros((12, 12, 3), np.uint8)
    rgb[..., 0] = 200
    write_image(folder / "dog" / "red.png", rgb)
    write_image(folder / "dog" / "red.jpg", rgb, fmt="JPEG")
    s = load(folder)
    assert s.images.shape[1] == 3
    gray = s.images[s.ids.index("cat/000.png")]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    red = s.images[s.ids.index("dog/red.png")]
    assert red[0].min() == 200 and red[1].max() == 0


def test_modes_are_converted_sensibly(tmp_path: Path) -> None:
    root = tmp_path / "modes"
    n = (8, 8)
    write_image(root / "a" / "l.png", np.full(n, 50, np.uint8))
    Image.fromarray(np.full(n, 100 * 257, np.uint16)).save(_mk(root / "a" / "i16.png"))  # 16-bit
    Image.new("1", (8, 8), 1).save(_mk(root / "a" / "bw.png"))
    la = Image.merge(
        "LA", [Image.new("L", (8, 8), 0), Image.new("L", (8, 8), 0)]
    )  # fully transparent
    la.save(_mk(root / "b" / "la.png"))
    Image.new("L", (8, 8), 30).convert("P").save(_mk(root / "b" / "p_gray.png"))
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(_mk(root / "b" / "f.tif"))
    s = load(root)
    assert s.images.shape == (6, 1, 8, 8), "no colour image, so one channel"
    px = {i: int(s.images[k, 0, 0, 0]) for k, i in enumerate(s.ids)}
    assert px == {
        "a/bw.png": 255,
        "a/i16.png": 100,
        "a/l.png": 50,
        "b/f.tif": 128,
        "b/la.png": 255,
        "b/p_gray.png": 30,
    }

    Image.new("RGBA", (8, 8), (10, 20, 30, 255)).save(_mk(root / "b" / "rgba.png"))
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(_mk(root / "b" / "cmyk.jpg"))
    Image.new("RGB", (8, 8), (0, 0, 255)).convert("P").save(_mk(root / "a" / "p_blue.png"))
    s = load(root)
    assert s.images.shape == (9, 3, 8, 8)
    assert s.images[s.ids.index("b/rgba.png"), :, 0, 0].tolist() == [10, 20, 30]
    assert s.images[s.ids.index("a/p_blue.png"), :, 0, 0].tolist() == [0, 0, 255]
    assert s.images[s.ids.index("b/cmyk.jpg"), :, 0, 0].min() >= 250  # no ink = white


def _mk(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _add_bad_files(root: Path) -> dict[str, Path]:
    good = png_bytes(pattern(3, (12, 12)))
    bad = {
        "corrupt": root / "cat" / "corrupt.png",
        "truncated": root / "dog" / "truncated.png",
        "zero": root / "dog" / "zero.png",
        "text": root / "cat" / "notes.txt",
    }
    bad["corrupt"].write_bytes(good[:16] + b"\xff" * (len(good) - 16))
    bad["truncated"].write_bytes(good[: len(good) // 2])
    bad["zero"].write_bytes(b"")
    bad["text"].write_text("this is not an image\n")
    return bad


def test_unreadable_files_are_skipped_and_reported(folder: Path) -> None:
    bad = _add_bad_files(folder)
    s = load(folder)
    assert len(s.ids) == 10 and not any(
        i.endswith(("corrupt.png", "truncated.png", "zero.png", "notes.txt")) for i in s.ids
    )
    assert len(s.skipped) == 4
    for p in bad.values():
        assert any(entry.startswith(f"{p.absolute()}: ") for entry in s.skipped), p
    reasons = " | ".join(s.skipped)
    assert "0 bytes" in reasons and "not an image" in reasons and "truncated" in reasons


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "zero", "text"])
def test_unreadable_file_is_refused_when_asked(folder: Path, kind: str) -> None:
    bad = _add_bad_files(folder)
    for k, p in bad.items():
        if k != kind:
            p.unlink()
    with pytest.raises(DataError, match=bad[kind].name):
        load(folder, skip_bad=False)


def test_empty_class_folder_is_skipped_with_a_report(folder: Path) -> None:
    (folder / "bird").mkdir()
    s = load(folder)
    assert s.class_names == ["cat", "dog"]
    assert len(s.skipped) == 1 and "bird" in s.skipped[0] and "empty class folder" in s.skipped[0]


def test_class_with_only_unreadable_files_is_dropped(folder: Path) -> None:
    (folder / "ant").mkdir()
    (folder / "ant" / "a.png").write_bytes(b"")
    s = load(folder)
    assert s.class_names == ["cat", "dog"] and set(s.labels.tolist()) == {0, 1}
    assert any("'ant'" in e and "no readable images" in e for e in s.skipped)


def test_decompression_bomb_guard_stays_on(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_image(folder / "cat" / "huge.png", pattern(5, (64, 64)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64*64 > 2 * 1000: Pillow refuses
    s = load(folder)
    assert "cat/huge.png" not in s.ids
    assert any("huge.png" in e and "decompression-bomb" in e for e in s.skipped)


def test_not_an_image_folder(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    write_image(loose / "a.png", pattern(0))
    with pytest.raises(DataError, match="not an ImageFolder.*a.png"):
        load(loose)
    with pytest.raises(DataError, match="does not exist"):
        load(tmp_path / "missing")
    with pytest.raises(DataError, match="not a folder"):
        load(loose / "a.png")
    with pytest.raises(DataError, match="needs a folder"):
        load_source("imagefolder:")
    empty_classes = tmp_path / "empty"
    (empty_classes / "a").mkdir(parents=True)
    (empty_classes / "b").mkdir()
    with pytest.raises(DataError, match="not an ImageFolder"):
        load(empty_classes)


def test_single_class_is_refused(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "one", {"only": 3})
    with pytest.raises(DataError, match="only one class.*'only'"):
        load(root)
    (root / "other").mkdir()
    (root / "other" / "bad.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="at least two classes"):
        load(root)


def test_zipped_image_folder(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRACER_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(folder.rglob("*.png")):
            z.write(p, f"pets/{p.relative_to(folder).as_posix()}")
    a = load(archive)
    b = load(archive)  # second time from the cache
    ref = load(folder)
    assert a.ids == b.ids == ref.ids and a.class_names == ref.class_names
    assert torch.equal(a.images, ref.images)


def test_thread_pool_gives_the_same_result_as_a_plain_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.data.images as images

    root = make_folder(tmp_path / "many", {"a": 40, "b": 40})
    write_image(root / "a" / "odd.png", pattern(1, (20, 20)))
    (root / "b" / "bad.png").write_bytes(b"")
    serial = load(root)
    monkeypatch.setattr(images, "_THREADS_ABOVE_BYTES", 0)  # every folder counts as large files
    assert images.worth_threads([Path(p) for p in serial.paths]) == ((os.cpu_count() or 1) >= 2)
    threaded = load(root)
    assert threaded.ids == serial.ids and threaded.skipped == serial.skipped
    assert torch.equal(threaded.images, serial.images)


def test_past_the_memory_budget_headers_choose_the_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.data.images as images

    root = make_folder(tmp_path / "f", {"a": 5, "b": 5}, size=(12, 12))
    write_image(root / "a" / "0big.png", pattern(9, (30, 30)))  # first file, odd size
    (root / "b" / "0zero.png").write_bytes(b"")
    (root / "b" / "zz.txt").write_text("text")
    whole = load(root)
    monkeypatch.setattr(images, "_NATIVE_BUDGET_BYTES", 0)
    monkeypatch.setattr(
        images, "_CHUNK_FILES", 3
    )  # 3 files decoded natively, the rest header-first
    budget = load(root)
    assert budget.images.shape == whole.images.shape == (11, 1, 12, 12)
    assert budget.ids == whole.ids and sorted(budget.skipped) == sorted(whole.skipped)
    assert torch.equal(budget.images, whole.images)
