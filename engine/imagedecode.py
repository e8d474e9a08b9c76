"""Decoding one image file into a uint8 array, and many of them in worker processes.

This module imports only Pillow and NumPy (not torch, not the rest of the engine), so a worker
process that runs it starts in a fraction of a second: for many small files (50k 32x32 PNGs)
decoding is Python-bound in Pillow, threads cannot help, and ``decode_many`` spreads the files
over fresh worker processes (``python -c``, one pipe each, no fork of a process that holds torch).
engine.data.images builds the sources' loading on it.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "Unreadable",
    "attempt",
    "decode",
    "decode_many",
    "probe_size",
    "resize",
    "serve",
    "start_workers",
]

_R = TypeVar("_R")
PROCESSES_FROM_FILES = 4096  # fewer files than this decode in the calling process
_CHUNK = 512  # files per request to a worker


class Unreadable(Exception):
    """One file that cannot be turned into an image; the message is the reason."""


def _open(path: Path) -> Image.Image:
    try:
        if path.stat().st_size == 0:
            raise Unreadable("empty file (0 bytes)")
        return Image.open(path)
    except Unreadable:
        raise
    except Image.DecompressionBombError as e:
        raise Unreadable(f"refused by the decompression-bomb guard ({e})") from e
    except Image.UnidentifiedImageError as e:
        raise Unreadable("not an image, or its header is corrupt") from e
    except Exception as e:  # a broken header can raise nearly anything inside a Pillow plugin
        raise Unreadable(f"cannot open ({type(e).__name__}: {e})") from e


def probe_size(path: Path) -> tuple[int, int]:
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


def decode(path: Path, size: tuple[int, int] | None) -> np.ndarray:
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
                a = resize(a, size)
            return np.ascontiguousarray(a, dtype=np.uint8)
        except Image.DecompressionBombError as e:
            raise Unreadable(f"refused by the decompression-bomb guard ({e})") from e
        except OSError as e:
            raise Unreadable(f"corrupt or truncated image ({e})") from e
        except Exception as e:
            raise Unreadable(f"cannot decode ({type(e).__name__}: {e})") from e


def resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """a (H, W[, 3]) uint8 resized to size (H, W), bilinear; unchanged when it has that size."""
    if a.shape[:2] == size:
        return a
    return np.asarray(Image.fromarray(a).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def attempt(fn: Callable[[Path], _R]) -> Callable[[Path], _R | str]:
    """fn, with an unreadable file's reason returned as a string instead of raised."""

    def run(p: Path) -> _R | str:
        try:
            return fn(p)
        except Unreadable as e:
            return str(e)

    return run


def _decode_chunk(paths: Sequence[str], size: tuple[int, int] | None) -> list[np.ndarray | str]:
    one = attempt(lambda p: decode(p, size))
    return [one(Path(p)) for p in paths]


def _send(stream: Any, head: Any, body: bytes = b"") -> None:
    """One message: a length-prefixed JSON header, then `body` (its length is in the header)."""
    data = json.dumps({"head": head, "body": len(body)}).encode()
    stream.write(struct.pack("<Q", len(data)) + data + body)
    stream.flush()


def _recv(stream: Any) -> tuple[Any, bytes]:
    prefix = stream.read(8)
    if len(prefix) < 8:
        raise EOFError("the decoding worker closed its pipe")
    (n,) = struct.unpack("<Q", prefix)
    msg = json.loads(stream.read(n))
    body = stream.read(msg["body"]) if msg["body"] else b""
    if len(body) != msg["body"]:
        raise EOFError("the decoding worker's answer was cut short")
    return msg["head"], body


def _pack(got: list[np.ndarray | str]) -> tuple[list[Any], bytes]:
    """Decoded chunk -> (per file: its array's shape or {"error": reason}, the arrays' bytes)."""
    head: list[Any] = [list(a.shape) if isinstance(a, np.ndarray) else {"error": a} for a in got]
    return head, b"".join(a.tobytes() for a in got if isinstance(a, np.ndarray))


def _unpack(head: list[Any], body: bytes) -> list[np.ndarray | str]:
    out: list[np.ndarray | str] = []
    at = 0
    for item in head:
        if isinstance(item, dict):
            out.append(str(item["error"]))
            continue
        n = int(np.prod(item))
        out.append(np.frombuffer(body, dtype=np.uint8, count=n, offset=at).reshape(item).copy())
        at += n
    return out


def serve() -> None:
    """A worker's loop: (paths, size) requests on stdin, decoded chunks on stdout, until EOF."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            (paths, size), _ = _recv(inp)
        except EOFError:
            return
        _send(out, *_pack(_decode_chunk(paths, None if size is None else tuple(size))))


def _workers_for(n_files: int) -> int:
    cores = os.cpu_count() or 1
    if n_files < PROCESSES_FROM_FILES or cores < 2:
        return 0
    return min(cores, 8, n_files // _CHUNK)


def decode_many(
    paths: Sequence[Path],
    size: tuple[int, int] | None,
    *,
    progress: Callable[[int], None] | None = None,
) -> list[np.ndarray | str]:
    """decode(p, size) of every path (an unreadable file's reason as a string), in order.

    Many files: worker processes (one per core, at most 8) take chunks of _CHUNK files while
    this process decodes too; a worker that fails leaves its chunk to this process. Requests and
    answers are a JSON header plus raw uint8 bytes: nothing is unpickled. progress(k)
    is called with the number of files decoded so far."""
    n = len(paths)
    chunks = [[str(p) for p in paths[i : i + _CHUNK]] for i in range(0, n, _CHUNK)]
    results: list[list[np.ndarray | str] | None] = [None] * len(chunks)
    done = 0

    def finished(i: int, got: list[np.ndarray | str]) -> None:
        nonlocal done
        results[i] = got
        done += len(got)
        if progress is not None:
            progress(done)

    procs = start_workers(_workers_for(n))
    try:
        todo = list(range(len(chunks)))
        busy: dict[int, int] = {}  # worker -> chunk
        for w, proc in enumerate(procs):  # one request each to start
            if todo:
                i = todo.pop()
                if _ask(proc, chunks[i], size):
                    busy[w] = i
                else:
                    todo.append(i)
        while todo or busy:
            if todo:  # this process decodes too, from the front
                i = todo.pop(0)
                finished(i, _decode_chunk(chunks[i], size))
            for w in list(busy):
                if todo and not _ready(procs[w]):
                    continue
                i = busy.pop(w)
                try:
                    got = _unpack(*_recv(procs[w].stdout))
                except (EOFError, OSError, ValueError, KeyError):
                    todo.append(i)  # the worker died: its chunk is decoded here
                    continue
                finished(i, got)
                if todo:
                    j = todo.pop()
                    if _ask(procs[w], chunks[j], size):
                        busy[w] = j
                    else:
                        todo.append(j)
    finally:
        for proc in procs:
            _stop(proc)
    return [a for chunk in results for a in (chunk or [])]


def start_workers(k: int) -> list[subprocess.Popen[bytes]]:
    if k == 0:
        return []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    code = "from engine.imagedecode import serve; serve()"
    return [
        subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )  # fmt: skip
        for _ in range(k)
    ]


def _ask(proc: subprocess.Popen[bytes], chunk: list[str], size: tuple[int, int] | None) -> bool:
    try:
        _send(proc.stdin, [chunk, size])
        return True
    except (BrokenPipeError, OSError):
        return False


def _ready(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the worker's answer can be read without waiting."""
    import select

    assert proc.stdout is not None
    return bool(select.select([proc.stdout], [], [], 0)[0])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()
