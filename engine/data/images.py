"""Decode image files into uint8 arrays at one common size (for imagefolder and csv sources).

Grayscale stays 1-channel (H, W), colour becomes RGB (H, W, 3); palette images, alpha (composited
on white), CMYK, 16-bit and float images are converted. Files that cannot be read are reported as
``"path: reason"``; Pillow's decompression-bomb guard stays on. A small thread pool decodes.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps

from engine.data.manifest import DataError

_NATIVE_BUDGET_BYTES = 512 << 20  # decode at native size up to this much, then read headers first
_CHUNK_FILES = 2048
_THREADS_ABOVE_BYTES = 32 << 10  # mean file size above which decoding uses a thread pool
_T = TypeVar("_T")
_R = TypeVar("_R")


class _Unreadable(Exception):
    """One file that cannot be turned into an image; the message is the reason."""


# -- decoding ---------------------------------------------------------------------------------
def _open(path: Path) -> Image.Image:
    try:
        if path.stat().st_size == 0:
            raise _Unreadable("empty file (0 bytes)")
        return Image.open(path)
    except _Unreadable:
        raise
    except Image.DecompressionBombError as e:
        raise _Unreadable(f"refused by the decompression-bomb guard ({e})") from e
    except Image.UnidentifiedImageError as e:
        raise _Unreadable("not an image, or its header is corrupt") from e
    except Exception as e:  # a broken header can raise nearly anything inside a Pillow plugin
        raise _Unreadable(f"cannot open ({type(e).__name__}: {e})") from e


def _probe_size(path: Path) -> tuple[int, int]:
    """(H, W) from the header alone, honouring EXIF rotation."""
    with _open(path) as im:
        w, h = im.size
        if im.format in ("JPEG", "MPO", "TIFF", "WEBP") and im.getexif().get(0x0112, 1) in (
            5,
            6,
            7,
            8,
        ):
            w, h = h, w
        return h, w


def _scale_to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    """16-bit / 32-bit integer or float pixels -> uint8 0..255."""
    a = a.astype(np.float64)
    if mode.startswith("I;16"):
        a = a / 257.0
    elif mode == "F":
        a = a * 255.0 if a.size and np.nanmax(a) <= 1.0 else a
    elif a.size and a.max() > 255:
        a = a / 257.0 if a.max() <= 65535 else a * (255.0 / a.max())
    return np.clip(np.nan_to_num(np.round(a)), 0, 255).astype(np.uint8)


def _on_white(a: np.ndarray) -> np.ndarray:
    """Composite (H, W, C + 1) with alpha last onto white; returns (H, W, C) uint8."""
    alpha = a[..., -1:].astype(np.float32) / 255.0
    out = a[..., :-1].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.round(out).astype(np.uint8)


def _decode(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """Read one file: uint8 (H, W) for grayscale or (H, W, 3) for colour, resized to `size` (H, W)."""
    with _open(path) as im:
        try:
            if size is not None and im.format == "JPEG":
                im.draft(im.mode, (size[1], size[0]))
            im.load()
            if im.format in ("JPEG", "MPO", "TIFF", "WEBP"):
                im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode == "1":
                a = np.asarray(im.convert("L"))
            elif mode in ("L", "RGB"):
                a = np.asarray(im)
            elif mode.startswith("I") or mode == "F":
                a = _scale_to_uint8(np.asarray(im), mode)
            elif mode in ("LA", "La"):
                a = _on_white(np.asarray(im.convert("LA")))[..., 0]
            elif mode in ("P", "PA"):
                rgba = np.asarray(im.convert("RGBA"))
                a = _on_white(rgba)
                if (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all():
                    a = a[..., 0]  # a grey palette stays grayscale
            elif mode in ("RGBA", "RGBa"):
                a = _on_white(np.asarray(im.convert("RGBA")))
            else:  # CMYK, YCbCr, LAB, HSV, RGBX, ...
                a = np.asarray(im.convert("RGB"))
            if size is not None:
                a = _resize(a, size)
            return np.ascontiguousarray(a, dtype=np.uint8)
        except Image.DecompressionBombError as e:
            raise _Unreadable(f"refused by the decompression-bomb guard ({e})") from e
        except OSError as e:
            raise _Unreadable(f"corrupt or truncated image ({e})") from e
        except Exception as e:
            raise _Unreadable(f"cannot decode ({type(e).__name__}: {e})") from e


def _parallel_map(fn: Callable[[_T], _R], items: Sequence[_T], *, threads: bool) -> list[_R]:
    if not threads or len(items) < 64:
        return [fn(x) for x in items]
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items, chunksize=16))


def worth_threads(paths: Sequence[Path]) -> bool:
    """Threads pay off when decoding dominates (large files: Pillow's codecs release the GIL);
    for small images Python overhead dominates and a plain loop is faster."""
    if len(paths) < 64 or (os.cpu_count() or 1) < 2:
        return False
    sample = paths[:: max(1, len(paths) // 64)][:64]
    sizes = []
    for p in sample:
        with contextlib.suppress(OSError):
            sizes.append(p.stat().st_size)
    return bool(sizes) and sum(sizes) / len(sizes) > _THREADS_ABOVE_BYTES


def _attempt(fn: Callable[[Path], _R]) -> Callable[[Path], _R | str]:
    def run(p: Path) -> _R | str:
        try:
            return fn(p)
        except _Unreadable as e:
            return str(e)

    return run


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if a.shape[:2] == size:
        return a
    return np.asarray(Image.fromarray(a).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def load_images(
    paths: Sequence[Path], *, image_size: tuple[int, int] | None, skip_bad: bool
) -> tuple[list[np.ndarray | None], tuple[int, int], list[str]]:
    """Decode `paths` at one common size. Returns (arrays or None where skipped, (H, W), skipped).

    Without `image_size` the images are decoded once at their own size and the odd ones
    resized to the most common size; past a memory budget only the headers of the rest are read
    to choose the size, and the rest are decoded straight to it.
    """
    n = len(paths)
    skipped: list[str] = []
    results: list[np.ndarray | None] = [None] * n
    failed: set[int] = set()

    def fail(i: int, reason: str) -> None:
        if not skip_bad:
            raise DataError(
                f"{paths[i]}: {reason} (bad images are refused; without --refuse-bad-images they are skipped and reported)"
            )
        skipped.append(f"{paths[i]}: {reason}")
        failed.add(i)

    size = image_size
    todo = range(n)
    threads = worth_threads(paths)
    if size is None:
        sizes: Counter[tuple[int, int]] = Counter()
        used = start = 0
        while start < n and used <= _NATIVE_BUDGET_BYTES:
            chunk = range(start, min(n, start + _CHUNK_FILES))
            decoded = _parallel_map(
                _attempt(lambda p: _decode(p, None)), [paths[i] for i in chunk], threads=threads
            )
            for i, a in zip(chunk, decoded, strict=True):
                if isinstance(a, str):
                    fail(i, a)
                else:
                    results[i] = a
                    sizes[(a.shape[0], a.shape[1])] += 1
                    used += a.nbytes
            start = chunk.stop
        todo = range(start, n)
        for i, s in zip(
            todo,
            _parallel_map(_attempt(_probe_size), [paths[i] for i in todo], threads=threads),
            strict=True,
        ):
            if isinstance(s, str):
                fail(i, s)
            else:
                sizes[s] += 1
        if not sizes:
            raise DataError(f"none of the {n} image files could be read (first: {skipped[:1]})")
        size = max(sizes, key=lambda s: (sizes[s], s[0] * s[1], s))
        for i in range(start):
            native = results[i]
            if native is not None:
                results[i] = _resize(native, size)
    elif size[0] <= 0 or size[1] <= 0:
        raise DataError(f"image size must be positive, got {size[0]}x{size[1]}")
    target = (int(size[0]), int(size[1]))
    todo_ok = [i for i in todo if i not in failed]
    decoded = _parallel_map(
        _attempt(lambda p: _decode(p, target)), [paths[i] for i in todo_ok], threads=threads
    )
    for i, a in zip(todo_ok, decoded, strict=True):
        if isinstance(a, str):
            fail(i, a)
        else:
            results[i] = a
    return results, target, skipped
