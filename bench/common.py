"""Helpers the bench scripts share: peak-memory sampling, best-of-n timing, and training a
benchmark run with a fallback to the bundled digits when a dataset is not installed.

The scripts run as `python bench/<name>.py`, so this folder is on sys.path and they import it as
`common`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class PeakRSS:
    """Samples /proc/self/statm in a thread; .peak_mb = max RSS above the level at start (MiB)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")
        self._stop = threading.Event()
        self.base = self.peak = self._rss()

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())

    @property
    def peak_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        out = fn()
        sec = time.perf_counter() - t0
    return out, sec, mem.peak_mb


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Run fn `repeat` times; (last output, fastest time, largest peak)."""
    best, peak, out = float("inf"), 0.0, None
    for _ in range(max(1, repeat)):
        out, sec, mb = timed(fn)
        best, peak = min(best, sec), max(peak, mb)
    return out, best, peak


def train_with_fallback(run_dir: Path, spec: Any, cfg: Any) -> tuple[Any, Any, str]:
    """Train `cfg` on `spec` into run_dir; if the dataset is missing, on all of the bundled digits.

    Returns (engine.train's result, the DataSpec used, a note saying so after a fallback, else "").
    """
    from engine.data import DataSpec
    from engine.data.manifest import DataError
    from engine.train import train

    try:
        return train(run_dir, spec, cfg), spec, ""
    except DataError as e:
        digits = DataSpec(dataset="digits", seed=0)
        note = f"{spec.dataset} unavailable ({e}); fell back to digits"
        return train(run_dir, digits, cfg, overwrite=True), digits, note


def colour_folder(root: Path, *, n: int, size: int, seed: int = 0) -> Path:
    """An ImageFolder of n RGB PNGs (size x size) made from Fashion-MNIST (digits when it is not
    installed): each grey image tinted with a random colour on a random background and resized.
    Written once; an existing complete folder is reused. Returns root."""
    import numpy as np
    from PIL import Image

    from engine.data import SourceOptions, load_source

    done = root / ".complete"
    if done.exists():
        return root
    try:
        src = load_source("fashion-mnist", SourceOptions())
    except Exception:  # noqa: BLE001 - not installed: the bundled digits
        src = load_source("digits", SourceOptions())
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(src.ids), size=n, replace=n > len(src.ids))
    fg = rng.integers(0, 256, size=(n, 3))
    bg = rng.integers(0, 256, size=(n, 3))
    for j, i in enumerate(pick.tolist()):
        g = src.images[i, 0].numpy().astype(np.float32)[..., None] / 255.0
        rgb = (g * fg[j] + (1 - g) * bg[j]).astype(np.uint8)
        img = Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR)
        folder = root / src.class_names[int(src.labels[i])].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"img_{j:06d}.png")
    done.write_text(str(n))
    return root
