"""Data sources: each turns a name (and options) into an ImageSet.

``load_source("digits")``, ``load_source("imagefolder:PATH")``, ``load_source("csv:FILE")``...
"""

from __future__ import annotations

from engine.data.manifest import DataError, ImageSet
from engine.data.sources import digits, files, torchvision_sets
from engine.data.sources.base import SOURCES, SourceOptions

__all__ = ["SourceOptions", "load_source", "source_names"]

# the built-in sources, registered by importing them
BUILTIN = (digits, files, torchvision_sets)


def source_names() -> list[str]:
    return sorted(SOURCES)


def load_source(spec: str, options: SourceOptions | None = None) -> ImageSet:
    """Load a source by spec: a plain name (``digits``) or ``kind:argument`` (``csv:labels.csv``)."""
    kind, _, arg = spec.partition(":")
    if kind not in SOURCES:
        raise DataError(
            f"unknown dataset {spec!r}; choose one of {', '.join(source_names())} "
            "(imagefolder:PATH and csv:FILE take a path)"
        )
    return SOURCES[kind](arg, options or SourceOptions())
