"""A dependency-free progress bar for the CLI (stderr, redrawn in place when it is a terminal)."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(self, label: str, *, width: int = 30, min_interval: float = 0.2) -> None:
        self.label = label
        self.width = width
        self.min_interval = min_interval
        self._last = 0.0
        self._t0 = time.perf_counter()
        self._tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int, loss: float | None = None) -> None:
        now = time.perf_counter()
        if done < total and now - self._last < self.min_interval:
            return
        self._last = now
        frac = done / total if total else 1.0
        bar = "#" * int(frac * self.width)
        extra = f" loss {loss:.4f}" if loss is not None else ""
        line = f"{self.label} [{bar:<{self.width}}] {done}/{total} {now - self._t0:.1f}s{extra}"
        if self._tty:
            sys.stderr.write("\r" + line + ("\n" if done >= total else ""))
        elif done >= total or int(frac * 10) != int((done - 1) / max(total, 1) * 10):
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
