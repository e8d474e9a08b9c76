"""Data sources: each turns a name (and options) into an ImageSet.

``load_source("digits")``, ``load_source("imagefolder:PATH")``, ``load_source("csv:FILE")``...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.data.manifest import DataError, ImageSet


@dataclass(frozen=True)
class SourceOptions:
    """Options every source accepts; a source ignores what does not apply to it.

    data_dir: where to look for the files (fashion-mnist, mnist, cifar10).
    image_size: (H, W) to resize to, or None to infer (imagefolder, csv).
    skip_bad: skip unreadable images and report them (True) or refuse the dataset (False).
    """

    data_dir: str | None = None
    image_size: tuple[int, int] | None = None
    skip_bad: bool = True
    download: bool = True


SourceFn = Callable[[str, SourceOptions], ImageSet]
_REGISTRY: dict[str, SourceFn] = {}


def register(name: str) -> Callable[[SourceFn], SourceFn]:
    def deco(fn: SourceFn) -> SourceFn:
        _REGISTRY[name] = fn
        return fn

    return deco


def source_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def load_source(spec: str, options: SourceOptions | None = None) -> ImageSet:
    """Load a source by spec: a plain name (``digits``) or ``kind:argument`` (``csv:labels.csv``)."""
    _load_builtin()
    kind, _, arg = spec.partition(":")
    if kind not in _REGISTRY:
        raise DataError(
            f"unknown dataset {spec!r}; choose one of {', '.join(source_names())} "
            "(imagefolder:PATH and csv:FILE take a path)"
        )
    return _REGISTRY[kind](arg, options or SourceOptions())


def _load_builtin() -> None:
    # Imported for their @register side effect; kept lazy so `import engine.data` stays light.
    from engine.data.sources import digits  # noqa: F401

    for mod in ("files", "torchvision_sets"):
        try:
            __import__(f"engine.data.sources.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"engine.data.sources.{mod}":
                raise
