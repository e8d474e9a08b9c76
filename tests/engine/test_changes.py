"""Changes to the training set (engine.changes): ids to indices, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.changes import resolve_changes
from engine.config import ConfigError
from engine.loading import load_run
from engine.retrain import retrain


def test_invalid_changes_are_config_errors(run32: Path) -> None:
    loaded = load_run(run32)
    ids = loaded.bundle.train.ids
    with pytest.raises(ConfigError, match="nope-1"):
        resolve_changes(loaded, ["nope-1"])
    with pytest.raises(ConfigError, match=loaded.bundle.test.ids[0]):
        resolve_changes(loaded, [loaded.bundle.test.ids[0]])
    with pytest.raises(ConfigError, match="all 120"):
        resolve_changes(loaded, ids)
    with pytest.raises(ConfigError, match="both"):
        resolve_changes(loaded, [ids[0]], {ids[0]: 1})
    with pytest.raises(ConfigError, match="class index"):
        resolve_changes(loaded, relabel={ids[0]: 10})
    with pytest.raises(ConfigError, match="mode"):
        retrain(run32, drop=[ids[0]], mode="sideways", save=False)
