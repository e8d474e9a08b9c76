"""Decode image files into uint8 arrays at one common size (for imagefolder and csv sources).

Grayscale stays 1-channel (H, W), colour becomes RGB (H, W, 3); palette images, alpha (composited
on white), CMYK, 16-bit and float images are converted. Files that cannot be read are reported as
``"path: reason"``; Pillow's decompression-bomb guard stays on. Large files decode in a thread
pool (Pillow's codecs release the GIL), many small ones in worker processes
(engine.imagedecode.decode_many), with a progress count.
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

from engine.data.manifest import DataError
from engine.imagedecode import attempt, decode, decode_many, probe_size, resize
from engine.progress import Progress

_NATIVE_BUDGET_BYTES = 512 << 20  # decode at native size up to this much, then read headers first
_CHUNK_FILES = 2048
_THREADS_ABOVE_BYTES = 32 << 10  # mean file size above which decoding uses a thread pool
_T = TypeVar("_T")
_R = TypeVar("_R")


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


def _decode_all(
    paths: Sequence[Path], size: tuple[int, int] | None, *, threads: bool,
    progress: Callable[[int], None] | None,
) -> list[np.ndarray | str]:  # fmt: skip
    """decode every path: a thread pool for large files, worker processes for many small ones
    (engine.imagedecode.decode_many), else this process."""
    if threads:
        got = _parallel_map(attempt(lambda p: decode(p, size)), list(paths), threads=True)
        if progress is not None:
            progress(len(got))
        return got
    return decode_many(paths, size, progress=progress)


def load_images(
    paths: Sequence[Path],
    *,
    image_size: tuple[int, int] | None,
    skip_bad: bool,
    progress: Progress | None = None,
) -> tuple[list[np.ndarray | None], tuple[int, int], list[str]]:
    """Decode `paths` at one common size. Returns (arrays or None where skipped, (H, W), skipped).

    Without `image_size` the images are decoded once at their own size and the odd ones
    resized to the most common size; past a memory budget only the headers of the rest are read
    to choose the size, and the rest are decoded straight to it. progress(done, n, None) counts
    decoded files.
    """
    n = len(paths)
    skipped: list[str] = []
    results: list[np.ndarray | None] = [None] * n
    failed: set[int] = set()
    counted = 0

    def tick(base: int) -> Callable[[int], None] | None:
        if progress is None:
            return None
        return lambda k: progress(min(n, base + k), n, None)

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
        step = _CHUNK_FILES
        while start < n and used <= _NATIVE_BUDGET_BYTES:
            chunk = range(start, min(n, start + step))
            decoded = _decode_all([paths[i] for i in chunk], None, threads=threads,
                                  progress=tick(counted))  # fmt: skip
            counted += len(chunk)
            for i, a in zip(chunk, decoded, strict=True):
                if isinstance(a, str):
                    fail(i, a)
                else:
                    results[i] = a
                    sizes[(a.shape[0], a.shape[1])] += 1
                    used += a.nbytes
            start = chunk.stop
            # the next chunk as large as the budget left allows, at the mean size so far
            mean = used / max(1, start - len(failed))
            step = int(max(_CHUNK_FILES, (_NATIVE_BUDGET_BYTES - used) / max(mean, 1.0)))
        todo = range(start, n)
        for i, s in zip(
            todo,
            _parallel_map(attempt(probe_size), [paths[i] for i in todo], threads=threads),
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
                results[i] = resize(native, size)
    elif size[0] <= 0 or size[1] <= 0:
        raise DataError(f"image size must be positive, got {size[0]}x{size[1]}")
    target = (int(size[0]), int(size[1]))
    todo_ok = [i for i in todo if i not in failed]
    decoded = _decode_all([paths[i] for i in todo_ok], target, threads=threads,
                          progress=tick(counted))  # fmt: skip
    for i, a in zip(todo_ok, decoded, strict=True):
        if isinstance(a, str):
            fail(i, a)
        else:
            results[i] = a
    if progress is not None:
        progress(n, n, None)
    return results, target, skipped
