"""bench/peers.py: a missing peer is a line, not an error; the peers' scores are oriented as ours."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from scipy.stats import spearmanr

from engine.influence.api import compute_influence
from engine.loading import load_run

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _peers() -> ModuleType:
    sys.path.insert(0, str(BENCH))  # the bench scripts import their `common` module
    try:
        spec = importlib.util.spec_from_file_location("peers", BENCH / "peers.py")
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


def test_a_missing_peer_is_skipped_with_a_message(
    tiny_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    peers = _peers()
    for name, module in peers.MODULE.items():
        monkeypatch.setitem(sys.modules, module, None)  # `import trak` now raises ImportError
        scores, why = peers.peer_val_scores(name, load_run(tiny_copy), tmp_path)
        assert scores is None and why.startswith(f"skipped {name}: {module} is not installed")
        assert "pip install -e '.[peers]'" in why


@pytest.mark.slow
def test_captum_tracincp_is_oriented_like_our_tracin(tiny_copy: Path, tmp_path: Path) -> None:
    pytest.importorskip("captum")
    peers = _peers()
    loaded = load_run(tiny_copy)
    scores, why = peers.peer_val_scores("tracincp", loaded, tmp_path)
    assert scores is not None, why
    ours = compute_influence(tiny_copy, "tracin")["score"].to_numpy()
    # the same first-order sum over checkpoints vs every step: the orders agree, the signs too
    assert spearmanr(scores, ours).statistic > 0.5
    assert np.mean(np.sign(scores) == np.sign(ours)) > 0.7
