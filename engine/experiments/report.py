"""Where experiments live and how they are written: result.json, CSV tables, plotly figures.

Every experiment gets its own folder ``<run>/experiments/<kind>-<YYYYmmdd-HHMMSS>-<hex>/`` holding
``result.json`` (written atomically, last, so a folder with a result.json is complete), CSV tables
and figures (HTML always; PNG too when kaleido is installed).
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pandas as pd

from engine.runs import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json

EXPERIMENTS = "experiments"


def new_experiment_dir(run_dir: str | Path, kind: str) -> Path:
    """Create and return a fresh, uniquely named experiment folder inside the run directory."""
    root = Path(run_dir) / EXPERIMENTS
    root.mkdir(parents=True, exist_ok=True)
    while True:
        folder = root / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def save_result(folder: Path, result: dict[str, Any]) -> Path:
    """Write result.json atomically (with "id", "path" and "created" filled in if missing)."""
    result.setdefault("id", folder.name)
    result.setdefault("path", str(folder))
    result.setdefault("created", time.time())
    path = folder / "result.json"
    atomic_write_json(path, result)
    return path


def list_experiments(run_dir: str | Path, *, kind: str | None = None) -> list[dict[str, Any]]:
    """Every complete experiment of a run (its result.json dict), newest first; optionally one kind."""
    root = Path(run_dir) / EXPERIMENTS
    if not root.is_dir():
        return []
    out = []
    for f in root.glob("*/result.json"):
        try:
            r = read_json(f)
        except (OSError, ValueError):
            continue
        if kind is None or r.get("kind") == kind:
            r.setdefault("id", f.parent.name)
            r["path"] = str(f.parent)
            out.append(r)
    return sorted(out, key=lambda r: (r.get("created", 0.0), r["id"]), reverse=True)


def write_table(folder: Path, name: str, df: pd.DataFrame) -> Path:
    path = folder / f"{name}.csv"
    atomic_write_text(path, df.to_csv(index=False))
    return path


def write_figure(folder: Path, name: str, fig: Any) -> dict[str, Any]:
    """Write a plotly figure as <name>.html, and <name>.png if kaleido can render it.

    kaleido (the ``figures`` extra) drives a local Chrome or Chromium: the one it finds on PATH,
    or the one $BROWSER_PATH names (e.g. /usr/bin/chromium). It never downloads one here.
    Returns {"html": path, "png": path or None, "note": "" or why there is no PNG}.
    """
    html = folder / f"{name}.html"
    atomic_write_text(html, fig.to_html(include_plotlyjs=True, full_html=True))
    out: dict[str, Any] = {"html": str(html), "png": None, "note": ""}
    try:
        import kaleido  # noqa: F401
    except ImportError:
        out["note"] = "HTML only: kaleido is not installed (pip install 'retracer[figures]')"
        return out
    try:
        atomic_write_bytes(folder / f"{name}.png", fig.to_image(format="png", scale=2))
        out["png"] = str(folder / f"{name}.png")
    except Exception as e:  # kaleido needs a browser; never fail the experiment for a picture
        out["note"] = f"HTML only: PNG export failed ({type(e).__name__}: {e})"
    return out


def accuracy_markers(table: Any, name: str) -> Any:
    """Mean test accuracy per method (markers with one-std error bars) on the right axis "y2":
    the trace the benchmark figures draw beside their bars."""
    import plotly.graph_objects as go

    return go.Scatter(
        x=table["method"], y=table["test_acc"],
        error_y={"type": "data", "array": table["test_acc_std"]},
        mode="markers", name=name, yaxis="y2", marker={"size": 10},
    )  # fmt: skip
