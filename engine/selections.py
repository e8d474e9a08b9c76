"""The user's ticks and relabels, saved in ``<run_dir>/selections.json`` as they happen.

File: {"drop": [sample ids, sorted], "relabel": {sample id: class index}, "updated": unix time}.
Every change is a read-modify-write of only the ids it touches, under the run's JSON lock
(RunDir.update_json), so two browser tabs ticking different images both keep their ticks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.runs import RunDir

__all__ = [
    "SELECTIONS_FILE",
    "Selections",
    "clear_selections",
    "load_selections",
    "set_drop",
    "set_relabel",
]

SELECTIONS_FILE = "selections.json"


@dataclass
class Selections:
    """drop: sample ids ticked to be dropped; relabel: sample id -> new class index (0..K-1)."""

    drop: set[str] = field(default_factory=set)
    relabel: dict[str, int] = field(default_factory=dict)

    @property
    def ids(self) -> set[str]:
        """Every id the user touched (dropped or relabelled)."""
        return self.drop | set(self.relabel)

    def __len__(self) -> int:
        return len(self.ids)


def _empty() -> dict[str, Any]:
    return {"drop": [], "relabel": {}, "updated": None}


def _parse(raw: Any) -> Selections:
    raw = raw or {}
    return Selections(
        drop={str(i) for i in raw.get("drop", [])},
        relabel={str(k): int(v) for k, v in (raw.get("relabel") or {}).items()},
    )


def load_selections(run_dir: str | os.PathLike[str]) -> Selections:
    """The run's saved selections (empty when nothing was ticked yet)."""
    p = RunDir(run_dir).file(SELECTIONS_FILE)
    if not p.is_file():
        return Selections()
    from engine.runs import read_json

    return _parse(read_json(p))


def _modify(run_dir: str | os.PathLike[str], fn: Any) -> Selections:
    def upd(cur: dict[str, Any]) -> dict[str, Any]:
        sel = _parse(cur)
        fn(sel)
        return {
            "drop": sorted(sel.drop),
            "relabel": dict(sorted(sel.relabel.items())),
            "updated": time.time(),
        }

    return _parse(RunDir(run_dir).update_json(SELECTIONS_FILE, upd, default=_empty()))


def set_drop(
    run_dir: str | os.PathLike[str], ids: Iterable[str] | str, dropped: bool = True
) -> Selections:
    """Tick (dropped=True) or untick the given sample ids; returns the merged selections."""
    todo = [ids] if isinstance(ids, str) else [str(i) for i in ids]

    def fn(sel: Selections) -> None:
        if dropped:
            sel.drop.update(todo)
        else:
            sel.drop.difference_update(todo)

    return _modify(run_dir, fn)


def set_relabel(run_dir: str | os.PathLike[str], sample_id: str, label: int | None) -> Selections:
    """Relabel `sample_id` to class index `label`, or forget its relabel when label is None."""

    def fn(sel: Selections) -> None:
        if label is None:
            sel.relabel.pop(str(sample_id), None)
        else:
            sel.relabel[str(sample_id)] = int(label)

    return _modify(run_dir, fn)


def clear_selections(
    run_dir: str | os.PathLike[str], *, ids: Iterable[str] | None = None
) -> Selections:
    """Forget every tick and relabel (or only those of `ids`)."""
    only = None if ids is None else {str(i) for i in ids}

    def fn(sel: Selections) -> None:
        if only is None:
            sel.drop.clear()
            sel.relabel.clear()
        else:
            sel.drop.difference_update(only)
            for i in only:
                sel.relabel.pop(i, None)

    return _modify(run_dir, fn)
