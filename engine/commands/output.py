"""What every command shares in how it prints: ``--json`` and the progress bar.

With ``--json`` a command prints exactly one JSON object on stdout (NaN as null) and no progress
bar; the shape is the engine function's result, named in the flag's help text.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from engine.jsonvalues import jsonable
from engine.progress import ProgressBar

__all__ = [
    "add_json_flag",
    "json_out",
    "print_json",
    "print_saved",
    "print_skipped",
    "progress_bar",
]


def add_json_flag(p: argparse.ArgumentParser, shape: str) -> None:
    """Add ``--json``; `shape` says what the object holds (e.g. "engine.retrain.retrain's result")."""
    p.add_argument(
        "--json", action="store_true", help=f"print one JSON object instead of text: {shape}"
    )


def progress_bar(a: argparse.Namespace, label: str) -> ProgressBar | None:
    """A progress bar on stderr, or None under --json (and --quiet)."""
    quiet = getattr(a, "json", False) or getattr(a, "quiet", False)
    return None if quiet else ProgressBar(label)


def print_json(obj: Any) -> None:
    print(json.dumps(jsonable(obj), indent=2, allow_nan=False))  # the engine's key order


def json_out(a: argparse.Namespace, res: Any) -> bool:
    """Under --json print `res` as the command's one JSON object and say so (True)."""
    if getattr(a, "json", False):
        print_json(res)
        return True
    return False


def print_skipped(res: Any) -> None:
    """One line per method an experiment skipped, and why (res["skipped"]: {method: reason})."""
    for m, why in (res.get("skipped") or {}).items():
        print(f"skipped {m}: {why}")


def print_saved(res: Any) -> None:
    """Where an experiment saved its result, and why its figure has no PNG when it has none."""
    fig = res.get("figure") or {}
    print(f"saved -> {res['path']}" + (f" ({fig['note']})" if fig.get("note") else ""))
