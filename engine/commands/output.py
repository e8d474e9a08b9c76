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

__all__ = ["add_json_flag", "progress_bar", "print_json"]


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
