"""What every data source shares: its options and the table of sources by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.data.manifest import ImageSet
from engine.progress import Progress

__all__ = ["SOURCES", "SourceFn", "SourceOptions", "register"]


@dataclass(frozen=True)
class SourceOptions:
    """Options every source accepts; a source ignores what does not apply to it.

    data_dir: where to look for the files (fashion-mnist, mnist, cifar10).
    image_size: (H, W) to resize to, or None to infer (imagefolder, csv).
    skip_bad: skip unreadable images and report them (True) or refuse the dataset (False).
    progress: counts decoded files (imagefolder, csv); not part of what the data is.
    """

    data_dir: str | None = None
    image_size: tuple[int, int] | None = None
    skip_bad: bool = True
    download: bool = True
    progress: Progress | None = None


SourceFn = Callable[[str, SourceOptions], ImageSet]
SOURCES: dict[str, SourceFn] = {}


def register(name: str) -> Callable[[SourceFn], SourceFn]:
    def deco(fn: SourceFn) -> SourceFn:
        SOURCES[name] = fn
        return fn

    return deco
