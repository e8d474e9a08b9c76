"""Helpers that write small image fixtures with Pillow (imported by the data tests)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def pattern(seed: int, size: tuple[int, int] = (12, 12)) -> np.ndarray:
    """A deterministic (H, W) uint8 image that differs per seed."""
    return np.random.default_rng(seed).integers(0, 256, size=size, dtype=np.uint8)


def write_image(path: Path, array: np.ndarray, *, fmt: str = "PNG") -> Path:
    """Save `array` ((H, W) or (H, W, C)) as an image file, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)
    return path


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def make_folder(root: Path, classes: dict[str, int], *, size: tuple[int, int] = (12, 12)) -> Path:
    """root/<class>/<i>.png, `classes[name]` grayscale images per class."""
    seed = 0
    for name, n in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            write_image(root / name / f"{i:03d}.png", pattern(seed, size))
            seed += 1
    return root
