"""engine.threads: a run's replays and retrains give the same bits whatever thread count the
process runs with (without pinning, 1 and 2 threads differ in the last bits)."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.fresh import train_fresh
from engine.loading import load_run
from engine.retrain import counterfactual, resolve_changes
from engine.threads import pinned_threads
from tests.engine.conftest import same_weights


def test_pinned_threads_restores_the_count() -> None:
    before = torch.get_num_threads()
    with pinned_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_retrains_are_the_same_bits_at_any_process_thread_count(run32: Path) -> None:
    loaded = load_run(run32)
    ch = resolve_changes(loaded, loaded.bundle.train.ids[:7])
    got = []
    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            got.append((counterfactual(loaded, ch), train_fresh(loaded, seed=4, changes=ch)))
    finally:
        torch.set_num_threads(before)
    assert same_weights(got[0][0], got[1][0]) and same_weights(got[0][1], got[1][1])
    # and a retrain that changes nothing is the run itself, bit for bit
    nothing = resolve_changes(loaded, [])
    assert same_weights(counterfactual(loaded, nothing), loaded.final_theta)
