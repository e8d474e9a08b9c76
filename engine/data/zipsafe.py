"""Extract an uploaded zip without trusting it: no path traversal, no links, no zip bombs.

Every refusal is a DataError naming the offending entry. Extraction goes to a temporary folder
next to `dest` and is renamed into place only when every entry came out within the limits, so a
refused archive leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from engine.data.manifest import DataError

# Entries that archivers add and nobody means to extract (macOS resource forks, Finder files).
_JUNK_DIRS = ("__MACOSX",)
_JUNK_FILES = (".DS_Store", "Thumbs.db", "desktop.ini")
# Below this size a high compression ratio is normal (blank images, CSV text), not a bomb.
_RATIO_FLOOR_BYTES = 1 << 20
_CHUNK = 1 << 16


def _entry_parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The entry's path components, refusing absolute paths, drive letters and '..'."""
    raw = info.filename
    name = raw.replace("\\", "/")
    if "\x00" in name:
        raise DataError(f"zip entry {raw!r}: NUL character in the name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise DataError(f"zip entry {raw!r}: absolute path refused")
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if ".." in parts:
        raise DataError(f"zip entry {raw!r}: path traversal ('..') refused")
    return parts


def _kind(info: zipfile.ZipInfo) -> str:
    """'dir', 'file', or the refused kind ('symlink', 'special file')."""
    mode = info.external_attr >> 16
    if info.create_system == 3 and stat.S_IFMT(
        mode
    ):  # Unix file type present (often only perms are)
        if stat.S_ISLNK(mode):
            return "symlink"
        if stat.S_ISDIR(mode):
            return "dir"
        if not stat.S_ISREG(mode):
            return "special file"
    return "dir" if info.is_dir() else "file"


def extract_zip_safely(
    zip_path: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    max_files: int = 100_000,
    max_bytes: int = 2_000_000_000,
    max_ratio: float = 200,
) -> Path:
    """Extract `zip_path` into `dest` (which must not exist or be empty) and return the root:
    the single top-level folder if the archive has exactly one, else `dest`.

    Refused (DataError naming the entry): '..' or absolute paths, symlinks and special files,
    duplicate names, more than `max_files` files, more than `max_bytes` uncompressed in total
    (declared or actually written), and entries above 1 MiB compressed more than `max_ratio`:1.
    """
    src, out = Path(zip_path), Path(dest)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: destination exists and is not an empty folder")
    try:
        zf = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{src}: not a readable zip file ({e})") from e
    with zf:
        plan: list[tuple[zipfile.ZipInfo, tuple[str, ...], bool]] = []
        seen: set[tuple[str, ...]] = set()
        n_files = declared = compressed = 0
        for info in zf.infolist():
            parts = _entry_parts(info)
            if not parts or parts[0] in _JUNK_DIRS or parts[-1] in _JUNK_FILES:
                continue
            kind = _kind(info)
            if kind not in ("dir", "file"):
                raise DataError(f"zip entry {info.filename!r}: {kind} refused")
            if info.flag_bits & 0x1:
                raise DataError(f"zip entry {info.filename!r}: encrypted entries are not supported")
            key = parts
            if kind == "file":
                if key in seen:
                    raise DataError(f"zip entry {info.filename!r}: appears twice in the archive")
                seen.add(key)
                n_files += 1
                if n_files > max_files:
                    raise DataError(
                        f"zip entry {info.filename!r}: more than {max_files} files in the archive"
                    )
                declared += info.file_size
                compressed += info.compress_size
                if declared > max_bytes:
                    raise DataError(
                        f"zip entry {info.filename!r}: the archive unpacks to more than {max_bytes} bytes"
                    )
                if info.file_size > _RATIO_FLOOR_BYTES and info.file_size > max_ratio * max(
                    info.compress_size, 1
                ):
                    raise DataError(
                        f"zip entry {info.filename!r}: compression ratio "
                        f"{info.file_size / max(info.compress_size, 1):.0f}:1 above {max_ratio:g}:1 (zip bomb?)"
                    )
            plan.append((info, parts, kind == "dir"))
        if declared > _RATIO_FLOOR_BYTES and declared > max_ratio * max(compressed, 1):
            raise DataError(
                f"{src}: total compression ratio {declared / max(compressed, 1):.0f}:1 above "
                f"{max_ratio:g}:1 (zip bomb?)"
            )
        if n_files == 0:
            raise DataError(f"{src}: the zip holds no files")

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
        try:
            _write_entries(zf, plan, tmp, max_bytes=max_bytes)
            if out.exists():
                out.rmdir()
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    tops = {parts[0] for _, parts, is_dir in plan if is_dir or len(parts) > 1}
    loose = any(len(parts) == 1 and not is_dir for _, parts, is_dir in plan)
    if len(tops) == 1 and not loose:
        return out / next(iter(tops))
    return out


def _write_entries(
    zf: zipfile.ZipFile,
    plan: list[tuple[zipfile.ZipInfo, tuple[str, ...], bool]],
    root: Path,
    *,
    max_bytes: int,
) -> None:
    """Write the planned entries under `root`, counting the bytes actually inflated."""
    real_root = root.resolve()
    written = 0
    for info, parts, is_dir in plan:
        target = root.joinpath(*parts)
        if not target.resolve().is_relative_to(real_root):  # belt and braces after _entry_parts
            raise DataError(f"zip entry {info.filename!r}: resolves outside the destination")
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        try:
            with zf.open(info) as f_in, open(target, "xb") as f_out:
                while chunk := f_in.read(_CHUNK):
                    size += len(chunk)
                    written += len(chunk)
                    if size > info.file_size:
                        raise DataError(
                            f"zip entry {info.filename!r}: inflates past its declared size (zip bomb?)"
                        )
                    if written > max_bytes:
                        raise DataError(
                            f"zip entry {info.filename!r}: the archive unpacks to more than {max_bytes} bytes"
                        )
                    f_out.write(chunk)
        except FileExistsError as e:
            raise DataError(f"zip entry {info.filename!r}: clashes with another entry") from e
        except (
            zipfile.BadZipFile,
            zipfile.LargeZipFile,
            EOFError,
            NotImplementedError,
            RuntimeError,
        ) as e:
            raise DataError(f"zip entry {info.filename!r}: cannot be extracted ({e})") from e
        except OSError as e:
            raise DataError(f"zip entry {info.filename!r}: cannot be extracted ({e})") from e
        os.chmod(target, 0o644)
