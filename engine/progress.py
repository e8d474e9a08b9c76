"""A dependency-free progress bar for the CLI (stderr, redrawn in place when it is a terminal).

On a terminal the bar is redrawn at most every `min_interval` seconds; otherwise (a pipe, a log
file) one line is printed each time another tenth of the work is done, and at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

Progress = Callable[[int, int, float | None], None]
"""progress(done, total, value): `done` of `total` units finished; value (a loss) or None."""


class ProgressBar:
    def __init__(self, label: str, *, width: int = 30, min_interval: float = 0.2) -> None:
        self.label = label
        self.width = width
        self.min_interval = min_interval
        self._last = 0.0
        self._t0 = time.perf_counter()
        self._tty = sys.stderr.isatty()
        self._tenth = -1  # the last tenth printed when not on a terminal

    def __call__(self, done: int, total: int, loss: float | None = None) -> None:
        now = time.perf_counter()
        frac = done / total if total else 1.0
        finished = done >= total
        if self._tty:
            if not finished and now - self._last < self.min_interval:
                return
        else:
            tenth = int(frac * 10)
            if not finished and tenth <= self._tenth:
                return
            self._tenth = tenth
        self._last = now
        bar = "#" * int(frac * self.width)
        extra = f" loss {loss:.4f}" if loss is not None else ""
        line = f"{self.label} [{bar:<{self.width}}] {done}/{total} {now - self._t0:.1f}s{extra}"
        if self._tty:
            sys.stderr.write("\r" + line + ("\n" if finished else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
