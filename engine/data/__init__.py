"""Data: sources, splits, label noise, and the manifest that ties ids to images."""

from engine.data.manifest import SPLITS, DataBundle, DataError, ImageSet, Split
from engine.data.prepare import DataSpec, prepare_data
from engine.data.sources import SourceOptions, load_source, source_names

__all__ = [
    "SPLITS",
    "DataBundle",
    "DataError",
    "DataSpec",
    "ImageSet",
    "SourceOptions",
    "Split",
    "load_source",
    "prepare_data",
    "source_names",
]
