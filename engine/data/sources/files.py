"""Images from files: ``imagefolder:PATH`` (PATH/<class>/<image>) and ``csv:FILE`` (path,label[,split]).

Every image becomes uint8 (C, H, W) at one common size: ``SourceOptions.image_size`` or, if None, the
most common size among the files (bilinear resampling). If any image is colour, all become 3-channel
RGB; otherwise 1-channel. Palette, alpha (composited on white), CMYK and 16-bit images are converted.
Unreadable files are skipped and listed in ``ImageSet.skipped`` as ``"path: reason"`` (or refused
with a DataError when ``skip_bad`` is False). Pillow's decompression-bomb guard stays on.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.data.images import load_images
from engine.data.manifest import DataError, ImageSet
from engine.data.sources.base import SourceOptions, register

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
    "": "",
}
_INT = re.compile(r"^[+-]?\d+$")


def build_image_set(
    paths: Sequence[Path],
    ids: Sequence[str],
    labels: Sequence[int],
    class_names: Sequence[str],
    options: SourceOptions,
    *,
    split: Sequence[str] | None = None,
    report: Sequence[str] = (),
    where: str,
) -> ImageSet:
    """Decode, drop unreadable files and classes left without images, and stack into an ImageSet."""
    arrays, (h, w), skipped = load_images(
        paths, image_size=options.image_size, skip_bad=options.skip_bad, progress=options.progress
    )
    keep = [i for i, a in enumerate(arrays) if a is not None]
    present = sorted({labels[i] for i in keep})
    skipped = list(report) + skipped
    for c in range(len(class_names)):
        if c not in present and any(lab == c for lab in labels):
            skipped.append(
                f"{where}: class {class_names[c]!r} has no readable images; class skipped"
            )
    if len(present) < 2:
        names = [class_names[c] for c in present]
        raise DataError(
            f"{where}: needs at least two classes with readable images, found {len(present)} {names}"
        )
    remap = {old: new for new, old in enumerate(present)}
    channels = 3 if any(arrays[i].ndim == 3 for i in keep) else 1  # type: ignore[union-attr]
    out = np.empty((len(keep), channels, h, w), dtype=np.uint8)
    for j, i in enumerate(keep):
        a = arrays[i]
        assert a is not None
        out[j] = a.transpose(2, 0, 1) if a.ndim == 3 else a[None]
    return ImageSet(
        images=torch.from_numpy(out),
        labels=torch.tensor([remap[labels[i]] for i in keep], dtype=torch.int64),
        ids=[ids[i] for i in keep],
        class_names=[class_names[c] for c in present],
        paths=[str(paths[i]) for i in keep],
        split=[split[i] for i in keep] if split is not None else [],
        skipped=skipped,
    )


# -- imagefolder ------------------------------------------------------------------------------
def _hidden(name: str) -> bool:
    return name.startswith(".") or name in ("__MACOSX", "Thumbs.db", "desktop.ini")


def _files_under(folder: Path) -> list[Path]:
    """Every non-hidden file below folder, sorted by its path relative to folder (posix). String
    work, one Path per file: pathlib's parsing dominated the scan of a 50k-image folder."""
    base = str(folder)
    cut = len(base) + 1
    found: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if not _hidden(d)]
        for f in filenames:
            if not _hidden(f):
                full = os.path.join(dirpath, f)
                found.append((full[cut:].replace(os.sep, "/"), full))
    found.sort()
    return [Path(full) for _, full in found]


def _unzipped(archive: Path) -> Path:
    """Extract a zipped ImageFolder (safely) into the cache, once per archive content."""
    from engine.data.zipsafe import extract_zip_safely

    digest = hashlib.sha256()
    with archive.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    cache = Path(os.environ.get("RETRACER_CACHE", Path.home() / ".cache" / "retracer"))
    dest = cache / "unzipped" / digest.hexdigest()[:20]
    if dest.is_dir():
        entries = [p for p in dest.iterdir() if not _hidden(p.name)]
        return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest
    return extract_zip_safely(archive, dest)


@register("imagefolder")
def load_imagefolder(arg: str, options: SourceOptions) -> ImageSet:
    """PATH/<class>/<image> (or a .zip of that). Class names are the sorted folder names; ids are
    paths relative to PATH (``cat/001.png``); ``paths`` are absolute."""
    if not arg:
        raise DataError("imagefolder needs a folder: --dataset imagefolder:PATH")
    root = Path(arg).expanduser()
    if not root.exists():
        raise DataError(f"imagefolder: {root} does not exist")
    if root.is_file() and root.suffix.lower() == ".zip":
        root = _unzipped(root)
    elif not root.is_dir():
        raise DataError(f"imagefolder: {root} is not a folder (expected PATH/<class>/<image>)")
    root = root.absolute()
    report: list[str] = []
    classes: list[tuple[str, list[Path]]] = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not _hidden(p.name)):
        files = _files_under(d)
        if files:
            classes.append((d.name, files))
        else:
            report.append(f"{d}: empty class folder; skipped")
    if not classes:
        loose = [p.name for p in root.iterdir() if p.is_file() and not _hidden(p.name)]
        hint = f"; it holds {len(loose)} files directly (e.g. {loose[0]!r})" if loose else ""
        raise DataError(
            f"{root} is not an ImageFolder: expected one subfolder per class with images in it "
            f"(PATH/<class>/<image>){hint}"
        )
    if len(classes) == 1:
        raise DataError(
            f"{root} has only one class folder ({classes[0][0]!r}); a classifier needs two or more"
        )
    paths: list[Path] = []
    labels: list[int] = []
    for c, (_, files) in enumerate(classes):
        paths += files
        labels += [c] * len(files)
    cut = len(str(root)) + 1  # every path is below root: ids by string, not pathlib
    ids = [str(p)[cut:].replace(os.sep, "/") for p in paths]
    names = [name for name, _ in classes]
    return build_image_set(paths, ids, labels, names, options, report=report, where=str(root))


# -- csv --------------------------------------------------------------------------------------
@dataclass
class LabelTable:
    """A parsed ``path,label[,split]`` CSV: one entry per row, in file order.

    paths: absolute file paths; ids: paths relative to the CSV's folder (posix); labels: indices
    into class_names; split: 'train' / 'val' / 'test' / '' (unassigned).
    """

    paths: list[Path]
    ids: list[str]
    labels: list[int]
    class_names: list[str]
    split: list[str]


def read_label_csv(csv_file: str | os.PathLike[str]) -> LabelTable:
    """Parse and check a label CSV. Integer labels are sorted numerically, string labels
    alphabetically; values are stripped of surrounding whitespace. DataError names the bad row."""
    f = Path(csv_file).expanduser()
    if not f.is_file():
        raise DataError(f"csv: {f} does not exist or is not a file")
    base = Path(os.path.normpath(f.parent.absolute()))
    real_base = base.resolve()
    try:
        with f.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{f}: not a readable UTF-8 CSV file ({e})") from e
    if not rows:
        raise DataError(f"{f}: empty file; expected a header with columns path,label[,split]")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in ("path", "label") if c not in header]
    if missing:
        raise DataError(
            f"{f}: missing column(s) {', '.join(missing)}; found columns {rows[0]} (need path,label[,split])"
        )
    dup = [h for h, n in Counter(header).items() if n > 1 and h in ("path", "label", "split")]
    if dup:
        raise DataError(f"{f}: column {dup[0]!r} appears more than once")
    col = {h: header.index(h) for h in ("path", "label", "split") if h in header}
    body = [(n, r) for n, r in enumerate(rows[1:], start=1) if any(v.strip() for v in r)]
    if not body:
        raise DataError(f"{f}: no data rows below the header")
    paths: list[Path] = []
    ids: list[str] = []
    raw_labels: list[str] = []
    split: list[str] = []
    seen: dict[str, int] = {}
    for n, r in body:
        where = f"{f}, row {n}"
        if len(r) != len(header):
            raise DataError(f"{where}: {len(r)} fields, the header has {len(header)}")
        p = r[col["path"]].strip().replace("\\", "/")
        label = r[col["label"]].strip()
        s = r[col["split"]].strip().lower() if "split" in col else ""
        if not p:
            raise DataError(f"{where}: empty path")
        if not label:
            raise DataError(f"{where}: empty label for {p!r}")
        if s not in SPLIT_ALIASES:
            raise DataError(
                f"{where}: unknown split {r[col['split']]!r}; use train, val or test (or leave it empty)"
            )
        full = Path(os.path.normpath(base / p))
        if not full.is_relative_to(base) or not full.resolve().is_relative_to(real_base):
            raise DataError(f"{where}: path {p!r} is outside the CSV's folder {base}")
        if not full.is_file():
            raise DataError(f"{where}: file {p!r} not found (looked for {full})")
        sid = full.relative_to(base).as_posix()
        if sid in seen:
            raise DataError(f"{where}: {p!r} is listed twice (also row {seen[sid]})")
        seen[sid] = n
        paths.append(full)
        ids.append(sid)
        raw_labels.append(label)
        split.append(SPLIT_ALIASES[s])
    if all(_INT.match(v) for v in raw_labels):
        values = sorted({int(v) for v in raw_labels})
        index = {v: i for i, v in enumerate(values)}
        labels = [index[int(v)] for v in raw_labels]
        names = [str(v) for v in values]
    else:
        names = sorted(set(raw_labels))
        index_s = {v: i for i, v in enumerate(names)}
        labels = [index_s[v] for v in raw_labels]
    if len(names) < 2:
        raise DataError(f"{f}: only one class ({names[0]!r}); a classifier needs two or more")
    return LabelTable(paths, ids, labels, names, split)


@register("csv")
def load_csv(arg: str, options: SourceOptions) -> ImageSet:
    """Rows of ``path,label[,split]``; paths relative to the CSV's folder, ids as written (normalised)."""
    if not arg:
        raise DataError("csv needs a file: --dataset csv:FILE")
    t = read_label_csv(arg)
    return build_image_set(
        t.paths, t.ids, t.labels, t.class_names, options, split=t.split, where=arg
    )
