"""Fixtures for the data tests: small image folders written with Pillow into tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from image_fixtures import make_folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two classes, 'cat' (6 images) and 'dog' (4 images), 12x12 grayscale."""
    return make_folder(tmp_path / "pets", {"dog": 4, "cat": 6})
